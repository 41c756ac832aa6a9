from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

import pytest

from convoplan.configs import apply_overrides, config_from_dict, describe


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


def test_a_saved_config_reads_back_as_it_was() -> None:
    config = Outer(algorithm="caql", gamma=0.5, tag="x", fast=True, inner=Inner(hidden=8, head=(4,)))
    saved = json.loads(json.dumps(asdict(config)))  # tuples come back as lists
    assert config_from_dict(Outer, saved) == config
    assert config_from_dict(Outer, {"gamma": 1}) == Outer(gamma=1.0)  # left out: the default; an int is a number


@pytest.mark.bad_input("6 checkpoint configs validated")
@pytest.mark.parametrize(
    ("saved", "message"),
    [
        ({"inner": {"hidden": "200"}}, r"cfg\.json: inner\.hidden: expected an integer, got \"200\""),
        ({"inner": {"hidden": True}}, r"inner\.hidden: expected an integer, got true"),
        ({"fast": "no"}, r"fast: expected true or false"),
        ({"algorithm": "dqn"}, r"algorithm: expected one of \"saql\", \"caql\""),
        ({"inner": {"head": [4, "x"]}}, r"inner\.head\[1\]: expected an integer"),
        ({"inner": "small"}, r"inner: expected an object"),
        ({"gamma": 0.9, "nope": 1}, r"nope: no such field"),
        ([1, 2], r"config: expected an object"),
    ],
)
def test_a_wrong_type_in_a_saved_config_names_the_file_and_field(saved: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_dict(Outer, saved, "cfg.json")
