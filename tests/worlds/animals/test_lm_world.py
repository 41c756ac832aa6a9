"""The LM-in-the-world demo: the LM trained on the animals world's logs composes turns as a content provider."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from convoplan.lm.generate import SamplingConfig
from convoplan.lm.provider import LMProviderConfig
from convoplan.worlds.animals.lm_world import LMWorldConfig, lm_world_demo, transcript
from tests.conftest import TINY_WORLD_LM

SHORT = LMProviderConfig(sampling=SamplingConfig(do_sample=False, max_new_tokens=10), keep_unfinished=True)


def test_the_demo_trains_on_the_world_and_composes_with_the_lm(tmp_path: Path) -> None:
    lines: list[str] = []
    config = LMWorldConfig(
        conversations=10,
        demo_conversations=1,
        max_turns=3,
        lm_only=True,
        lm=TINY_WORLD_LM,
        provider=replace(SHORT, check=False),  # a few steps' LM states nothing the guide says: nothing would pass
    )
    demo = lm_world_demo(tmp_path / "demo", config, report=lines.append)
    assert demo.model.is_dir() and demo.logs.is_file() and demo.demo.is_file() and len(lines) == 3
    assert len(demo.conversations) == 1 and demo.offered > 0 and demo.chosen == demo.steps > 0
    shown = transcript(demo.conversations[0])
    assert shown.startswith("user: ") and "by lm]" in shown
