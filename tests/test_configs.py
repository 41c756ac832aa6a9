from __future__ import annotations

import dataclasses
import importlib
import json
import math
import pkgutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from annotated_types import Ge, Gt, Interval, Le, Lt
from typer.testing import CliRunner

import convoplan
from convoplan.cli import app
from convoplan.configs import (
    UNBOUNDED,
    Config,
    Range,
    apply_overrides,
    config_classes,
    config_from_dict,
    describe,
    reference,
    unranged_fields,
)
from convoplan.serve.artifacts import read_manifest

ROOT = Path(__file__).resolve().parent.parent


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
    rows = {path: (value, doc) for path, value, _, doc in describe(Outer())}
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


# --- ranges (issue 27) -----------------------------------------------------------------------------------------------


@dataclass
class Net(Config):
    hidden: Annotated[int, Ge(1)] = 8
    """Units."""
    head: tuple[Annotated[int, Ge(1)], ...] = (4,)
    dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1


@dataclass
class Train(Config):
    network: Net = field(default_factory=Net)
    steps: Annotated[int, Ge(1)] = 10
    top_p: Annotated[float, Interval(gt=0, le=1)] = 0.9
    lr: Annotated[float, Gt(0)] | None = None
    reward: Annotated[float, UNBOUNDED] = -1.0
    weights: Annotated[tuple[float, float], Ge(0)] = (1.0, 2.0)
    """A range on a tuple applies to each item."""
    name: str = "x"


