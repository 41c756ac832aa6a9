"""The latency cost of grounding (issue 28): a grounded model's suggestions with and without its notes.

A grounded model (docs/lm.md, "Grounding") reads longer prompts (passages, exemplars, events) and retrieves before it
writes: the knowledge search and the exemplar search embed the recent turns, and the prompts of k actions share
less (each action's exemplars differ), so less of them is read once. This bench writes k actions x n suggestions
after real histories with one model, two ways, in alternating order on the same histories:

- **plain**: the prompt without any note (`GroundingConfig()`): the history and the action tag, as before;
- **grounded**: the prompt the model was trained on (its folder's `GroundingConfig`).

Each call is one `Suggester.suggestions` (build the prompts, write, check the claims against the knowledge file),
as `POST /v1/suggest` makes it; the time to the first streamed text (`on_text`) and the time spent building the
prompts (retrieval included) are timed too. Histories are the test split's agent turns (a seeded sample, each
used once: no embedding is read from a cache the previous call filled); the action is the message's true one.

    .venv/bin/python bench/grounded_latency.py --data runs/g28/animals.jsonl --model runs/g28/animals-directed \\
        --knowledge runs/g28/animals-kb.jsonl --rounds 20 --out runs/g28/latency-animals
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import transformers

from convoplan.atomic import atomic_write_bytes
from convoplan.embed import SentenceEmbedder
from convoplan.lm.generate import PrefixCache
from convoplan.lm.grounding import Grounder, GroundingConfig, grounding_config
from convoplan.lm.suggest import Plan, SuggestConfig, Suggester
from convoplan.retrieval.exemplars import EXEMPLARS, load_exemplars
from convoplan.retrieval.knowledge import KnowledgeIndex
from convoplan.schema import Conversation, read_jsonl


def histories(conversations: list[Conversation], count: int, seed: int) -> list[tuple[Conversation, str]]:
    """(history, true action) before a seeded sample of the test split's agent messages with an action."""
    found = [
        (
            Conversation(
                id=c.id,
                domain=c.domain,
                turns=c.turns[:i],
                events=[e for e in c.events if e.position <= i],
                meta=c.meta,
            ),
            turn.action,
        )
        for c in conversations
        if c.meta.get("split") == "test"
        for i, turn in enumerate(c.turns)
        if turn.speaker == "agent" and turn.action is not None and i > 0
    ]
    return random.Random(seed).sample(found, min(count, len(found)))


def timed(suggester: Suggester, history: Conversation, plans: list[Plan], n: int) -> dict[str, float]:
    """Seconds of one suggestions call, as the API makes it: in all, to the first text, building the prompts."""
    marks: dict[str, float] = {}
    build = suggester.prompts

    def prompts(*args: Any) -> Any:  # times the building the call does itself (retrieval included)
        begun = time.perf_counter()
        built = build(*args)
        marks["prompts"] = time.perf_counter() - begun
        return built

    def on_text(row: int, text: str) -> None:
        marks.setdefault("first_text", time.perf_counter() - started)

    suggester.prefix = PrefixCache()  # no reuse from the previous call: another conversation
    suggester.prompts = prompts  # type: ignore[method-assign,assignment]
    started = time.perf_counter()
    try:
        suggester.suggestions(history, plans, n, on_text)
    finally:
        del suggester.prompts  # the class's method again
    total = time.perf_counter() - started
    return {"total": total, "first_text": marks.get("first_text", total), "prompts": marks["prompts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="canonical conversations with a test split")
    parser.add_argument("--model", required=True, type=Path, help="a grounded model folder")
    parser.add_argument("--knowledge", type=Path, default=None, help="the knowledge file it reads (and checks)")
    parser.add_argument("--actions", type=int, default=3, help="actions per call (the true one repeated)")
    parser.add_argument("--suggestions", type=int, default=3, help="per action")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]

    from convoplan.lm.model import load_model

    lm = load_model(args.model)
    grounding = grounding_config(lm.info)
    sentences = SentenceEmbedder()  # in memory: each history's texts are embedded when asked, as in a server
    knowledge = None if args.knowledge is None else KnowledgeIndex.from_file(args.knowledge, embedder=sentences)
    exemplars = load_exemplars(args.model / EXEMPLARS) if grounding.exemplars else None
    suggester = Suggester(
        lm, config=SuggestConfig(n=args.suggestions), exemplars=exemplars, knowledge=knowledge, embedder=sentences
    )
    grounders = {
        "plain": Grounder(lm.codec, GroundingConfig()),
        "grounded": Grounder(lm.codec, grounding, knowledge=knowledge, exemplars=exemplars, embedder=sentences),
    }
    sample = histories(read_jsonl(args.data), args.rounds + 1, args.seed)
    times: dict[str, list[dict[str, float]]] = {name: [] for name in grounders}
    for round_, (history, action) in enumerate(sample):
        plans = [Plan(action, action, None, "given", "given")] * args.actions
        order = list(grounders) if round_ % 2 == 0 else list(reversed(grounders))
        for name in order:
            suggester.grounder = grounders[name]
            result = timed(suggester, history, plans, args.suggestions)
            if round_ > 0:  # the first round warms up
                times[name].append(result)
        shown = ", ".join(f"{n} {times[n][-1]['total']:.2f} s" for n in order if times[n]) if round_ else "warm-up"
        print(f"round {round_}: {shown}", flush=True)

    def p50(name: str, key: str) -> float:
        return statistics.median(t[key] for t in times[name])

    rows = [
        "| prompts | suggest p50 s | first text p50 s | building the prompts p50 s |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {p50(name, 'total'):.2f} | {p50(name, 'first_text'):.2f} | {p50(name, 'prompts'):.3f} |"
            for name in grounders
        ),
    ]
    machine = (
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, Python "
        f"{platform.python_version()}, torch {torch.__version__}, {args.threads} thread(s); {args.rounds} rounds, "
        f"{args.actions} actions x {args.suggestions} suggestions; grounding {grounding}"
    )
    print("\n".join(rows))
    print(machine)
    args.out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"times": times, "machine": machine}
    atomic_write_bytes(args.out / "latency.json", json.dumps(record, indent=1).encode())
    atomic_write_bytes(args.out / "latency.md", ("\n".join(rows) + "\n\n" + machine + "\n").encode())


if __name__ == "__main__":
    main()
