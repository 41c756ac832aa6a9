"""Several DMs valued on one log, each estimate with a bootstrap confidence interval over conversations, ranked in
one report: what `convoplan ope` prints.

Every DM is given as its probabilities pi(a | s) over the logged candidates of every step ([S, C], from
`policy_probabilities` or `dm_probabilities`), and the log as `LoggedSteps` (a frozen state encoder's states,
reduced; `convoplan.ope.steps`). For each DM and each estimator (FQE, DualDICE, weighted importance sampling) the
point estimate uses every conversation; its interval comes from the bootstrap over conversations (Efron &
Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 6 and 13): the estimator is run again on `replicates`
resamples of the conversations (with replacement; FQE and DualDICE are refitted from scratch on each, with a new
seed, so the interval holds the fitting noise too) and the interval is

    value +- z_{(1 + confidence) / 2} * sd(replicates)                          (the normal bootstrap interval),

which stays usable with the few refits a CPU affords for the learned estimators, where percentiles would not.
Every value is on the scale of the on-policy truth: (1 - gamma) * E[sum_t gamma^t r_t] over one conversation
(DualDICE: its `episode_value`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge, Interval
from scipy.stats import norm

from convoplan.configs import Config
from convoplan.dm.configs import RewardConfig
from convoplan.dm.data import StepTable
from convoplan.ope.dualdice import DualDiceConfig, dualdice
from convoplan.ope.fqe import FQEConfig, fqe
from convoplan.ope.importance import WISConfig, weighted_importance_sampling
from convoplan.ope.steps import Encoder, LoggedSteps, logged_steps, reduce_dimensions, select_episodes, with_position
from convoplan.progress import Progress, Update

__all__ = ["Estimate", "OPEConfig", "OPEReport", "PolicyValue", "encoded_steps", "evaluate_policies"]

Estimator = Literal["fqe", "dualdice", "wis"]
NAMES: dict[str, str] = {"fqe": "FQE", "dualdice": "DualDICE", "wis": "WIS"}


@dataclass
class OPEConfig(Config):
    """Off-policy evaluation of several DMs on one log (`convoplan ope`)."""

    gamma: Annotated[float, Interval(ge=0, lt=1)] = 0.9
    """Discount factor of the value (over composition steps); it overrides the estimators' own."""
    estimators: tuple[Estimator, ...] = ("fqe", "dualdice", "wis")
    """Which estimates to make; DMs are ranked by the first."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """What a step is worth (logs without raters, such as exported live sessions: reward.source=reactions)."""
    state_components: Annotated[int, Ge(0)] = 16
    """Principal components of the encoder's states the estimators see (0: all)."""
    action_components: Annotated[int, Ge(0)] = 16
    """Principal components of the candidates' vectors (0: all)."""
    fqe: FQEConfig = field(default_factory=FQEConfig)
    """Fitted Q evaluation."""
    dualdice: DualDiceConfig = field(default_factory=lambda: DualDiceConfig(terminal="absorb"))
    """DualDICE (absorbing end: its value is that of one conversation, the truth's scale)."""
    wis: WISConfig = field(default_factory=WISConfig)
    """Weighted importance sampling (needs the logged propensities)."""
    refits: Annotated[int, Ge(0)] = 5
    """Bootstrap replicates of FQE and DualDICE, each refitted on resampled conversations (0: no interval)."""
    resamples: Annotated[int, Ge(0)] = 500
    """Bootstrap replicates of importance sampling (cheap: no fitting)."""
    confidence: Annotated[float, Interval(gt=0, lt=1)] = 0.95
    """Coverage of the intervals."""
    seed: Annotated[int, Ge(0)] = 0
    """Seed of the estimators and the resampling."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.estimators:
            raise ValueError("estimators: name at least one of fqe, dualdice, wis")


@dataclass
class Estimate:
    """One estimator's value of one DM."""

    value: float
    low: float
    """The interval's bounds (nan: fewer than two replicates)."""
    high: float
    replicates: list[float]
    """The estimate on each bootstrap resample."""
    seconds: float
    """Time of the point estimate and its replicates."""
    detail: dict[str, float] = field(default_factory=dict)
    """What else the estimator says (importance sampling: its effective sample size)."""


@dataclass
class PolicyValue:
    """Every estimate of one DM."""

    name: str
    agreement: float
    """Mean probability the DM gives the logged choice: 1 for the logging DM's greedy self, low for a stranger."""
    estimates: dict[str, Estimate]
    """By estimator; an estimator that cannot run on these logs is absent (see OPEReport.skipped)."""


