"""Off-policy evaluation of dialogue managers against the on-policy truth (the RL paper, sec. 5; DESIGN.md,
"Evaluation protocols": DM).

For a set of target policies (the DMs of a `convoplan dm pipeline` run, the uniform random DM, softmax DMs over the
supervised DM's scores at several temperatures, a negative temperature among them), this computes

- the truth: each policy talks with simulated users and raters (no exploration), and its value is
  (1 - gamma) * the mean over conversations of sum_t gamma^t r_t, r_t the mean rating of the candidate chosen at
  composition step t (all policies meet the same users: same seeds);
- three estimates from the supervised DM's epsilon-greedy logs (the data the RL DMs were trained on, or fresh logs
  of the same DM, held out from their training, with --fresh-logs): DualDICE (behaviour-agnostic), fitted Q
  evaluation and per-decision weighted importance sampling with the logged propensities. DualDICE and FQE learn
  small MLPs on top of the supervised RNN DM's state encoder, frozen;

then prints a markdown table (truth, estimates, relative errors), each estimator's Spearman rank correlation with
the truth and its mean absolute relative error. Truths and estimates are cached under --out (one JSON per policy
and quantity), so that a rerun only computes what is missing.

    .venv/bin/convoplan dm pipeline --out /tmp/ope_pipe --conversations 400
    .venv/bin/python bench/ope.py --run /tmp/ope_pipe --out /tmp/ope_bench
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from convoplan import read_jsonl
from convoplan.compose.loop import ComposerConfig, DialogueManager, DialogueState
from convoplan.dm.baselines import RandomDM
from convoplan.dm.checkpoint import RNNPolicy, load_network
from convoplan.dm.data import FeatureSpace, build_steps
from convoplan.dm.networks import QNetwork
from convoplan.dm.train import prepare
from convoplan.embed import SentenceEmbedder
from convoplan.ope import (
    DualDiceConfig,
    FQEConfig,
    GreedyPolicy,
    SoftmaxPolicy,
    TargetPolicy,
    UniformPolicy,
    WISConfig,
    dualdice,
    fqe,
    logged_steps,
    policy_probabilities,
    weighted_importance_sampling,
)
from convoplan.schema import Candidate, Conversation, write_jsonl
from convoplan.sim.run import SimulationConfig, simulate
from convoplan.worlds.animals import animals_world

ESTIMATORS = ("dualdice", "fqe", "wis")
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


def softmax_of(temperature: float) -> Callable[[np.ndarray], np.ndarray]:
    def probabilities(q: np.ndarray) -> np.ndarray:
        z = q / temperature
        e = np.exp(z - z.max())
        return np.asarray(e / e.sum())

    return probabilities


@dataclass
class Target:
    name: str
    description: str
    policy: TargetPolicy
    dm: Callable[[], DialogueManager]
    """A fresh DM for the simulation (its own random stream)."""


def targets(
    networks: dict[str, QNetwork], space: FeatureSpace, embedder: SentenceEmbedder, temperatures: Sequence[float]
) -> list[Target]:
    supervised = networks["supervised_rnn"]
    found: list[Target] = []
    for name, network in networks.items():
        found.append(
            Target(
                name,
                f"{name}: argmax of its scores",
                GreedyPolicy(network),
                lambda network=network: RNNPolicy(network, space, embedder),  # type: ignore[misc]
            )
        )
    found.append(Target("uniform", "uniform over the offered candidates", UniformPolicy(), lambda: RandomDM()))
    for temperature in temperatures:
        found.append(
            Target(
                f"softmax_T{temperature:g}",
                f"softmax(supervised scores / {temperature:g})",
                SoftmaxPolicy(supervised, temperature),
                lambda t=temperature: SampledDM(  # type: ignore[misc]
                    RNNPolicy(supervised, space, embedder), softmax_of(t), random.Random(f"softmax:{t}")
                ),
            )
        )
    return found


def cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    if path.is_file():
        return dict(json.loads(path.read_text()))
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)
    return result


def truth(target: Target, space: FeatureSpace, args: argparse.Namespace) -> dict[str, Any]:
    """Simulate the target DM with no exploration; per-conversation rewards of every composition step."""
    start = time.perf_counter()
    config = SimulationConfig(
        conversations=args.truth_conversations,
        raters=args.raters,
        seed=args.truth_seed,
        max_turns=args.max_turns,
        composer=ComposerConfig(epsilon=0.0),
    )

    def progress(done: int) -> None:
        if done % 25 == 0:
            say(f"  truth {target.name}: {done}/{config.conversations} conversations")

    conversations = list(simulate(animals_world(), target.dm(), config, target.name, progress))
    table = build_steps(conversations, space)
    rewards = table.step_rewards()
    per_episode = [rewards[a:b].tolist() for a, b in zip(table.episode_steps[:-1], table.episode_steps[1:])]
    return {"rewards": per_episode, "seconds": time.perf_counter() - start, "config": asdict(config)}


def truth_value(record: dict[str, Any], gamma: float) -> tuple[float, float]:
    """(mean, standard error) of (1 - gamma) sum_t gamma^t r_t over the simulated conversations."""
    values = np.array([(1 - gamma) * sum(gamma**t * r for t, r in enumerate(rs)) for rs in record["rewards"]])
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


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
        write_jsonl(path, list(simulate(animals_world(), dm, config, "supervised_rnn")))
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
    parser.add_argument("--seed", type=int, default=0, help="seed of the estimators")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--truth-only", action="store_true", help="only simulate (and cache) the truths")
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
        t for t in targets(networks, space, embedder, args.temperatures) if not args.policies or t.name in args.policies
    ]

    if args.truth_only:
        for target in chosen:
            say(f"{target.name}: {target.description}")
            path = out / "truth" / f"{target.name}_{args.truth_conversations}_{args.truth_seed}.json"
            true, error = truth_value(cached(path, lambda target=target: truth(target, space, args)), args.gamma)
            say(f"  truth {true:.3f} ± {error:.3f}")
        return

    # --- logged data -------------------------------------------------------------------------------------------
    logs_path = logged_conversations(args, space, embedder)
    logs: list[Conversation] = list(read_jsonl(logs_path))
    data = prepare(logs, embedder, space)
    steps = logged_steps(data.table, data.embeddings, supervised.state)
    say(f"{len(logs)} logged conversations, {steps.steps} steps, from {logs_path}")
    tag = f"{logs_path.stem}_g{args.gamma:g}_s{args.seed}"
    dice_config = DualDiceConfig(gamma=args.gamma, steps=args.dice_steps, seed=args.seed)
    fqe_config = FQEConfig(gamma=args.gamma, steps=args.fqe_steps, seed=args.seed)
    wis_config = WISConfig(gamma=args.gamma)

    rows = []
    for target in chosen:
        say(f"{target.name}: {target.description}")
        record = cached(
            out / "truth" / f"{target.name}_{args.truth_conversations}_{args.truth_seed}.json",
            lambda target=target: truth(target, space, args),
        )  # type: ignore[misc]
        true, error = truth_value(record, args.gamma)
        probabilities = policy_probabilities(data.table, data.embeddings, target.policy)

        def run_dice(p: torch.Tensor = probabilities) -> dict[str, Any]:
            result = dualdice(steps, p, dice_config)
            return {
                "value": result.episode_value,
                "restart_value": result.value,
                "mean_zeta": result.mean_zeta,
                "seconds": result.seconds,
                "config": asdict(dice_config),
            }

        def run_fqe(p: torch.Tensor = probabilities) -> dict[str, Any]:
            result = fqe(steps, p, fqe_config)
            return {"value": result.value, "seconds": result.seconds, "config": asdict(fqe_config)}

        def run_wis(p: torch.Tensor = probabilities) -> dict[str, Any]:
            result = weighted_importance_sampling(steps, p, wis_config)
            return {"value": result.value, "ess": result.ess, "unsupported_steps": result.unsupported_steps}

        estimates = {
            "dualdice": cached(out / "estimates" / f"{target.name}_dualdice_{tag}_{args.dice_steps}.json", run_dice),
            "fqe": cached(out / "estimates" / f"{target.name}_fqe_{tag}_{args.fqe_steps}.json", run_fqe),
            "wis": cached(out / "estimates" / f"{target.name}_wis_{tag}.json", run_wis),
        }
        behaviour_agreement = float(probabilities[torch.arange(steps.steps), steps.chosen].mean())
        rows.append((target, true, error, estimates, behaviour_agreement))
        say(
            f"  truth {true:.3f} ± {error:.3f} | DualDICE {estimates['dualdice']['value']:.3f} "
            f"| FQE {estimates['fqe']['value']:.3f} | WIS {estimates['wis']['value']:.3f}"
        )

    # --- report --------------------------------------------------------------------------------------------------
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({args.threads} thread(s)); {time.strftime('%Y-%m-%d')}"
    )
    print(
        f"gamma {args.gamma:g}; logs: {logs_path} ({len(logs)} conversations, {steps.steps} steps); truth: "
        f"{args.truth_conversations} simulated conversations per policy (seed {args.truth_seed}, same users for all)"
    )
    print()
    print(
        "| policy | pi(logged choice) | truth (± s.e.) | DualDICE | FQE | WIS | rel. err. DualDICE | rel. err. FQE "
        "| rel. err. WIS | WIS ESS |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for target, true, error, estimates, agreement in rows:
        values = [estimates[e]["value"] for e in ESTIMATORS]
        errors = [f"{relative(v, true):+.1%}" for v in values]
        print(
            f"| {target.name} | {agreement:.2f} | {true:.3f} ± {error:.3f} | "
            + " | ".join(f"{v:.3f}" for v in values)
            + f" | {' | '.join(errors)} | {estimates['wis']['ess']:.1f} |"
        )
    print()
    truths = [row[1] for row in rows]
    print("| estimator | Spearman rho (p) | mean abs. rel. error |")
    print("|---|---:|---:|")
    for estimator in ESTIMATORS:
        values = [row[3][estimator]["value"] for row in rows]
        rho, p = spearmanr(truths, values) if len(rows) > 2 else (float("nan"), float("nan"))
        mare = float(np.mean([abs(relative(v, t)) for v, t in zip(values, truths, strict=True)]))
        print(f"| {estimator} | {rho:.2f} ({p:.3f}) | {mare:.1%} |")


if __name__ == "__main__":
    main()
