"""Off-policy evaluation of dialogue managers against the on-policy truth (the RL paper, sec. 5;
docs/dm.md, "Evaluation"): how close `convoplan ope`'s estimates and intervals come.

For a set of target policies (the DMs of a `convoplan dm pipeline` run, the world's hand-written DMs replayed on the
logs, the uniform random DM, softmax DMs over the supervised DM's scores at several temperatures, a negative
temperature among them), this computes

- the truth: each policy talks with simulated users and raters (no exploration), and its value is
  (1 - gamma) * the mean over conversations of sum_t gamma^t r_t, r_t the mean rating of the candidate chosen at
  composition step t (all policies meet the same users: same seeds);
- `convoplan.ope.evaluate_policies`' estimates from the supervised DM's epsilon-greedy logs (the data the RL DMs
  were trained on, or with --fresh-logs fresh logs of the same DM, held out from their training): FQE, DualDICE
  (absorbing end) and per-decision weighted importance sampling with the logged propensities, each with its normal
  bootstrap interval over conversations (--refits refits of FQE and DualDICE, --resamples resamples of WIS).
  DualDICE and FQE learn small MLPs on the supervised RNN DM's state encoder, frozen (principal components, plus
  the step's position);

then prints a markdown table (truth, estimates with intervals) and, per estimator, the Spearman rank correlation
with the truth, the mean absolute relative error, how many intervals cover the truth and their mean width. Truths
and estimates are cached under --out (one JSON per policy; truths grow with --truth-conversations), so that a
rerun only computes what is missing.

    .venv/bin/convoplan dm pipeline --out /tmp/ope_pipe --conversations 400
    .venv/bin/python bench/ope.py --run /tmp/ope_pipe --out /tmp/ope_bench --fresh-logs 400 --truth-conversations 500
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from convoplan import read_jsonl
from convoplan.compose.loop import Bot, ComposerConfig, DialogueManager, DialogueState
from convoplan.dm.baselines import RandomDM
from convoplan.dm.checkpoint import RNNPolicy, load_network
from convoplan.dm.data import FeatureSpace, build_steps
from convoplan.dm.networks import QModel
from convoplan.dm.train import Dataset, prepare
from convoplan.embed import SentenceEmbedder
from convoplan.ope import (
    DualDiceConfig,
    FQEConfig,
    GreedyPolicy,
    OPEConfig,
    SoftmaxPolicy,
    TargetPolicy,
    UniformPolicy,
    dm_probabilities,
    encoded_steps,
    evaluate_policies,
    policy_probabilities,
)
from convoplan.ope.evaluate import NAMES
from convoplan.schema import Candidate, Conversation, write_jsonl
from convoplan.sim.arms import ANIMALS, load_world
from convoplan.sim.run import SimulationConfig, World, simulate, simulate_one

RL_ARMS = ("saql", "caql", "saql_cql", "caql_cql")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class SampledDM:
    """A stochastic DM for the composition loop: draws the candidate from probabilities(scores of a trained DM).

    The drawn candidate gets the trained DM's best score and every other one a lower score, so the loop's argmax
    picks it and its end-of-conversation rule (best first-step score below the threshold) stays the trained DM's.
    """

    def __init__(
        self, scorer: RNNPolicy, probabilities: Callable[[np.ndarray], np.ndarray], rng: random.Random
    ) -> None:
        self.scorer, self.probabilities, self.rng = scorer, probabilities, rng

    def score(self, state: DialogueState, candidates: Sequence[Candidate]) -> list[float]:
        q = np.asarray(self.scorer.score(state, candidates), dtype=np.float64)
        if len(q) == 0:
            return []
        p = self.probabilities(q)
        pick = self.rng.choices(range(len(q)), weights=list(p))[0]
        scores = q - (q.max() - q.min() + 1.0)
        scores[pick] = q.max()
        return [float(v) for v in scores]


def sampled_softmax(network: QModel, space: FeatureSpace, embedder: SentenceEmbedder, temperature: float) -> SampledDM:
    """The DM that draws from softmax(network's scores / temperature), with its own random stream."""
    rng = random.Random(f"softmax:{temperature}")
    return SampledDM(RNNPolicy(network, space, embedder), softmax_of(temperature), rng)


def softmax_of(temperature: float) -> Callable[[np.ndarray], np.ndarray]:
    def probabilities(q: np.ndarray) -> np.ndarray:
        z = q / temperature
        e = np.exp(z - z.max())
        return np.asarray(e / e.sum())

    return probabilities


Probabilities = Callable[[Sequence[Conversation], Dataset], torch.Tensor]
"""The target's pi(a | s) at every logged step of (the logs, their prepared step table)."""


@dataclass
class Target:
    name: str
    description: str
    probabilities: Probabilities
    dm: Callable[[], DialogueManager]
    """A fresh DM for the simulation (its own random stream)."""


def batched(policy: TargetPolicy) -> Probabilities:
    return lambda logs, data: policy_probabilities(data.table, data.embeddings, policy)


def replayed(dm: Callable[[], DialogueManager], world: World) -> Probabilities:
    def probabilities(logs: Sequence[Conversation], data: Dataset) -> torch.Tensor:
        return dm_probabilities(logs, lambda: Bot([], dm(), world.fuser, world.lexicon, world.entity))

    return probabilities


def targets(
    networks: dict[str, QModel],
    space: FeatureSpace,
    embedder: SentenceEmbedder,
    temperatures: Sequence[float],
    world: World,
) -> list[Target]:
    supervised = networks["supervised_rnn"]
    found: list[Target] = []
    for name, network in networks.items():
        found.append(
            Target(
                name,
                f"{name}: argmax of its scores",
                batched(GreedyPolicy(network)),
                partial(RNNPolicy, network, space, embedder),
            )
        )
    for name, make in world.dms.items():
        if name != "random":  # the uniform target below is the random DM's policy, batched
            dm = partial(make, random.Random(0))
            found.append(Target(name, f"the world's {name} DM, replayed", replayed(dm, world), dm))
    found.append(Target("uniform", "uniform over the offered candidates", batched(UniformPolicy()), RandomDM))
    for temperature in temperatures:
        found.append(
            Target(
                f"softmax_T{temperature:g}",
                f"softmax(supervised scores / {temperature:g})",
                batched(SoftmaxPolicy(supervised, temperature)),
                partial(sampled_softmax, supervised, space, embedder, temperature),
            )
        )
    return found


def cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    if path.is_file():
        return dict(json.loads(path.read_text()))
    result = compute()
    write_json(path, result)
    return result


def truth(target: Target, space: FeatureSpace, args: argparse.Namespace) -> dict[str, Any]:
    """Simulate the target DM with no exploration; the rewards of every composition step of every conversation.

    Cached in OUT/truth/<policy>_seed<seed>.json and extended when more conversations are asked for: conversation i
    always meets the same simulated user and raters (they are seeded by (seed, i)), only the DM's own random stream
    (softmax, uniform) continues differently, which leaves each conversation a draw from the same distribution.
    """
    path = Path(args.out) / "truth" / f"{target.name}_seed{args.truth_seed}.json"
    record: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {"rewards": [], "seconds": 0.0}
    have = len(record["rewards"])
    if have < args.truth_conversations:
        start = time.perf_counter()
        config = SimulationConfig(
            conversations=args.truth_conversations,
            raters=args.raters,
            seed=args.truth_seed,
            max_turns=args.max_turns,
            composer=ComposerConfig(epsilon=0.0),
        )
        world, dm = load_world(args.world, args.simulator, args.rater), target.dm()
        conversations = []
        for index in range(have, config.conversations):
            conversations.append(simulate_one(world, dm, index, config, target.name))
            if (index + 1) % 50 == 0:
                say(f"  truth {target.name}: {index + 1}/{config.conversations} conversations")
        table = build_steps(conversations, space)
        rewards = table.step_rewards()
        record["rewards"] += [rewards[a:b].tolist() for a, b in itertools.pairwise(table.episode_steps)]
        record["seconds"] += time.perf_counter() - start
        record["config"] = asdict(config)
        write_json(path, record)
    return {**record, "rewards": record["rewards"][: args.truth_conversations]}


def write_json(path: Path, value: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1))
    tmp.replace(path)