def encoded_steps(table: StepTable, embeddings: torch.Tensor, encoder: Encoder, config: OPEConfig) -> LoggedSteps:
    """The log as the estimators read it: every step's state from the frozen `encoder` (e.g. the supervised RNN
    DM's `.state`) and its candidates' vectors, each reduced to `config`'s principal components, plus the step's
    position in its conversation."""
    raw = logged_steps(table, embeddings, encoder)
    return with_position(reduce_dimensions(raw, config.state_components or None, config.action_components or None))


def _run(
    estimator: Estimator, steps: LoggedSteps, target: torch.Tensor, config: OPEConfig, seed: int
) -> tuple[float, dict[str, float]]:
    """One estimate of the value of `target` [S, C] on `steps`."""
    if estimator == "fqe":
        return fqe(steps, target, replace(config.fqe, gamma=config.gamma, seed=seed)).value, {}
    if estimator == "dualdice":
        return dualdice(steps, target, replace(config.dualdice, gamma=config.gamma, seed=seed)).episode_value, {}
    result = weighted_importance_sampling(steps, target, replace(config.wis, gamma=config.gamma))
    return result.value, {"ess": result.ess}


def _interval(value: float, replicates: list[float], confidence: float) -> tuple[float, float]:
    if len(replicates) < 2:
        return math.nan, math.nan
    spread = float(torch.tensor(replicates, dtype=torch.float64).std()) * float(norm.ppf(0.5 + confidence / 2))
    return value - spread, value + spread


def _skipped(steps: LoggedSteps, config: OPEConfig) -> dict[str, str]:
    """Estimators that cannot run on these logs, and why."""
    missing = bool(torch.isnan(steps.propensity).any()) or bool((steps.propensity <= 0).any())
    if "wis" in config.estimators and missing:
        return {"wis": "some steps have no logged propensity"}
    return {}


def evaluate_policies(
    steps: LoggedSteps,
    targets: Mapping[str, torch.Tensor],
    config: OPEConfig,
    logs: str = "the logs",
    progress: Progress | None = None,
) -> OPEReport:
    """The value of every target (name -> pi(a | s) [S, C] on `steps`) by every estimator, with intervals;
    `logs` says where the steps came from (the report's title)."""
    if steps.steps == 0:
        raise ValueError("no logged steps to evaluate on")
    skipped = _skipped(steps, config)
    estimators = [e for e in config.estimators if e not in skipped]
    replicates = {e: config.resamples if e == "wis" else config.refits for e in estimators}
    # progress counts fits: a refit of FQE or DualDICE is one, WIS's resamples fit nothing (its whole estimate is one)
    refits = {e: 0 if e == "wis" else replicates[e] for e in estimators}
    total, done = len(targets) * sum(1 + refits[e] for e in estimators), 0
    episodes = int(steps.episode.max()) + 1
    rows = []
    for name, target in targets.items():
        target = _padded(target, steps)
        values: dict[str, Estimate] = {}
        for estimator in estimators:
            start = time.perf_counter()
            value, detail = _run(estimator, steps, target, config, config.seed)
            draws = torch.Generator().manual_seed(config.seed)  # the same resamples for every DM: paired
            found = []
            for replicate in range(replicates[estimator]):
                chosen = torch.randint(episodes, (episodes,), generator=draws)
                sample, index = select_episodes(steps, chosen)
                found.append(_run(estimator, sample, target[index], config, config.seed + 1 + replicate)[0])
                if refits[estimator]:
                    done += 1
                    _report(progress, name, estimator, done, total)
            done += 1
            _report(progress, name, estimator, done, total)
            low, high = _interval(value, found, config.confidence)
            values[estimator] = Estimate(value, low, high, found, time.perf_counter() - start, detail)
        agreement = float(target[torch.arange(steps.steps), steps.chosen].mean())
        rows.append(PolicyValue(name, agreement, values))
    return OPEReport(rows, config, logs, episodes, steps.steps, skipped)


def _report(progress: Progress | None, name: str, estimator: str, done: int, total: int) -> None:
    if progress is not None:
        progress(Update(f"{NAMES[estimator]} of {name}", done, total, "fits"))


