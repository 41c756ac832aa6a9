"""Training throughput (SAQL, E2E) and scoring latency per composition step, measured in one run.

Uses the DMs and logs of a `bench/dm.py` (or `convoplan dm pipeline --set transformers=true`) folder: a short
SAQL run and a short E2E run (warm-started from the supervised transformer) on the supervised DM's logs, then each
DM scoring the candidates of every step while talking with simulated users.

    .venv/bin/python bench/dm_speed.py --dms runs/bench-dm
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from pathlib import Path

from dm import Timed, percentile  # bench/dm.py

from convoplan.dm.checkpoint import load_network, load_policy
from convoplan.dm.configs import QConfig
from convoplan.dm.crossencoder import CrossEncoderPolicy, TransformerConfig
from convoplan.dm.train import prepare, train_q
from convoplan.dm.train_crossencoder import E2EConfig, train_e2e
from convoplan.embed import SentenceEmbedder
from convoplan.schema import read_jsonl
from convoplan.sim.arms import ANIMALS, load_world
from convoplan.sim.run import SimulationConfig, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dms", type=Path, default=Path("runs/bench-dm"))
    parser.add_argument("--conversations", type=int, default=100, help="logged conversations to train on")
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps of each timed training run")
    parser.add_argument("--users", type=int, default=8, help="simulated conversations per DM for the latency")
    parser.add_argument("--world", default=ANIMALS, help="import path of a function returning the World")
    parser.add_argument("--simulator", default=None, help="a user simulator class by import path (pkg.mod:Class)")
    parser.add_argument("--rater", default=None, help="a rater class by import path (pkg.mod:Class)")
    args = parser.parse_args()
    world = load_world(args.world, args.simulator, args.rater)

    logs = read_jsonl(args.dms / "logs" / "supervised_rnn.jsonl")[: args.conversations]
    network, space, _ = load_network(args.dms / "saql")
    data = prepare(logs, SentenceEmbedder(cache_dir=args.dms / "embeddings"), space)
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}; {data.table.steps} steps of "
        f"{len(logs)} conversations\n"
    )

    saql = train_q(data, QConfig(steps=args.steps), init=network)
    transformer = load_policy(args.dms / "supervised_transformer")
    assert isinstance(transformer, CrossEncoderPolicy)
    model_config: TransformerConfig = transformer.config
    e2e = train_e2e(data, replace(E2EConfig(steps=args.steps // 4), model=model_config), init=transformer.model)
    print("| DM | training throughput (transitions/s) |")
    print("|---|---|")
    print(f"| SAQL-RNN (batch of 16 conversations) | {saql.transitions_per_second:.0f} |")
    print(f"| E2E (batch of 4 steps, every candidate scored) | {e2e.examples_per_second:.1f} |")

    # One untimed pass first, so that every DM is timed with the same warm sentence-embedding cache (the KB's texts
    # recur across conversations, as they do in serving) rather than the first one paying for all the misses.
    list(simulate(world, load_policy(args.dms / "saql"), SimulationConfig(conversations=args.users, seed=99)))
    print("\n| DM | scoring p50 (ms/step) | scoring p95 (ms/step) | steps timed |")
    print("|---|---|---|---|")
    for name in ("supervised_rnn", "saql", "supervised_transformer"):
        timed = Timed(load_policy(args.dms / name))
        start = time.perf_counter()
        list(simulate(world, timed, SimulationConfig(conversations=args.users, seed=99)))
        p50, p95 = percentile(timed.seconds, 0.5) * 1000, percentile(timed.seconds, 0.95) * 1000
        print(f"| {name} | {p50:.1f} | {p95:.1f} | {len(timed.seconds)} ({time.perf_counter() - start:.0f} s) |")


if __name__ == "__main__":
    main()
