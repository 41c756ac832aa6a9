from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from convoplan.atomic import atomic_folder
from convoplan.configs import apply_overrides, describe


@dataclass
class Inner:
    hidden: int = 200
    """GRU units."""
    head: tuple[int, ...] = (256, 256)
    """MLP sizes."""


@dataclass
class Outer:
    algorithm: Literal["saql", "caql"] = "saql"
    """Which Q-learning."""
    gamma: float = 0.9
    """Discount."""
    tag: str | None = None
    """A label."""
    fast: bool = False
    inner: Inner = field(default_factory=Inner)


def test_overrides_are_parsed_by_field_type() -> None:
    config = apply_overrides(Outer(), ["gamma=0.5", "algorithm=caql", "inner.head=8,4", "fast=true", "tag=none"])
    assert config == Outer(algorithm="caql", gamma=0.5, inner=Inner(head=(8, 4)), fast=True, tag=None)
    assert Outer().gamma == 0.9  # the original is untouched


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("gama=1", "no field 'gama' here"),
        ("algorithm=dqn", "expected one of saql, caql"),
        ("gamma=fast", "cannot read 'fast' as float"),
        ("fast=maybe", "expected true or false"),
        ("gamma", "expected field=value"),
    ],
)
def test_bad_overrides_say_what_is_wrong(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_overrides(Outer(), [override])


def test_describe_lists_every_leaf_with_its_docstring() -> None:
    rows = {path: (value, doc) for path, value, doc in describe(Outer())}
    assert rows["inner.hidden"] == ("200", "GRU units.") and rows["gamma"] == ("0.9", "Discount.")
    assert rows["fast"] == ("false", "")


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    with atomic_folder(target) as temp:
        (temp / "a.txt").write_text("one")
    with pytest.raises(RuntimeError), atomic_folder(target) as temp:
        (temp / "a.txt").write_text("two")
        raise RuntimeError("crash mid-write")
    assert (target / "a.txt").read_text() == "one"
    with atomic_folder(target) as temp:
        (temp / "b.txt").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"], "no temp or old folders left behind"