def _padded(target: torch.Tensor, steps: LoggedSteps) -> torch.Tensor:
    if target.shape[0] != steps.steps:
        raise ValueError(f"a target has probabilities for {target.shape[0]} steps, the log has {steps.steps}")
    width = steps.mask.shape[1]
    if target.shape[1] > width:
        raise ValueError(f"a target has {target.shape[1]} candidates per step, the log at most {width}")
    return torch.nn.functional.pad(target.to(torch.float32), (0, width - target.shape[1]))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class OPEReport:
    """The ranked table of `evaluate_policies`' values (markdown, JSON, chart)."""

    rows: list[PolicyValue]
    config: OPEConfig
    logs: str
    """Where the logs came from."""
    conversations: int
    steps: int
    skipped: dict[str, str] = field(default_factory=dict)
    """Estimators left out, and why."""

    @property
    def estimators(self) -> list[str]:
        return [e for e in self.config.estimators if e not in self.skipped]

    def ranked(self) -> list[PolicyValue]:
        """Best first by the first estimator."""
        first = self.estimators[0] if self.estimators else None
        key: Callable[[PolicyValue], float] = lambda r: -r.estimates[first].value if first else 0.0  # noqa: E731
        return sorted(self.rows, key=key)

    def markdown(self) -> str:
        c = self.config
        lines = [
            f"## Off-policy values on {self.logs}",
            "",
            f"- {self.conversations} conversations, {self.steps} composition steps; reward: {c.reward.source}; "
            f"value (1 - gamma) E[sum_t gamma^t r_t] per conversation, gamma {c.gamma:g}",
            f"- {c.confidence:.0%} intervals: normal bootstrap over conversations ("
            + ", ".join(
                f"{c.resamples} resamples of WIS" if e == "wis" else f"{c.refits} refits of {NAMES[e]}"
                for e in self.estimators
            )
            + f"); ranked by {NAMES[self.estimators[0]]}"
            if self.estimators
            else "- no estimator could run",
            *[f"- {NAMES[e]} left out: {why}" for e, why in self.skipped.items()],
            "",
            "| rank | DM | pi(logged choice) | " + " | ".join(NAMES[e] for e in self.estimators) + " |",
            "|---:|---|---:|" + "---:|" * len(self.estimators),
        ]
        for rank, row in enumerate(self.ranked(), 1):
            cells = []
            for e in self.estimators:
                x = row.estimates[e]
                interval = f" [{x.low:.3f}, {x.high:.3f}]" if math.isfinite(x.low) else ""
                ess = f" (ESS {x.detail['ess']:.1f})" if "ess" in x.detail else ""
                cells.append(f"{x.value:.3f}{interval}{ess}")
            lines.append(f"| {rank} | {row.name} | {row.agreement:.2f} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "logs": self.logs,
            "conversations": self.conversations,
            "steps": self.steps,
            "config": asdict(self.config),
            "skipped": self.skipped,
            "ranking": [
                {
                    "dm": row.name,
                    "agreement": row.agreement,
                    "estimates": {
                        e: {
                            "value": x.value,
                            "low": _finite(x.low),
                            "high": _finite(x.high),
                            "replicates": x.replicates,
                            "seconds": x.seconds,
                            **x.detail,
                        }
                        for e, x in row.estimates.items()
                    },
                }
                for row in self.ranked()
            ],
        }

    def png(self) -> bytes:
        """One panel per estimator: each DM's value as a dot with its interval, best first."""
        from matplotlib.figure import Figure

        from convoplan.report import figure_png

        rows, panels = self.ranked(), max(1, len(self.estimators))
        figure = Figure(figsize=(3.6 * panels + 1.5, 1.0 + 0.4 * len(rows)), layout="constrained")
        axes = figure.subplots(1, panels, sharey=True, squeeze=False)[0]
        names = [row.name for row in rows]
        for axis, estimator in zip(axes, self.estimators, strict=False):
            for y, row in enumerate(rows):
                x = row.estimates[estimator]
                error = [[x.value - x.low], [x.high - x.value]] if math.isfinite(x.low) else None
                axis.errorbar(x.value, y, xerr=error, fmt="o", color="C0", ecolor="black", capsize=3)
            axis.set_title(NAMES[estimator])
            axis.set_xlabel("value per conversation")
            axis.grid(axis="x", alpha=0.3)
        axes[0].set_yticks(range(len(names)), names)
        axes[0].invert_yaxis()
        return figure_png(figure, dpi=110)
