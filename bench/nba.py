"""Next-best-action on any corpora in the canonical format (issue 5, item 3; by default PersuasionForGood and STAR).

For each corpus (`--data NAME=PATH`, repeated; its conversations whose agent turns carry actions, split by
`meta.split`):

1. top-1 / top-3 accuracy on the test split of every labelled agent message, predicted from the conversation before
   it, for: the majority action, the most frequent successor of the previous action (bigram), the supervised model
   (`convoplan.actions.nba`) and the outcome-driven Q-model's ranking (`convoplan.actions.outcome`; it is not
   trained to imitate, so its accuracy only says how far it departs from the logged choices);
2. off-policy evaluation on the test conversations that have an outcome: the greedy policies of the supervised and
   the outcome-driven models (and the uniform one, for scale) over each logged step's candidate set, by FQE and
   DualDICE (`convoplan.ope`), beside the logged (behaviour) policy's empirical value. The value is the
   discounted conversion E[gamma^(T-1) R] (R the terminal reward, T the conversation's number of steps), i.e.
   the ope modules' per-step values divided by 1 - gamma. The estimators learn on the outcome Q-model's state
   encoder, frozen (16 principal components, plus the step's position), and 16 components of the candidates. The
   estimators' value for the logged policy itself, against its empirical value, says how far to trust them.

Models are saved under --out. A corpus's training split can be capped (`--train-cap NAME=N`, a seeded sample; STAR's
is 2,000 by default) to keep the run to minutes on a small CPU; embeddings are cached in the --embedding-cache
(first run: ~50k STAR texts to embed).

    .venv/bin/python bench/nba.py
    .venv/bin/python bench/nba.py --data mine=runs/data/mine.jsonl --train-cap mine=1000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from convoplan.actions.evaluate import FrequencyBaseline, NextActionAccuracy, evaluate_next_actions
from convoplan.actions.nba import NBAConfig
from convoplan.actions.outcome import OutcomeConfig
from convoplan.actions.train_nba import train_nba
from convoplan.actions.train_outcome import train_outcome
from convoplan.embed import SentenceEmbedder, default_cache_dir
from convoplan.ope import (
    DualDiceConfig,
    FQEConfig,
    UniformPolicy,
    dualdice,
    episode_values,
    fqe,
    logged_steps,
    policy_probabilities,
    reduce_dimensions,
    with_position,
)
from convoplan.schema import Conversation, read_jsonl

T = TypeVar("T")


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(work: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


@dataclass
class Accuracy:
    model: str
    accuracy: NextActionAccuracy
    seconds: float
    """Training time (0 for the counting baselines)."""
    note: str = ""


@dataclass
class Value:
    policy: str
    agreement: float
    """Share of logged steps where the policy picks the logged action."""
    fqe: float
    """FQE with the default MLP Q (one hidden layer of 64)."""
    fqe_linear: float
    """FQE with a linear Q: less able to fit, less able to extrapolate wildly off the logged actions."""
    dualdice: float
    seconds: float


@dataclass
class CorpusReport:
    name: str
    sizes: str
    accuracies: list[Accuracy]
    empirical: float
    """The logged policy's discounted conversion on the held-out conversations with an outcome."""
    conversion: float
    """Their plain conversion rate."""
    ope_conversations: int
    ope_steps: int
    width: int
    values: list[Value]
    embed_seconds: float


def labelled(conversations: list[Conversation]) -> list[Conversation]:
    return [c for c in conversations if any(t.speaker == "agent" and t.action for t in c.turns)]


