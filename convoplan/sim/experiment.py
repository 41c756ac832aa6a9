"""A/B experiments between dialogue managers: the RL paper's live experiment (sec. 6) on simulated users.

`run_ab` lets the same simulated users (one seed: common random numbers) talk with every arm; `ab_report` turns the
logs into the paper's Table 3 (each engagement metric's relative change against the control, with a bootstrap
confidence interval) and the behaviour statistics of sec. 6.4. The report reads canonical logs only, so the stored
sessions of a live experiment go through `ab_report` unchanged::

    logs = run_ab(animals_world(), {"heuristic": HeuristicDM(), "greedy": GreedyRatingDM()}, "heuristic", 300, 0)
    report = ab_report(logs, control="heuristic")
    print(report.markdown())
    write_report(report, "runs/ab")  # report.md, report.json, report.png
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from convoplan.compose.loop import DialogueManager
from convoplan.progress import Progress
from convoplan.report import figure_png
from convoplan.schema import Conversation
from convoplan.sim.metrics import (
    BEHAVIOURS,
    METRICS,
    Comparison,
    behaviour_summary,
    compare,
    metric_values,
    percent,
)
from convoplan.sim.run import SimulationConfig, World, simulate

__all__ = ["ABReport", "ab_report", "run_ab"]

TABLE3 = ("length", "cooperative_answers", "non_cooperative_answers", "positive_feedback", "negative_feedback")
"""The engagement metrics of the paper's Table 3, in its order; then how many users left, and the mean rating where
logs are rated."""
METRIC_LABELS = {
    "length": "Conversation length (bot responses)",
    "cooperative_answers": "Cooperative responses",
    "non_cooperative_answers": "Non-cooperative responses",
    "positive_feedback": "Explicit positive feedback",
    "negative_feedback": "Explicit negative feedback",
    "user_left": "Conversations the user ended",
    "mean_rating": "Mean rating",
}
BEHAVIOUR_LABELS = {
    "responses": "Bot responses per conversation",
    "question_responses": "Responses ending in a question, per conversation",
    "question_share": "Share of responses ending in a question",
    "unique_providers": "Unique providers per conversation",
    "fact_utterances": "Fact utterances per conversation",
    "sound_utterances": "Sound utterances per conversation",
    "fact_share": "Fact share of fact + sound utterances",
    "focus_changes": "Focus changes per conversation",
    "cooperation_rate": "Cooperation rate of answers to bot questions",
}
_SHARES = frozenset({"question_share", "fact_share", "cooperation_rate"})

# --- running ---------------------------------------------------------------------------------------------------


def run_ab(
    world: World,
    arms: dict[str, DialogueManager],
    control: str,
    users: int,
    seed: int,
    progress: Progress | None = None,
    raters: int = 3,
) -> dict[str, list[Conversation]]:
    """Simulate `users` conversations with every arm, the control first; each arm meets the same users (same seed),
    drawn for evaluation (`SimulationConfig.purpose`): never the users of a collection run, whatever its seed.

    `arms` maps an arm's name (logged as meta["dm"]) to its DM and includes the control. Each conversation is rated
    by `raters` simulated raters, for the mean rating. `progress` hears "simulating <arm>" after each conversation.
    """
    if control not in arms:
        raise ValueError(f"the control {control!r} is not one of the arms ({', '.join(arms)})")
    config = SimulationConfig(conversations=users, raters=raters, seed=seed, purpose="evaluation")
    logs: dict[str, list[Conversation]] = {}
    for name in [control, *(name for name in arms if name != control)]:
        logs[name] = list(simulate(world, arms[name], config, name, progress=progress))
    return logs


# --- the report ------------------------------------------------------------------------------------------------


def _number(value: float) -> float | None:
    """A float for JSON: NaN (undefined) or infinite (a resample with a zero control mean) becomes null."""
    return value if math.isfinite(value) else None


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _comparison_dict(comparison: Comparison) -> dict[str, Any]:
    return {key: value if key == "metric" else _number(value) for key, value in asdict(comparison).items()}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


@dataclass(frozen=True)
class ABReport:
    """An A/B test's numbers, Table 3 (relative changes against the control) and the behaviour statistics: a
    `convoplan.report.Report`."""

    control: str
    arms: list[str]
    """The arms compared with the control, in order (the control excluded)."""
    conversations: dict[str, int]
    """Conversations per arm, the control included."""
    metrics: list[str]
    """The rows of Table 3: `TABLE3`, "user_left", then "mean_rating" where some arm's logs are rated."""
    changes: dict[str, dict[str, Comparison | None]]
    """Arm -> metric -> its comparison with the control; None where the relative change is undefined (the control's
    mean is not positive, or an arm has fewer than two conversations with a value)."""
    means: dict[str, dict[str, float]]
    """Arm (the control included) -> every metric of `metrics.METRICS` -> mean per conversation (NaN: no value)."""
    behaviour: dict[str, dict[str, float]]
    """Arm (the control included) -> every statistic of `metrics.BEHAVIOURS` (see `behaviour_summary`)."""
    confidence: float
    resamples: int
    seed: int

    def markdown(self) -> str:
        """Table 3 (rows = metrics, columns = arms, the control's absolute mean in its own column), then the
        behaviour table (absolute values of every arm)."""
        level = f"{self.confidence:.0%}"
        counts = ", ".join(f"{name} {n}" for name, n in self.conversations.items())
        lines = [
            f"## Relative change against the control ({self.control}), bootstrap {level} CI",
            "",
            f"Conversations: {counts}.",
            "",
            "| Metric | " + " | ".join(_cell(a) for a in [f"{self.control} (control, mean)", *self.arms]) + " |",
            "|---|" + "---:|" * (1 + len(self.arms)),
        ]
        for metric in self.metrics:
            cells = [METRIC_LABELS.get(metric, metric), f"{self.means[self.control][metric]:.2f}"]
            for arm in self.arms:
                c = self.changes[arm][metric]
                cells.append(
                    "n/a" if c is None else f"{percent(c.relative_change)} [{percent(c.low)}, {percent(c.high)}]"
                )
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "Cells: the arm's mean over the control's, minus 1, with its bootstrap interval (conversations resampled "
            "per arm); n/a where undefined (the control's mean is zero, too few values, or a degenerate resample).",
            *self._paired_lines(level),
            "",
            "## Behaviour (absolute values)",
            "",
            "| Statistic | " + " | ".join(_cell(a) for a in [f"{self.control} (control)", *self.arms]) + " |",
            "|---|" + "---:|" * (1 + len(self.arms)),
        ]
        for statistic in BEHAVIOURS:
            cells = [BEHAVIOUR_LABELS[statistic]]
            for arm in [self.control, *self.arms]:
                value = self.behaviour[arm][statistic]
                shown = f"{value:.1%}" if statistic in _SHARES else f"{value:.2f}"
                cells.append("n/a" if math.isnan(value) else shown)
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def _paired_lines(self, level: str) -> list[str]:
        """The paired table (per-user differences), where the arms met the same users."""
        paired = [
            (a, m)
            for a in self.arms
            for m in self.metrics
            if (c := self.changes[a][m]) and not math.isnan(c.paired_low)
        ]
        if not paired:
            return []
        lines = [
            "",
            f"## Paired comparison (the same users in every arm), bootstrap {level} CI",
            "",
            "| Metric | " + " | ".join(_cell(a) for a in self.arms) + " |",
            "|---|" + "---:|" * len(self.arms),
        ]
        for metric in self.metrics:
            cells = [METRIC_LABELS.get(metric, metric)]
            for arm in self.arms:
                c = self.changes[arm][metric]
                if c is None or math.isnan(c.paired_low):
                    cells.append("n/a")
                    continue
                difference = c.arm_mean - c.control_mean
                cells.append(
                    f"{c.paired()}; "
                    f"{difference:+.2f} [{c.paired_difference_low:+.2f}, {c.paired_difference_high:+.2f}] per user"
                )
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "Cells: the relative change with its paired interval (users resampled, each with its conversation in both "
            "arms), then the mean per-user difference (arm minus control) with its interval.",
        ]
        return lines

    def to_dict(self) -> dict[str, Any]:
        """Every number, JSON-ready (NaN as null)."""

        def clean(table: dict[str, float]) -> dict[str, float | None]:
            return {key: _number(value) for key, value in table.items()}

        return {
            "control": self.control,
            "arms": self.arms,
            "conversations": self.conversations,
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
            "metrics": self.metrics,
            "changes": {
                arm: {m: None if c is None else _comparison_dict(c) for m, c in row.items()}
                for arm, row in self.changes.items()
            },
            "means": {arm: clean(row) for arm, row in self.means.items()},
            "behaviour": {arm: clean(row) for arm, row in self.behaviour.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ABReport:
        """The report `to_dict` gave (null read back as NaN)."""

        def floats(table: dict[str, float | None]) -> dict[str, float]:
            return {key: _float(value) for key, value in table.items()}

        def comparison(c: dict[str, Any] | None) -> Comparison | None:
            if c is None:
                return None
            numbers = {key: _float(value) for key, value in c.items() if key != "metric"}
            return Comparison(metric=str(c["metric"]), **numbers)

        return cls(
            control=data["control"],
            arms=list(data["arms"]),
            conversations=dict(data["conversations"]),
            metrics=list(data["metrics"]),
            changes={arm: {m: comparison(c) for m, c in row.items()} for arm, row in data["changes"].items()},
            means={arm: floats(row) for arm, row in data["means"].items()},
            behaviour={arm: floats(row) for arm, row in data["behaviour"].items()},
            confidence=float(data["confidence"]),
            resamples=int(data["resamples"]),
            seed=int(data["seed"]),
        )

    def png(self) -> bytes:
        """The chart: per metric, one horizontal bar per arm (its relative change against the control) with the
        confidence interval as an error bar, and a line at zero."""
        from matplotlib.figure import Figure
        from matplotlib.ticker import PercentFormatter

        rows, arms = len(self.metrics), max(1, len(self.arms))
        figure = Figure(figsize=(9.0, 1.2 + rows * (0.35 + 0.3 * arms)), layout="constrained")
        axes = figure.add_subplot()
        height = 0.8 / arms
        colors = [f"C{k % 10}" for k in range(arms)]
        for k, arm in enumerate(self.arms):
            for i, metric in enumerate(self.metrics):
                y = i + (k - (arms - 1) / 2) * height
                c = self.changes[arm][metric]
                if c is None or not math.isfinite(c.relative_change):
                    axes.text(0, y, " n/a", va="center", ha="left", fontsize=8, color=colors[k])
                    continue
                error = None
                if math.isfinite(c.low) and math.isfinite(c.high):
                    error = [[max(0.0, c.relative_change - c.low)], [max(0.0, c.high - c.relative_change)]]
                axes.barh(y, c.relative_change, height=height * 0.9, color=colors[k], label=arm if i == 0 else None)
                axes.errorbar(c.relative_change, y, xerr=error, fmt="none", ecolor="black", elinewidth=1, capsize=3)
                label = f"  {c.relative_change:+.0%}  "
                if c.relative_change >= 0:  # the value beside the bar's outer end, past its interval
                    end = c.relative_change if error is None else max(c.relative_change, c.high)
                    axes.text(end, y, label, va="center", ha="left", fontsize=8)
                else:
                    end = c.relative_change if error is None else min(c.relative_change, c.low)
                    axes.text(end, y, label, va="center", ha="right", fontsize=8)
        axes.axvline(0.0, color="black", linewidth=0.8)
        axes.set_yticks(range(rows), [METRIC_LABELS.get(m, m) for m in self.metrics])
        axes.invert_yaxis()
        axes.xaxis.set_major_formatter(PercentFormatter(1.0))
        axes.grid(axis="x", alpha=0.3)
        axes.margins(x=0.15)
        counts = ", ".join(f"{name} {n}" for name, n in self.conversations.items())
        axes.set_xlabel(f"{self.confidence:.0%} bootstrap confidence intervals; conversations: {counts}")
        axes.set_title(f"Relative change against the control ({self.control})")
        if self.arms:
            axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
        return figure_png(figure, dpi=120)


def _compare(
    control: Sequence[Conversation],
    arm: Sequence[Conversation],
    metric: str,
    confidence: float,
    resamples: int,
    seed: int,
) -> Comparison | None:
    """`metrics.compare`, or None where the relative change is undefined (control mean not positive, too few
    values); resamples whose control mean is zero make NaN bounds rather than warnings."""
    from scipy.stats import DegenerateDataWarning

    base = metric_values(control, metric)
    if len(base) < 2 or len(metric_values(arm, metric)) < 2 or not base.mean() > 0:
        return None
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        return compare(control, arm, metric, confidence=confidence, resamples=resamples, seed=seed)


def ab_report(
    logs: dict[str, list[Conversation]],
    control: str,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> ABReport:
    """The A/B report of logs per arm (simulated by `run_ab`, or stored sessions of a live experiment)."""
    if control not in logs:
        raise ValueError(f"the control {control!r} is not one of the arms ({', '.join(logs)})")
    arms = [name for name in logs if name != control]
    if not arms:
        raise ValueError("an A/B report needs at least one arm besides the control")
    for name, conversations in logs.items():
        if not conversations:
            raise ValueError(f"arm {name!r} has no conversations")
    means = {
        name: {m: float(v.mean()) if len(v := metric_values(c, m)) else math.nan for m in METRICS}
        for name, c in logs.items()
    }
    rated = any(not math.isnan(row["mean_rating"]) for row in means.values())
    metrics = [*TABLE3, "user_left", *(["mean_rating"] if rated else [])]
    changes = {
        arm: {m: _compare(logs[control], logs[arm], m, confidence, resamples, seed) for m in metrics} for arm in arms
    }
    return ABReport(
        control=control,
        arms=arms,
        conversations={name: len(c) for name, c in logs.items()},
        metrics=metrics,
        changes=changes,
        means=means,
        behaviour={name: behaviour_summary(c) for name, c in logs.items()},
        confidence=confidence,
        resamples=resamples,
        seed=seed,
    )
