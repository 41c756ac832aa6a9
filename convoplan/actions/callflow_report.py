"""Call-flow report: do converted conversations follow the flow more closely than not converted ones?

`build_report` takes the scores of `callflow.score_conversations` (the conversations with an outcome) per task and
pooled, and compares converted against not converted distances (`compare`: a two-sided Mann-Whitney U test) on
the raw and the normalised distance: counts, medians, means, P(conv > not) and a histogram PNG (docs/actions.md,
"Call-flow").
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from convoplan.actions.callflow import ConversationScore
from convoplan.report import figure_png

__all__ = ["CallFlowReport", "build_report", "group_report"]

Metric = Literal["distance", "normalised"]


@dataclass(frozen=True)
class Comparison:
    """Distances of converted against not converted conversations, with a two-sided Mann-Whitney U test."""

    converted: tuple[float, ...]
    not_converted: tuple[float, ...]
    u: float | None
    """U statistic of the converted sample (scipy's `mannwhitneyu(converted, not_converted)`); None if a side
    is empty."""
    p: float | None

    @property
    def superiority(self) -> float | None:
        """U / (n_converted * n_not): the chance that a converted conversation is further from the flow than a not
        converted one (ties count half). Under 0.5: converted conversations follow the flow more closely."""
        if self.u is None:
            return None
        return self.u / (len(self.converted) * len(self.not_converted))

    def to_dict(self) -> dict[str, Any]:
        def stats(values: tuple[float, ...]) -> dict[str, Any]:
            return {
                "n": len(values),
                "median": float(np.median(values)) if values else None,
                "mean": float(np.mean(values)) if values else None,
                "values": list(values),
            }

        return {
            "converted": stats(self.converted),
            "not_converted": stats(self.not_converted),
            "u": self.u,
            "p": self.p,
            "superiority": self.superiority,
        }


def compare(converted: Sequence[float], not_converted: Sequence[float]) -> Comparison:
    """Two-sided Mann-Whitney U test (scipy.stats.mannwhitneyu, its default method) of two distance samples."""
    from scipy.stats import mannwhitneyu

    a, b = tuple(float(x) for x in converted), tuple(float(x) for x in not_converted)
    if not a or not b:
        return Comparison(a, b, None, None)
    result = mannwhitneyu(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), alternative="two-sided")
    p = float(result.pvalue)
    # Identical values on both sides leave the normal approximation undefined (NaN): no evidence either way.
    return Comparison(a, b, float(result.statistic), p if math.isfinite(p) else None)


@dataclass(frozen=True)
class GroupReport:
    group: str
    distance: Comparison
    normalised: Comparison
    actions: Comparison
    """Lengths of the scored action sequences: raw distances grow with them."""


POOLED = "pooled"


@dataclass(frozen=True)
class CallFlowReport:
    """Converted against not converted distances per group (task) and pooled: a `convoplan.report.Report` (its
    chart: histograms of the raw distances)."""

    title: str
    groups: tuple[GroupReport, ...]
    notes: tuple[str, ...] = ()

    def markdown(self, level: int = 2) -> str:
        lines = [f"{'#' * level} {self.title}", ""]
        lines += [f"- {note}" for note in self.notes]
        if self.notes:
            lines.append("")
        lines += [
            "| group | converted | not converted | actions mean (conv / not) | distance median (conv / not) "
            "| distance mean (conv / not) | P(conv > not) | p | normalised mean (conv / not) | p (normalised) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for g in self.groups:
            d, n = g.distance, g.normalised
            name = f"**{g.group}**" if g.group == POOLED else g.group
            lines.append(
                f"| {name} | {len(d.converted)} | {len(d.not_converted)} | {_pair(g.actions, np.mean, '.1f')} "
                f"| {_pair(d, np.median, '.1f')} | {_pair(d, np.mean, '.2f')} | {_number(d.superiority, '.2f')} "
                f"| {_number(d.p, '.2g')} | {_pair(n, np.mean, '.3f')} | {_number(n.p, '.2g')} |"
            )
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "notes": list(self.notes),
            "groups": [
                {
                    "group": g.group,
                    "distance": g.distance.to_dict(),
                    "normalised": g.normalised.to_dict(),
                    "actions": g.actions.to_dict(),
                }
                for g in self.groups
            ],
        }

    def png(self, metric: Metric = "distance") -> bytes:
        """One panel per group: the two distributions of `metric` as shares of their own conversations, same bins."""
        from matplotlib.figure import Figure

        columns = min(5, max(1, len(self.groups)))
        rows = max(1, math.ceil(len(self.groups) / columns))
        figure = Figure(figsize=(3.2 * columns, 2.4 * rows + 0.6), layout="constrained")
        for i, group in enumerate(self.groups):
            axes = figure.add_subplot(rows, columns, i + 1)
            comparison = getattr(group, metric)
            values = comparison.converted + comparison.not_converted
            top = max(values, default=1.0)
            edges = np.arange(0, top + 2) - 0.5 if metric == "distance" else np.linspace(0.0, 1.0, 21)
            bins = [float(edge) for edge in edges]
            for sample, label, color in (
                (comparison.converted, "converted", "C2"),
                (comparison.not_converted, "not converted", "C3"),
            ):
                if sample:
                    weights = np.full(len(sample), 1.0 / len(sample))
                    axes.hist(
                        sample, bins=bins, weights=weights, alpha=0.5, color=color, label=f"{label} ({len(sample)})"
                    )
            p = "" if comparison.p is None else f", p={comparison.p:.2g}"
            axes.set_title(f"{group.group}{p}", fontsize=9)
            axes.tick_params(labelsize=7)
            axes.legend(fontsize=6, frameon=False)
        figure.suptitle(f"{self.title}: {'edit distance' if metric == 'distance' else 'normalised edit distance'}")
        figure.supylabel("share of conversations", fontsize=9)
        return figure_png(figure, dpi=100)


def _pair(comparison: Comparison, statistic: Callable[[Any], Any], spec: str) -> str:
    sides = (comparison.converted, comparison.not_converted)
    return " / ".join(format(float(statistic(side)), spec) if side else "n/a" for side in sides)


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def group_report(name: str, scores: Sequence[ConversationScore]) -> GroupReport:
    """Converted against not converted (`compare`) on both distances, over the scores with an outcome."""

    def sides(metric: Callable[[ConversationScore], float]) -> Comparison:
        return compare(
            [metric(s) for s in scores if s.converted is True], [metric(s) for s in scores if s.converted is False]
        )

    return GroupReport(name, sides(lambda s: s.distance), sides(lambda s: s.normalised), sides(lambda s: s.actions))


def build_report(
    scores: Iterable[ConversationScore],
    *,
    title: str,
    by_task: bool = True,
    pooled: bool = True,
    notes: Sequence[str] = (),
) -> CallFlowReport:
    """The report over the scores with an outcome (`converted` not None): one group per task (the flow's name where
    a score has no task) with `by_task`, and a pooled group over all of them with `pooled` where that adds a row
    (more than one task), or where there is no task group."""
    known = [s for s in scores if s.converted is not None]
    groups: list[GroupReport] = []
    if by_task:
        members: dict[str, list[ConversationScore]] = defaultdict(list)
        for s in known:
            members[s.task if s.task is not None else s.flow].append(s)
        groups = [group_report(name, members[name]) for name in sorted(members)]
    if (pooled and len(groups) > 1) or not groups:
        groups.append(group_report(POOLED, known))
    return CallFlowReport(title, tuple(groups), tuple(notes))