def run_corpus(name: str, path: Path, cap: int, embedder: SentenceEmbedder, args: argparse.Namespace) -> CorpusReport:
    conversations = labelled(list(read_jsonl(path)))
    splits = {s: [c for c in conversations if c.meta.get("split") == s] for s in ("train", "validation", "test")}
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    available = len(train)
    if cap and cap < len(train):
        keep = np.random.default_rng(args.seed).permutation(len(train))[:cap]
        train = [train[i] for i in sorted(keep)]
    sizes = (
        f"train {len(train)}" + (f" of {available}" if len(train) < available else "") + f", validation "
        f"{len(validation)}, test {len(test)} conversations with labelled agent messages"
    )
    say(f"{name}: {sizes}")
    _, embed_seconds = timed(
        lambda: embedder.embed(sorted({t.text for c in train + validation + test for t in c.turns}))
    )
    say(f"  embedded in {embed_seconds:.0f}s ({embedder.computed} computed so far, the rest cached)")

    accuracies = []
    baselines = {
        "majority action": FrequencyBaseline(0),
        "most frequent after the previous action": FrequencyBaseline(1),
    }
    for label, baseline in baselines.items():
        accuracies.append(Accuracy(label, evaluate_next_actions(baseline.fit(train), test), 0.0))
    config = NBAConfig(seed=args.seed)
    supervised, seconds = timed(lambda: train_nba(train, embedder, config, validation))
    note = f"best epoch {supervised.best_epoch} of {len(supervised.validation_losses)}"
    accuracies.append(Accuracy("supervised GRU", evaluate_next_actions(supervised.model, test), seconds, note))
    say(f"  supervised: {accuracies[-1].accuracy} in {seconds:.0f}s ({note})")
    q_config = OutcomeConfig()
    q_config = replace(q_config, q=replace(q_config.q, seed=args.seed, steps=args.q_steps or q_config.q.steps))
    outcome, seconds = timed(lambda: train_outcome(train, embedder, q_config))
    note = f"{outcome.conversations} conversations with an outcome, {outcome.steps} steps"
    accuracies.append(
        Accuracy("outcome-driven Q (ranking by Q)", evaluate_next_actions(outcome.model, test), seconds, note)
    )
    say(f"  outcome: {accuracies[-1].accuracy} in {seconds:.0f}s ({note})")
    supervised.model.save(Path(args.out) / name / "supervised")
    outcome.model.save(Path(args.out) / name / "outcome")

    # --- off-policy evaluation on the held-out conversations with an outcome ---------------------------------------
    steps = outcome.model.steps(test)
    table = steps.table
    embeddings = torch.from_numpy(embedder.embed(table.texts))
    raw = logged_steps(table, embeddings, outcome.model.network.state)
    features = with_position(reduce_dimensions(raw, 16, 16))
    gamma = q_config.q.gamma
    empirical = float(episode_values(raw.reward, raw.episode, gamma).mean()) / (1 - gamma)
    conversion = float(np.mean([float(r) for r in raw.reward[raw.done]]))
    say(f"  OPE: {table.episodes} conversations, {table.steps} steps, empirical {empirical:.4f}")
    targets = {
        "logged (behaviour)": steps.logged_probabilities(),
        "supervised, greedy": steps.greedy_probabilities(supervised.model),
        "outcome-driven, greedy": steps.greedy_probabilities(outcome.model),
        "uniform": policy_probabilities(table, embeddings, UniformPolicy()),
    }
    logged = steps.logged_probabilities()
    values = []
    for policy, probabilities in targets.items():
        start = time.perf_counter()
        fqe_config = FQEConfig(gamma=gamma, steps=args.fqe_steps, seed=args.seed)
        q = fqe(features, probabilities, fqe_config)
        q_linear = fqe(features, probabilities, replace(fqe_config, hidden=()))
        dice = dualdice(features, probabilities, DualDiceConfig(gamma=gamma, steps=args.dice_steps, seed=args.seed))
        agreement = float((probabilities * logged).sum(1).mean())
        values.append(
            Value(
                policy,
                agreement,
                q.value / (1 - gamma),
                q_linear.value / (1 - gamma),
                dice.episode_value / (1 - gamma),
                time.perf_counter() - start,
            )
        )
        say(
            f"  {policy}: agreement {agreement:.3f}, FQE {values[-1].fqe:.4f}, linear {values[-1].fqe_linear:.4f}, "
            f"DualDICE {values[-1].dualdice:.4f}"
        )
    return CorpusReport(
        name,
        sizes,
        accuracies,
        empirical,
        conversion,
        table.episodes,
        table.steps,
        steps.width,
        values,
        embed_seconds,
    )


