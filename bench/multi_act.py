"""Messages that perform several acts: which one action to keep? (issue 14, item 8; `convoplan data acts`).

A corpus of one's own often annotates a system turn with several acts. PersuasionForGood labels each sentence of a
persuader's turn with one strategy: merged back into turns, its 300 annotated dialogues make a corpus whose turns
perform one to several acts, as MultiWOZ-style corpora have. On it, for each rule of `convoplan.corpora.acts`
(first act, priority, combined): the number of distinct actions, the share of the (distinct) acts the chosen action
keeps, and how well a next-best-action model predicts the next action (supervised GRU, the same budget for every
rule, top-1 and top-3 on the test split, beside the previous-action baseline).

    .venv/bin/python bench/multi_act.py --data runs/data/persuasion.jsonl
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from convoplan import read_jsonl
from convoplan.actions.evaluate import FrequencyBaseline, evaluate_next_actions
from convoplan.actions.nba import NBAConfig
from convoplan.actions.train_nba import train_nba
from convoplan.corpora.acts import map_acts
from convoplan.embed import SentenceEmbedder, default_cache_dir
from convoplan.progress import ProgressDisplay
from convoplan.schema import Conversation, Turn


def merged(conversation: Conversation) -> Conversation:
    """Consecutive agent messages as one turn: texts joined, their actions in meta["acts"] (action left empty)."""
    turns: list[Turn] = []
    for turn in conversation.turns:
        previous = turns[-1] if turns else None
        if turn.speaker == "agent" and previous is not None and previous.speaker == "agent":
            acts = [*previous.meta.get("acts", []), *([turn.action] if turn.action else [])]  # type: ignore[misc]
            turns[-1] = replace(previous, text=f"{previous.text} {turn.text}", meta={"acts": acts})
        elif turn.speaker == "agent":
            turns.append(Turn(speaker="agent", text=turn.text, meta={"acts": [turn.action] if turn.action else []}))
        else:
            turns.append(turn)
    fixed = [replace(t, meta={}) if t.speaker == "agent" and not t.meta.get("acts") else t for t in turns]
    return replace(conversation, turns=fixed, events=[])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("runs/data/persuasion.jsonl"), help="canonical conversations")
    parser.add_argument("--train-cap", type=int, default=0, help="training conversations, a seeded sample (0: all)")
    parser.add_argument("--epochs", type=int, default=12, help="NBA training epochs (the same for every rule)")
    parser.add_argument("--embedding-cache", type=Path, default=default_cache_dir())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    labelled = [c for c in read_jsonl(args.data) if any(t.speaker == "agent" and t.action for t in c.turns)]
    corpus = [merged(c) for c in labelled]
    split = {name: [c for c in corpus if c.meta.get("split") == name] for name in ("train", "validation", "test")}
    if args.train_cap and args.train_cap < len(split["train"]):
        keep = np.random.default_rng(args.seed).permutation(len(split["train"]))[: args.train_cap]
        split["train"] = [split["train"][int(i)] for i in sorted(keep)]
    turns = [t for c in split["train"] for t in c.turns if t.speaker == "agent" and t.meta.get("acts")]
    multi = sum(len(set(t.meta["acts"])) > 1 for t in turns)  # type: ignore[arg-type]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, 1 torch thread; {args.data}: train "
        f"{len(split['train'])} / validation {len(split['validation'])} / test {len(split['test'])} conversations; "
        f"{len(turns):,} agent turns with acts in train, {multi / len(turns):.1%} with more than one distinct act"
    )
    embedder = SentenceEmbedder(cache_dir=args.embedding_cache)
    rows = []
    for rule in ("first", "priority", "combined"):
        mapped = {name: map_acts(part, rule)[0] for name, part in split.items()}  # type: ignore[arg-type]
        chosen = [t for c in mapped["train"] for t in c.turns if t.speaker == "agent" and t.meta.get("acts")]
        kept = sum(len(t.action.split("+")) if rule == "combined" else 1 for t in chosen if t.action)
        acts = sum(len(set(t.meta["acts"])) for t in chosen)  # type: ignore[arg-type]
        actions = {t.action for t in chosen if t.action}
        with ProgressDisplay() as progress:
            embedder.progress = progress
            trained = train_nba(mapped["train"], embedder, NBAConfig(epochs=args.epochs), mapped["validation"])
        model = evaluate_next_actions(trained.model, mapped["test"])
        baseline = evaluate_next_actions(FrequencyBaseline(order=1).fit(mapped["train"]), mapped["test"])
        rows.append(
            f"| {rule} | {len(actions)} | {kept / acts:.1%} | {model.top1:.3f} | {model.top3:.3f} "
            f"| {baseline.top1:.3f} | {model.unseen / model.targets:.1%} | {trained.seconds:.0f} |"
        )
    print(
        "\n| rule | distinct actions (train) | acts kept | NBA top-1 | NBA top-3 | previous-action top-1 "
        "| test actions unseen in train | training s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"\nwhole run: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
