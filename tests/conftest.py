"""Shared fixtures: the real corpora in ../shared/data, read once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from convoplan.schema import Conversation

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def corpus_folder(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(
            f"real corpus not available: {folder} is absent (CI and dev machines have ../shared beside the repo)"
        )
    return folder


@pytest.fixture(scope="session")
def persuasion_dir() -> Path:
    return corpus_folder("persuasionforgood")


@pytest.fixture(scope="session")
def star_dir() -> Path:
    return corpus_folder("star")


@pytest.fixture(scope="session")
def persuasion(persuasion_dir: Path) -> list[Conversation]:
    from convoplan.corpora import read_persuasion

    return read_persuasion(persuasion_dir)


@pytest.fixture(scope="session")
def star(star_dir: Path) -> list[Conversation]:
    from convoplan.corpora import read_star

    return read_star(star_dir)
