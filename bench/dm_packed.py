"""Training throughput of the supervised transformer DM: one (history, candidate) pair per sequence (the paper's
cross-encoder) against the packed input (one sequence per composition step, the history read once; docs/dm.md),
measured in one run, alternating which goes first, on the same logs, seed and batch size.

    .venv/bin/python bench/dm_packed.py --logs runs/p17/seeds/default/seed0/logs/heuristic.jsonl --steps 20
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from convoplan.dm.crossencoder import TransformerConfig
from convoplan.dm.train import prepare
from convoplan.dm.train_crossencoder import SupervisedTransformerConfig, train_supervised_transformer
from convoplan.embed import SentenceEmbedder
from convoplan.schema import read_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=Path, required=True, help="rated logs (e.g. a pipeline's logs/heuristic.jsonl)")
    parser.add_argument("--steps", type=int, default=20, help="optimiser steps per timed run")
    parser.add_argument("--batch-size", type=int, default=64, help="rated pairs per batch")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs per input, alternating")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--history", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    data = prepare(read_jsonl(args.logs), SentenceEmbedder(cache_dir=args.logs.parent.parent / "embeddings"))
    model = TransformerConfig(layers=args.layers, history=args.history, max_tokens=args.max_tokens)
    rates: dict[str, list[float]] = {"pairs": [], "packed": []}
    for round_ in range(args.rounds):
        for name in ("pairs", "packed") if round_ % 2 == 0 else ("packed", "pairs"):
            config = SupervisedTransformerConfig(
                model=replace(model, packed=name == "packed"), steps=args.steps, batch_size=args.batch_size
            )
            start = time.perf_counter()
            result = train_supervised_transformer(data, config)
            rates[name].append(result.examples / (time.perf_counter() - start))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load:.1f} at the start, Python "
        f"{platform.python_version()}, torch {torch.__version__}, {args.threads} thread(s); "
        f"{time.strftime('%Y-%m-%d')}; {data.table.steps} steps of {data.table.episodes} conversations; "
        f"model: {args.layers} layers, history {args.history}, {args.max_tokens} tokens; "
        f"{args.steps} steps of {args.batch_size} pairs per run\n"
    )
    print("| input | rated pairs/s (median of runs) | runs |")
    print("|---|---:|---|")
    for name, values in rates.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    print(f"\npacked / pairs: {statistics.median(rates['packed']) / statistics.median(rates['pairs']):.2f}x")


if __name__ == "__main__":
    main()