def truth_value(record: dict[str, Any], gamma: float) -> tuple[float, float, float]:
    """(mean, standard error) of (1 - gamma) sum_t gamma^t r_t over the simulated conversations, and E[gamma^T]."""
    values = np.array([(1 - gamma) * sum(gamma**t * r for t, r in enumerate(rs)) for rs in record["rewards"]])
    end = float(np.mean([gamma ** len(rs) for rs in record["rewards"]]))
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values))), end


def logged_conversations(args: argparse.Namespace, space: FeatureSpace, embedder: SentenceEmbedder) -> Path:
    """The logs to evaluate from: the run's supervised-DM logs, or fresh ones of the same DM (held out)."""
    if not args.fresh_logs:
        return Path(args.logs or Path(args.run) / "logs" / "supervised_rnn.jsonl")
    path = Path(args.out) / f"logs_supervised_rnn_eps{args.epsilon:g}_seed{args.logs_seed}_{args.fresh_logs}.jsonl"
    if not path.is_file():
        network, _, _ = load_network(Path(args.run) / "supervised_rnn")
        config = SimulationConfig(
            conversations=args.fresh_logs,
            raters=args.raters,
            seed=args.logs_seed,
            max_turns=args.max_turns,
            composer=ComposerConfig(epsilon=args.epsilon),
        )
        say(f"simulating {args.fresh_logs} held-out logs of the supervised DM (epsilon {args.epsilon})")
        dm = RNNPolicy(network, space, embedder)
        world = load_world(args.world, args.simulator, args.rater)
        write_jsonl(path, list(simulate(world, dm, config, "supervised_rnn")))
    return path


