"""Issue 4's measurements on the animals world, in one run on one machine:

1. the paper's pipeline: heuristic logs -> supervised RNN and supervised transformer DMs -> the supervised RNN DM's
   logs -> SAQL, CAQL, SAQL+CQL, CAQL+CQL (RNN state) and E2E (cross-encoder, SAQL + CQL);
2. training throughput of every DM (transitions per second; rated pairs per second for the supervised transformer);
3. DM scoring latency per composition step (p50, p95) while the DM talks with simulated users;
4. the simulated A/B test against the supervised transformer control (Table-3 layout, bootstrap 95% CIs).

    .venv/bin/python bench/dm.py --out runs/bench-dm --conversations 500 --users 300

A CPU budget for a shared 2-core machine (what BENCHMARKS.md reports):

    .venv/bin/python bench/dm.py --out runs/bench-dm --conversations 400 --users 200 \
        --set supervised_transformer.model.max_tokens=64 --set supervised_transformer.model.history=2 \
        --set supervised_transformer.steps=200 --set supervised_transformer.batch_size=16 \
        --set e2e.steps=150 --set q.steps=1000 --set cql_steps=300
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from collections.abc import Sequence
from pathlib import Path

from convoplan.compose.loop import DialogueManager, DialogueState
from convoplan.configs import apply_overrides
from convoplan.report import write_report
from convoplan.schema import Candidate
from convoplan.sim.arms import ANIMALS, load_arm, load_world
from convoplan.sim.experiment import ab_report, run_ab
from convoplan.sim.pipeline import PipelineConfig, run_pipeline
from convoplan.sim.run import SimulationConfig, simulate

ARMS = ("saql", "caql", "saql_cql", "caql_cql", "e2e", "supervised_rnn")


class Timed:
    """Wraps a DM and records how long each score() call takes."""

    def __init__(self, dm: DialogueManager) -> None:
        self.dm = dm
        self.seconds: list[float] = []

    def score(self, state: DialogueState, candidates: Sequence[Candidate]) -> Sequence[float]:
        start = time.perf_counter()
        scores = self.dm.score(state, candidates)
        self.seconds.append(time.perf_counter() - start)
        return scores


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-dm"))
    parser.add_argument("--conversations", type=int, default=500, help="simulated conversations per collection round")
    parser.add_argument("--users", type=int, default=300, help="simulated users per arm of the A/B test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-training", action="store_true", help="reuse the DMs already in --out")
    parser.add_argument("--resume", action="store_true", help="go on from the stage a cut-off run reached")
    parser.add_argument("--set", action="append", default=[], help="override a PipelineConfig field (field=value)")
    parser.add_argument("--world", default=ANIMALS, help="import path of a function returning the World")
    parser.add_argument("--simulator", default=None, help="a user simulator class by import path (pkg.mod:Class)")
    parser.add_argument("--rater", default=None, help="a rater class by import path (pkg.mod:Class)")
    args = parser.parse_args()
    world = load_world(args.world, args.simulator, args.rater)

    if not args.skip_training:
        start = time.perf_counter()
        config = apply_overrides(
            PipelineConfig(conversations=args.conversations, seed=args.seed, transformers=True), args.set
        )
        run_pipeline(
            world,
            args.out,
            config,
            report=lambda message: print(f"[{time.perf_counter() - start:6.0f}s] {message}", flush=True),
            resume=args.resume,
        )
        print(f"pipeline: {time.perf_counter() - start:.0f} s")

    names = ["supervised_transformer", *ARMS]
    print(f"\nmachine: {platform.machine()}, Python {platform.python_version()}, 2 cores\n")
    print("| DM | training throughput | unit | training time (s) | scoring p50 (ms/step) | scoring p95 (ms/step) |")
    print("|---|---|---|---|---|---|")
    # One untimed pass first: every RNN DM is then timed with the same warm sentence-embedding cache.
    warm_up = SimulationConfig(conversations=10, seed=args.seed + 99)
    list(simulate(world, load_arm(str(args.out / "saql"), world), warm_up))
    for name in names:
        training = json.loads((args.out / name / "config.json").read_text())["training"]
        rate = training.get("transitions_per_second") or training.get("examples_per_second")
        unit = "rated pairs/s" if name == "supervised_transformer" else "transitions/s"
        timed = Timed(load_arm(str(args.out / name), world))
        list(simulate(world, timed, SimulationConfig(conversations=10, seed=args.seed + 99)))
        p50, p95 = percentile(timed.seconds, 0.5) * 1000, percentile(timed.seconds, 0.95) * 1000
        print(f"| {name} | {rate:.0f} | {unit} | {training['seconds']:.0f} | {p50:.1f} | {p95:.1f} |")

    dms = {name: load_arm(str(args.out / name), world, random.Random(args.seed)) for name in names}
    start = time.perf_counter()
    logs = run_ab(world, dms, "supervised_transformer", args.users, args.seed)  # evaluation users (run_ab)
    report = ab_report(logs, "supervised_transformer", resamples=5000, seed=args.seed)
    write_report(report, args.out / "ab")
    print(f"\nA/B: {args.users} users per arm, {time.perf_counter() - start:.0f} s\n")
    print(report.markdown())


if __name__ == "__main__":
    main()