def relative(value: float, reference: float) -> str:
    return f"{(value / reference - 1) * 100:+.0f}%" if reference else "n/a"


def report(reports: list[CorpusReport], args: argparse.Namespace, seconds: float) -> None:
    q = OutcomeConfig().q
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({args.threads} thread(s)); {time.strftime('%Y-%m-%d')}; "
        f"total {seconds / 60:.1f} min"
    )
    print()
    print("Top-1 / top-3 accuracy of the next labelled agent action on the test split")
    print()
    print("| corpus | model | top-1 | top-3 | training (s) | notes |")
    print("|---|---|---|---|---|---|")
    for r in reports:
        for a in r.accuracies:
            print(
                f"| {r.name} | {a.model} | {a.accuracy.top1:.3f} | {a.accuracy.top3:.3f} | {a.seconds:.0f} | {a.note} |"
            )
    print()
    for r in reports:
        targets = r.accuracies[0].accuracy
        print(
            f"- {r.name}: {r.sizes}; {targets.targets} test targets"
            + (f" ({targets.unseen} with an action unseen in training)" if targets.unseen else "")
            + f"; embedding {r.embed_seconds:.0f}s"
        )
    print()
    print(
        f"Off-policy value on the test conversations with an outcome: discounted conversion E[gamma^(T-1) R], "
        f"gamma {q.gamma:g}, R = converted (1/0); greedy policies over each logged step's candidate set; FQE "
        f"{args.fqe_steps} steps, DualDICE (restart, value of one conversation) {args.dice_steps} steps"
    )
    print()
    print(
        "| corpus | policy | picks the logged action | FQE | vs logged | FQE linear | vs logged | DualDICE | vs logged "
        "| OPE time (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in reports:
        base = r.values[0]
        for v in r.values:
            print(
                f"| {r.name} | {v.policy} | {v.agreement:.3f} | {v.fqe:.4f} | {relative(v.fqe, base.fqe)} | "
                f"{v.fqe_linear:.4f} | {relative(v.fqe_linear, base.fqe_linear)} | "
                f"{v.dualdice:.4f} | {relative(v.dualdice, base.dualdice)} | {v.seconds:.0f} |"
            )
    print()
    for r in reports:
        print(
            f"- {r.name}: {r.ope_conversations} conversations, {r.ope_steps} steps, up to {r.width} candidates a step; "
            f"logged policy's empirical value {r.empirical:.4f} (conversion rate {r.conversion:.3f})"
        )


DEFAULT_DATA = ["persuasion=runs/data/persuasion.jsonl", "star=runs/data/star.jsonl"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        action="append",
        default=None,
        metavar="NAME=PATH",
        help="a corpus in the canonical format (repeat it; default: persuasion and star under runs/data)",
    )
    parser.add_argument(
        "--train-cap",
        action="append",
        default=["star=2000"],
        metavar="NAME=N",
        help="cap on a corpus's training conversations, a seeded sample (default: star=2000; 0: all)",
    )
    parser.add_argument("--embedding-cache", type=Path, default=default_cache_dir(), help="sentence embedding cache")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-nba"), help="folder for the trained models")
    parser.add_argument("--q-steps", type=int, default=0, help="Q-learning steps (0: the OutcomeConfig default)")
    parser.add_argument("--fqe-steps", type=int, default=2000)
    parser.add_argument("--dice-steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpora = dict(item.split("=", 1) for item in args.data or DEFAULT_DATA)
    caps = {name: int(n) for name, n in (item.split("=", 1) for item in args.train_cap)}
    for path in corpora.values():
        if not Path(path).is_file():
            sys.exit(f"{path} is missing: convert the corpora first (docs/corpora.md, docs/your-data.md)")
    start = time.perf_counter()
    embedder = SentenceEmbedder(cache_dir=args.embedding_cache)
    reports = [run_corpus(name, Path(path), caps.get(name, 0), embedder, args) for name, path in corpora.items()]
    report(reports, args, time.perf_counter() - start)


if __name__ == "__main__":
    main()