def relative(estimate: float, true: float) -> float:
    return (estimate - true) / abs(true) if true else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a `convoplan dm pipeline` output folder")
    parser.add_argument("--out", default="runs/bench-ope", help="folder for cached truths, estimates and logs")
    parser.add_argument("--logs", help="logs to evaluate from (default: RUN/logs/supervised_rnn.jsonl)")
    parser.add_argument("--fresh-logs", type=int, default=0, help="simulate this many held-out logs instead")
    parser.add_argument("--logs-seed", type=int, default=1000, help="seed of the held-out logs")
    parser.add_argument("--epsilon", type=float, default=0.2, help="exploration of the held-out logs (pipeline's)")
    parser.add_argument("--extra", action="append", default=[], help="NAME=FOLDER: another trained DM to evaluate")
    parser.add_argument("--temperatures", type=float, nargs="*", default=[0.5, 2.0, -1.0])
    parser.add_argument("--policies", nargs="*", help="evaluate only these target policies")
    parser.add_argument("--gamma", type=float, default=0.9)
    parser.add_argument("--truth-conversations", type=int, default=200)
    parser.add_argument("--truth-seed", type=int, default=2024)
    parser.add_argument("--raters", type=int, default=3)
    parser.add_argument("--max-turns", type=int, default=30)
    parser.add_argument("--dice-steps", type=int, default=DualDiceConfig.steps)
    parser.add_argument("--fqe-steps", type=int, default=FQEConfig.steps)
    parser.add_argument("--state-components", type=int, default=16, help="principal components of states (0: all)")
    parser.add_argument("--action-components", type=int, default=16, help="... of candidates (0: all)")
    parser.add_argument("--refits", type=int, default=OPEConfig.refits, help="bootstrap refits of FQE and DualDICE")
    parser.add_argument("--resamples", type=int, default=OPEConfig.resamples, help="bootstrap resamples of WIS")
    parser.add_argument("--seed", type=int, default=0, help="seed of the estimators")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--truth-only", action="store_true", help="only simulate (and cache) the truths")
    parser.add_argument("--world", default=ANIMALS, help="import path of a function returning the World")
    parser.add_argument("--simulator", default=None, help="a user simulator class by import path (pkg.mod:Class)")
    parser.add_argument("--rater", default=None, help="a rater class by import path (pkg.mod:Class)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out, run = Path(args.out), Path(args.run)

    supervised, space, _ = load_network(run / "supervised_rnn")
    networks = {"supervised_rnn": supervised}
    for name in RL_ARMS:
        if (run / name / "config.json").is_file():
            networks[name] = load_network(run / name)[0]
    for spec in args.extra:
        name, _, folder = spec.partition("=")
        networks[name] = load_network(folder)[0]
    embedder = SentenceEmbedder(cache_dir=run / "embeddings")
    chosen = [
        t
        for t in targets(networks, space, embedder, args.temperatures, load_world(args.world))
        if not args.policies or t.name in args.policies
    ]

    if args.truth_only:
        for target in chosen:
            say(f"{target.name}: {target.description}")
            true, error, _ = truth_value(truth(target, space, args), args.gamma)
            say(f"  truth {true:.3f} ± {error:.3f}")
        return

    # --- logged data -------------------------------------------------------------------------------------------
    logs_path = logged_conversations(args, space, embedder)
    logs: list[Conversation] = list(read_jsonl(logs_path))
    data = prepare(logs, embedder, space)
    config = OPEConfig(
        gamma=args.gamma,
        state_components=args.state_components,
        action_components=args.action_components,
        fqe=FQEConfig(steps=args.fqe_steps),
        dualdice=DualDiceConfig(terminal="absorb", steps=args.dice_steps),
        refits=args.refits,
        resamples=args.resamples,
        seed=args.seed,
    )
    steps = encoded_steps(data.table, data.embeddings, supervised.state, config)
    say(f"{len(logs)} logged conversations, {steps.steps} steps, from {logs_path}")
    tag = (
        f"{logs_path.stem}_g{args.gamma:g}_s{args.seed}_f{args.state_components}x{args.action_components}"
        f"_{args.fqe_steps}_{args.dice_steps}_r{args.refits}x{args.resamples}"
    )

    rows = []
    for target in chosen:
        say(f"{target.name}: {target.description}")
        true, error, _ = truth_value(truth(target, space, args), args.gamma)

        def estimate(target: Target = target) -> dict[str, Any]:
            start = time.perf_counter()
            probabilities = {target.name: target.probabilities(logs, data)}
            row = evaluate_policies(steps, probabilities, config, str(logs_path)).to_dict()["ranking"][0]
            return {**row, "seconds": time.perf_counter() - start}

        record = cached(out / "estimates" / f"{target.name}_{tag}.json", estimate)
        rows.append(Row(target.name, record["agreement"], true, error, record["estimates"]))
        found = " | ".join(f"{NAMES[e]} {interval(x)}" for e, x in rows[-1].estimates.items())
        say(f"  truth {true:.3f} ± {error:.3f} | {found}")
    report(rows, args, logs_path, len(logs), steps.steps)


@dataclass
class Row:
    policy: str
    agreement: float
    """Mean target probability of the logged choice."""
    truth: float
    error: float
    """Standard error of the truth (its simulation's sampling noise)."""
    estimates: dict[str, dict[str, Any]]
    """By estimator: value, low, high (the bootstrap interval), replicates."""


def interval(x: dict[str, Any]) -> str:
    return f"{x['value']:.3f} [{x['low']:.3f}, {x['high']:.3f}]" if x["low"] is not None else f"{x['value']:.3f}"


def report(rows: list[Row], args: argparse.Namespace, logs_path: Path, conversations: int, steps: int) -> None:
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, Python "
        f"{platform.python_version()}, torch {torch.__version__} ({args.threads} thread(s)); "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print(
        f"gamma {args.gamma:g}; logs: {logs_path} ({conversations} conversations, {steps} steps); truth: "
        f"{args.truth_conversations} simulated conversations per policy (seed {args.truth_seed}, same users for all); "
        f"95% normal bootstrap intervals over conversations ({args.refits} refits of FQE and DualDICE, "
        f"{args.resamples} resamples of WIS)"
    )
    print()
    estimators = list(rows[0].estimates)
    print("| policy | pi(logged choice) | truth (± s.e.) | " + " | ".join(NAMES[e] for e in estimators) + " |")
    print("|---|---:|---:|" + "---:|" * len(estimators))
    for r in rows:
        cells = " | ".join(interval(r.estimates[e]) for e in estimators)
        print(f"| {r.policy} | {r.agreement:.2f} | {r.truth:.3f} ± {r.error:.3f} | {cells} |")
    print()
    print("| estimator | Spearman rho (p) | mean abs. rel. error | intervals covering the truth | mean width |")
    print("|---|---:|---:|---:|---:|")
    truths = [r.truth for r in rows]
    for e in estimators:
        values = [float(r.estimates[e]["value"]) for r in rows]
        rho, p = spearmanr(truths, values) if len(rows) > 2 else (float("nan"), float("nan"))
        mare = float(np.mean([abs(relative(v, t)) for v, t in zip(values, truths, strict=True)]))
        bounded = [r for r in rows if r.estimates[e]["low"] is not None]
        covered = sum(r.estimates[e]["low"] <= r.truth <= r.estimates[e]["high"] for r in bounded)
        widths = [r.estimates[e]["high"] - r.estimates[e]["low"] for r in bounded]
        width = float(np.mean(widths)) if widths else 0.0
        print(f"| {NAMES[e]} | {rho:.2f} ({p:.3f}) | {mare:.1%} | {covered} of {len(bounded)} | {width:.3f} |")


if __name__ == "__main__":
    main()
