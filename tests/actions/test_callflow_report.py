"""Call-flow report: the Mann-Whitney U test against scipy, per task and pooled, degenerate samples, the files."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
from scipy.stats import mannwhitneyu

from convoplan.actions.callflow import ConversationScore
from convoplan.actions.callflow_report import POOLED, build_report, compare
from convoplan.report import write_report

PNG = b"\x89PNG"


def fixture_scores() -> list[ConversationScore]:
    rng = random.Random(0)
    scores = []
    for i, (task, converted) in enumerate(itertools.product(["t1", "t2"], [True, False, None])):
        for k in range(12):
            distance = rng.randint(0, 5) + (2 if converted is False else 0)
            scores.append(ConversationScore(f"{i}-{k}", task, task, "test", converted, 6, distance, distance / 8, 6))
    return scores


def test_report_matches_scipy_and_writes_markdown_json_png(tmp_path: Path) -> None:
    scores = fixture_scores()
    report = build_report(scores, title="fixture", notes=["a note"])
    assert [g.group for g in report.groups] == ["t1", "t2", POOLED]
    for group in report.groups:
        members = [s for s in scores if group.group in (POOLED, s.task)]
        conv = [s.distance for s in members if s.converted is True]
        other = [s.distance for s in members if s.converted is False]
        expected = mannwhitneyu(conv, other, alternative="two-sided")
        assert group.distance.u == pytest.approx(expected.statistic)
        assert group.distance.p == pytest.approx(expected.pvalue)
        assert group.distance.superiority == pytest.approx(expected.statistic / (len(conv) * len(other)))
        assert len(group.normalised.converted) == len(conv) == 12 * (2 if group.group == POOLED else 1)

    paths = write_report(report, tmp_path / "report")
    markdown = paths["md"].read_text()
    assert (
        markdown.startswith("## fixture")
        and "- a note" in markdown
        and "| **pooled** | 24 | 24 | 6.0 / 6.0 |" in markdown
    )
    data = json.loads(paths["json"].read_text())
    assert data["groups"][0]["distance"]["p"] == pytest.approx(report.groups[0].distance.p)
    assert paths["png"].read_bytes().startswith(PNG)
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["report.json", "report.md", "report.png"]
    assert report.png(metric="normalised").startswith(PNG)


def test_compare_degenerate_samples() -> None:
    assert compare([1.0, 2.0], []).p is None and compare([1.0], []).superiority is None
    same = compare([3.0, 3.0, 3.0], [3.0, 3.0])
    assert same.p is None or same.p == pytest.approx(1.0)  # never NaN: the JSON stays valid
    single = build_report([ConversationScore("1", "all", None, None, True, 1, 0, 0.0, 1)], title="one")
    assert [g.group for g in single.groups] == ["all"]
    json.dumps(single.to_dict(), allow_nan=False)
    assert "n/a" in single.markdown()
