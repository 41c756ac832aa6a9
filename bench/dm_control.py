"""The supervised transformer DM trained on rated logs until its held-out rating error stops falling (or its step
budget ends), with the error curve printed: how far a longer schedule takes the control of issue 17.

    .venv/bin/python bench/dm_control.py --logs runs/p17/seeds/default/seed0/logs/heuristic.jsonl \\
        --out runs/p17/control --set model.packed=true --set validation.share=0.1 --set steps=2400 \\
        --set batch_size=64 --set lr=1e-4
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from convoplan.configs import apply_overrides
from convoplan.dm.train import prepare
from convoplan.dm.train_crossencoder import SupervisedTransformerConfig, train_supervised_transformer
from convoplan.embed import SentenceEmbedder
from convoplan.progress import ProgressDisplay
from convoplan.schema import read_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=Path, required=True, help="rated logs (e.g. a pipeline's logs/heuristic.jsonl)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the trained DM")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE of SupervisedTransformerConfig")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    config = apply_overrides(SupervisedTransformerConfig(), args.set)
    if config.validation.share <= 0:
        raise SystemExit("--set validation.share=...: the bench measures the held-out error")
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    data = prepare(read_jsonl(args.logs), SentenceEmbedder(cache_dir=args.logs.parent.parent / "embeddings"))
    with ProgressDisplay() as progress:  # a line every 5 s in a log file: loss and the last held-out RMSE
        result = train_supervised_transformer(data, config, progress)
    record = result.validation
    result.save(args.out, "supervised_transformer", config, data.table.space, logs=str(args.logs))
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load:.1f} at the start, Python "
        f"{platform.python_version()}, torch {torch.__version__}, {args.threads} thread(s); {time.strftime('%Y-%m-%d')}"
    )
    print(
        f"{len(result.losses)} of {config.steps} steps in {result.seconds:.0f} s ({result.examples_per_second:.1f} "
        f"rated pairs/s); held-out conversations: {record['held_out_conversations']}\n"
    )
    print("| step | held-out RMSE (sample) |\n|---:|---:|")
    print("\n".join(f"| {step} | {error:.3f} |" for step, error in record["rmse"]))
    print(
        f"\nkept: step {record['best_step']}; RMSE on every held-out step {record['final_rmse']:.3f}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()