@pytest.mark.bad_input("27.4 settings nobody checks")
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "steps: must be >= 1, got 0"),
        ({"top_p": 0.0}, r"top_p: must be in \(0, 1\], got 0\.0"),
        ({"top_p": 1.5}, r"top_p: must be in \(0, 1\], got 1\.5"),
        ({"lr": 0.0}, r"lr: must be > 0, got 0\.0"),
        ({"reward": math.nan}, "reward: must be a finite number, got nan"),
        ({"reward": -math.inf}, "reward: must be a finite number, got -inf"),
        ({"lr": math.inf}, "lr: must be a finite number, got inf"),
        ({"weights": (1.0, -1.0)}, r"weights\[1\]: must be >= 0, got -1\.0"),
    ],
)
def test_a_config_out_of_range_cannot_be_built(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        Train(**changes)
    with pytest.raises(ValueError, match=f"^{message}$"):  # a copy is built too
        dataclasses.replace(Train(), **changes)


def test_values_in_range_and_none_are_accepted() -> None:
    config = Train(steps=1, top_p=1.0, lr=None, reward=-1e9, weights=(0.0, 0.0), network=Net(head=()))
    assert config.top_p == 1.0 and config.lr is None
    with pytest.raises(ValueError, match=r"^head\[1\]: must be >= 1, got 0$"):
        Net(head=(4, 0))


def test_set_names_the_override_and_the_field_path() -> None:
    with pytest.raises(ValueError, match=r"^--set steps=-5: steps: must be >= 1, got -5$"):
        apply_overrides(Train(), ["steps=-5"])
    with pytest.raises(ValueError, match=r"^--set network\.hidden=0: network\.hidden: must be >= 1, got 0$"):
        apply_overrides(Train(), ["network.hidden=0"])
    with pytest.raises(ValueError, match=r"^--set network\.dropout=nan: network\.dropout: must be a finite number"):
        apply_overrides(Train(), ["network.dropout=nan"])
    with pytest.raises(ValueError, match=r"^--set weights=1,-2: weights\[1\]: must be >= 0, got -2\.0$"):
        apply_overrides(Train(), ["weights=1,-2"])
    assert apply_overrides(Train(), ["lr=none", "network.dropout=0"]) == Train(lr=None, network=Net(dropout=0.0))


@pytest.mark.bad_input("27.4 settings nobody checks")
@pytest.mark.parametrize(
    ("saved", "name", "message"),
    [
        ({"network": {"hidden": 0}}, "", r"^path/config\.json: network\.hidden: must be >= 1, got 0$"),
        ({"network": {"hidden": 0}}, "config", r"^path/config\.json: config\.network\.hidden: must be >= 1, got 0$"),
        ({"top_p": math.nan}, "", r"^path/config\.json: top_p: must be a finite number, got nan$"),
        (json.loads('{"reward": Infinity}'), "", r"^path/config\.json: reward: must be a finite number, got inf$"),
        ({"weights": [1, -1]}, "", r"^path/config\.json: weights\[1\]: must be >= 0, got -1\.0$"),
    ],
)
def test_a_saved_config_out_of_range_names_the_file_and_field(saved: object, name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_dict(Train, saved, "path/config.json", name)


def test_show_config_rows_carry_each_range() -> None:
    rows = {row.path: row.range for row in describe(Train())}
    assert rows == {
        "network.hidden": ">= 1",
        "network.head": "each >= 1",
        "network.dropout": "[0, 1)",
        "steps": ">= 1",
        "top_p": "(0, 1]",
        "lr": "> 0, or none",
        "reward": "any",
        "weights": "each >= 0",
        "name": "",
    }


@pytest.mark.parametrize(
    ("metadata", "text", "inside", "outside"),
    [
        ([Ge(1)], ">= 1", [1, 5], [0, 0.5]),
        ([Gt(0)], "> 0", [1e-9], [0, -1]),
        ([Le(20)], "<= 20", [20, -3], [21]),
        ([Lt(1)], "< 1", [0.999], [1]),
        ([Interval(ge=0, lt=1)], "[0, 1)", [0, 0.5], [1, -0.1]),
        ([Ge(1), Le(20)], "[1, 20]", [1, 20], [0, 21]),
        ([Ge(0), Ge(2)], ">= 2", [2], [1]),  # the tighter bound
        ([Interval(ge=1e-5)], ">= 1e-05", [1e-5], [1e-6]),
        ([UNBOUNDED], "any", [-1e300, 0, 1e300], []),
    ],
)
def test_a_range_reads_and_checks_as_declared(
    metadata: list[object], text: str, inside: list[float], outside: list[float]
) -> None:
    declared = Range.declared(metadata)
    assert declared is not None and str(declared) == text
    assert all(value in declared for value in inside) and not any(value in declared for value in outside)
    assert Range.declared(["a comment"]) is None


def test_a_number_without_a_range_is_found() -> None:
    assert unranged_fields(Outer) == ["gamma"] and unranged_fields(Inner) == ["hidden", "head"]
    assert unranged_fields(Train) == [] and unranged_fields(Net) == []


def _named_configs() -> list[type[Any]]:
    """Every dataclass named *Config defined in the package (each module imported; `__main__` ones run)."""
    found = []
    for module in pkgutil.walk_packages(convoplan.__path__, "convoplan."):
        if module.name.endswith(".__main__"):
            continue
        for value in vars(importlib.import_module(module.name)).values():
            named = isinstance(value, type) and value.__name__.endswith("Config")
            if named and dataclasses.is_dataclass(value) and value.__module__ == module.name:
                found.append(value)
    return found


@pytest.mark.bad_input("27.4 settings nobody checks")
def test_every_config_of_the_package_uses_the_base_and_declares_the_range_of_each_number() -> None:
    named = _named_configs()
    assert len(named) >= 31
    assert [cls.__qualname__ for cls in named if not issubclass(cls, Config)] == []
    every = {*named, *config_classes(private=True)}  # and what else is read with config_from_dict (serve.json)
    missing = {f"{cls.__module__}.{cls.__qualname__}": unranged_fields(cls) for cls in every}
    assert {name: fields for name, fields in missing.items() if fields} == {}, "annotate with a range (configs.py)"
    for cls in every:  # and the defaults are in range: every config builds with its defaults
        if all(
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            for f in dataclasses.fields(cls)
        ):
            cls()


def test_the_config_reference_is_current() -> None:
    text = reference(config_classes())
    assert (ROOT / "docs" / "config.md").read_text() == text, "run .venv/bin/python bench/config_reference.py"
    assert "| `steps` | `1500` | `>= 1` | Optimiser steps. |" in text  # QConfig's
    assert "| `model_workers` | the CPU cores | `>= 1` |" in text  # not this machine's count


runner = CliRunner()


@pytest.mark.bad_input("27.4 settings nobody checks")
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["dm", "train", "{logs}", "--out", "{out}", "--set", "steps=-5"],
            "--set steps=-5: steps: must be >= 1, got -5",
        ),
        (
            ["dm", "pipeline", "--out", "{out}", "--set", "q.steps=-5"],
            "--set q.steps=-5: q.steps: must be >= 1, got -5",
        ),
        (
            ["label", "train", "{logs}", "--out", "{out}", "--set", "epochs=0"],
            "--set epochs=0: epochs: must be >= 1, got 0",
        ),
        (
            ["nba", "train", "{logs}", "--out", "{out}", "--set", "batch_size=-1"],
            "--set batch_size=-1: batch_size: must be >= 1, got -1",
        ),
        (
            ["nba", "train", "{logs}", "--out", "{out}", "--kind", "outcome", "--set", "q.gamma=nan"],
            "--set q.gamma=nan: q.gamma: must be a finite number, got nan",
        ),
        (
            ["lm", "train", "{logs}", "--out", "{out}", "--set", "vocab_size=0"],
            "--set vocab_size=0: vocab_size: must be >= 260, got 0",
        ),
        (
            ["serve", "--artifacts", "{logs}", "--db", "sqlite:///{out}/serve.db", "--set", "max_body_bytes=-1"],
            "--set max_body_bytes=-1: max_body_bytes: must be >= 1024, got -1",
        ),
        (
            ["serve", "--artifacts", "{logs}", "--db", "sqlite:///{out}/serve.db", "--set", "max_turns=0"],
            "--set max_turns=0: max_turns: must be >= 1, got 0",
        ),
        (
            ["suggest", "--model", "{out}", "--conversation", "{logs}", "--n", "100000"],
            "n: must be in [1, 20], got 100000",
        ),
        (["world", "simulate", "--out", "{out}/logs.jsonl", "--seed", "-1"], "seed: must be >= 0, got -1"),
    ],
)
def test_a_value_out_of_range_on_the_command_line_exits_2_before_any_work(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    out, logs = tmp_path / "out", tmp_path / "logs.jsonl"  # no logs: the config is checked before they are read
    result = runner.invoke(app, [a.format(out=out, logs=logs) for a in arguments])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {message}\n"
    assert not out.exists()  # nothing written


def test_show_config_prints_the_range_column(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dm", "train", str(tmp_path / "logs.jsonl"), "--out", str(tmp_path), "--show-config"])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "field" in line)
    assert [word for word in ("field", "value", "range", "meaning") if word in header] == [
        "field",
        "value",
        "range",
        "meaning",
    ]
    assert ">= 1" in result.stdout and "[0, 1)" in result.stdout


@pytest.mark.bad_input("27.4 settings nobody checks")
@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("NaN, NaN", r"arms\.a\.weight: must be a finite number, got nan"),  # every new session was a 500
        ("NaN, 1", r"arms\.a\.weight: must be a finite number, got nan"),  # every user went to arm b
        ("Infinity, 1", r"arms\.a\.weight: must be a finite number, got inf"),
        ("-1, 1", r"arms\.a\.weight: must be >= 0, got -1"),
        ('"1", 1', r"arms\.a\.weight: expected a number, got \"1\""),
        ("0, 0", "arms: the weights must add up to a positive finite number, got 0"),
        ("1e308, 1e308", "arms: the weights must add up to a positive finite number, got inf"),
    ],
)
def test_arm_weights_in_serve_json_are_checked_at_load(tmp_path: Path, weights: str, message: str) -> None:
    a, b = weights.split(", ")
    path = tmp_path / "serve.json"
    path.write_text(
        f'{{"arms": {{"a": {{"dm": "heuristic", "weight": {a}}}, "b": {{"dm": "greedy", "weight": {b}}}}}}}'
    )
    with pytest.raises(ValueError, match=f"^{path}: {message}") as error:
        read_manifest(tmp_path)
    assert "\n" not in str(error.value)


def test_a_valid_serve_json_reads_as_before(tmp_path: Path) -> None:
    (tmp_path / "serve.json").write_text(
        '{"arms": {"a": {"dm": "heuristic", "weight": 3}, "b": {"dm": "greedy"}}, "control": "b", "lm_provider": false}'
    )
    manifest = read_manifest(tmp_path)
    assert manifest.arms["a"].weight == 3.0 and manifest.arms["b"].weight == 1.0 and manifest.control == "b"
    (tmp_path / "serve.json").write_text('{"world": "x"}')
    with pytest.raises(ValueError, match=r"serve\.json: arms: missing"):
        read_manifest(tmp_path)
