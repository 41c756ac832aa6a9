"""Learning from the agents' choices, simulated: rounds of (suggestions shown to simulated agents -> their choices
-> preference pairs -> DPO -> the new model), then every round's model measured on conversations and agents it
never learnt from (issue 30).

Each round replays its own slice of the train split with agents of the population (seeded by the round), builds
the pairs (`convoplan.lm.preferences`), keeps at most `--max-pairs` of them (a seeded sample) and tunes the last
model on them (`convoplan.lm.dpo`). The evaluation replays the test split with agents seeded apart from every
round's, once per model, and compares each model with the first on the same conversations and agents: the share
of agent messages sent as a suggestion was (paired bootstrap over conversations), the edit distance, and the share
of checked suggestions the grounding check supports.

    OMP_NUM_THREADS=1 .venv/bin/python bench/assist_loop.py --data runs/g28/animals.jsonl \\
        --model runs/g28/animals-directed-k10c --knowledge runs/g28/animals-kb3.jsonl --agents terse \\
        --rounds 2 --train-conversations 6 --eval-conversations 8 --max-pairs 60 --out runs/g30/terse
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import cast

import torch

from convoplan.atomic import atomic_write
from convoplan.configs import apply_overrides
from convoplan.imports import import_object
from convoplan.lm.dpo import DPOConfig, train_dpo
from convoplan.lm.grounding import grounding_config
from convoplan.lm.model import read_info
from convoplan.lm.preferences import build_pairs, write_pairs
from convoplan.lm.suggest import Suggester
from convoplan.progress import ProgressDisplay
from convoplan.retrieval.knowledge import KnowledgeIndex
from convoplan.schema import Conversation, read_jsonl, write_jsonl
from convoplan.sim.assist import AssistConfig, LogAgent, assist_summary, compare_assist, simulate_assist
from convoplan.sim.protocols import AgentFactory
from convoplan.worlds.animals.agents import POPULATIONS, agent_population


def agents(spec: str) -> AgentFactory:
    if spec in POPULATIONS:
        return agent_population(spec)
    if spec == "log":
        return LogAgent
    return cast(AgentFactory, import_object(spec))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="canonical conversations with train and test splits")
    parser.add_argument("--model", type=Path, required=True, help="the LM folder to start from")
    parser.add_argument(
        "--knowledge", type=Path, help="the knowledge file the model reads and suggestions are checked against"
    )
    parser.add_argument(
        "--agents",
        default="thorough",
        help="the simulated agents: thorough or terse (the animals world), log (any corpus: agents who mean the "
        "logged message), or a class by import path 'pkg.module:Class', called as Class(rng)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--train-conversations", type=int, default=6, help="train conversations replayed per round")
    parser.add_argument("--eval-conversations", type=int, default=8, help="test conversations replayed per model")
    parser.add_argument("--max-pairs", type=int, default=60, help="pairs kept per round (a seeded sample)")
    parser.add_argument("--n", type=int, default=3, help="suggestions shown per agent message")
    parser.add_argument("--max-messages", type=int, default=12, help="agent messages assisted per conversation")
    parser.add_argument("--min-labelled", type=int, default=1, help="replay conversations with this many actions")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a DPOConfig field: lr=1e-4")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = apply_overrides(DPOConfig(), args.overrides)
    new_agent = agents(args.agents)
    conversations = read_jsonl(args.data)
    # Conversations with labelled agent messages (a corpus labelled in part, as PersuasionForGood, has many without).
    labelled = [c for c in conversations if sum(t.action is not None for t in c.agent_turns()) >= args.min_labelled]
    train = [c for c in labelled if c.meta.get("split") == "train"]
    test = [c for c in labelled if c.meta.get("split") == "test"][: args.eval_conversations]
    if len(train) < args.rounds * args.train_conversations or not test:
        sys.exit(f"{args.data}: too few train or test conversations for these rounds")
    knowledge = None
    if args.knowledge is not None:
        knowledge = KnowledgeIndex.from_file(args.knowledge, grounding_config(read_info(args.model)).method)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores (load {os.getloadavg()[0]:.2f} at the start), "
        f"torch {torch.__version__}, {args.threads} thread(s)"
    )
    print(f"machine: {machine}", flush=True)
    models = [args.model]
    rounds = []
    with ProgressDisplay() as progress:
        for r in range(1, args.rounds + 1):
            started = time.perf_counter()
            chunk = train[(r - 1) * args.train_conversations : r * args.train_conversations]
            suggester = Suggester.load(models[-1], knowledge=knowledge)
            seen = simulate_assist(
                chunk, suggester, new_agent, AssistConfig(args.n, seed=r, max_messages=args.max_messages), progress
            )
            write_jsonl(args.out / f"round-{r}-choices.jsonl", seen)
            pairs, counts = build_pairs(seen)
            kept = random.Random(r).sample(pairs, min(len(pairs), args.max_pairs))
            write_pairs(args.out / f"round-{r}-pairs.jsonl", kept)
            result = train_dpo(
                models[-1], kept, args.out / f"round-{r}", config, knowledge=knowledge, progress=progress
            )
            models.append(result.folder)
            summary = assist_summary(seen)
            rounds.append(
                {
                    "round": r,
                    "seen": dataclasses.asdict(summary),
                    "pairs": {"built": len(pairs), "kept": len(kept), **{k: dict(v) for k, v in vars(counts).items()}},
                    "losses": [result.losses[0], result.losses[-1]],
                    "accuracies": [result.accuracies[0], result.accuracies[-1]],
                    "seconds": time.perf_counter() - started,
                }
            )
            print(json.dumps(rounds[-1]), flush=True)
        evaluated: list[list[Conversation]] = []
        evaluation = AssistConfig(args.n, seed=1000, max_messages=args.max_messages)  # agents no round met
        for k, model in enumerate(models):
            suggester = Suggester.load(model, knowledge=knowledge)
            run = simulate_assist(test, suggester, new_agent, evaluation, progress)
            write_jsonl(args.out / f"eval-model-{k}.jsonl", run)
            evaluated.append(run)
    summaries = [assist_summary(run) for run in evaluated]
    comparisons = [compare_assist(evaluated[0], run) for run in evaluated[1:]]
    report = {
        "command": " ".join(sys.argv),
        "machine": machine,
        "config": dataclasses.asdict(config),
        "rounds": rounds,
        "evaluation": [{"model": str(m), **dataclasses.asdict(s)} for m, s in zip(models, summaries, strict=True)],
        "comparisons": [dataclasses.asdict(c) for c in comparisons],
    }
    with atomic_write(args.out / "report.json") as stream:
        stream.write(json.dumps(report, indent=1) + "\n")
    head = (
        "| model | messages | taken unedited | edited | own | mean edit distance | supported | vs model 0, paired 95% |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---|"]
    for k, summary in enumerate(summaries):
        supported = "n/a" if math.isnan(summary.supported) else f"{summary.supported:.1%}"  # (nothing checked)
        versus = ""
        if k:
            c = comparisons[k - 1]
            versus = f"{c.difference:+.1%} [{c.low:+.1%}, {c.high:+.1%}] over {c.conversations} conversations"
        lines.append(
            f"| {k} | {summary.messages} | {summary.taken:.1%} | {summary.edited:.1%} | {summary.own:.1%} | "
            f"{summary.mean_edit_distance:.1f} | {supported} | {versus} |"
        )
    text = "\n".join([f"command: `{report['command']}`", f"machine: {machine}", "", *lines]) + "\n"
    with atomic_write(args.out / "report.md") as stream:
        stream.write(text)
    print(text)


if __name__ == "__main__":
    main()
