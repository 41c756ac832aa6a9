"""The model folder every trained thing shares: written whole, read back with one error shape."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from convoplan.checkpoint import check_replaceable, load_weights, read_config, training_record, write_folder


def test_a_folder_holds_the_format_config_weights_and_extra_files(tmp_path: Path) -> None:
    module = nn.Linear(3, 2)
    folder = write_folder(
        tmp_path / "model",
        "convoplan-test/1",
        {"sizes": (3, 2), "score": float("nan"), "count": torch.tensor(4)},
        module,
        extra=lambda temp: (temp / "notes.txt").write_text("hi"),
    )
    config = read_config(folder, "convoplan-test/1", "test model")
    assert config == {"format": "convoplan-test/1", "sizes": [3, 2], "score": None, "count": 4}  # strict JSON
    assert (folder / "notes.txt").read_text() == "hi"
    fresh = nn.Linear(3, 2)
    load_weights(folder, fresh)
    assert all(
        torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), module.state_dict().values(), strict=True)
    )


def test_a_failed_write_leaves_the_previous_folder(tmp_path: Path) -> None:
    write_folder(tmp_path / "model", "f/1", {"version": 1})

    def crash(temp: Path) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_folder(tmp_path / "model", "f/1", {"version": 2}, extra=crash)
    assert read_config(tmp_path / "model", "f/1", "x")["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


@pytest.mark.bad_input("6 checkpoint configs validated")
def test_every_failure_is_one_value_error_naming_the_file(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "model", "convoplan-test/1", {}, nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"model/config\.json: not a convoplan DM \(format 'convoplan-test/1'"):
        read_config(folder, "convoplan-dm/1", "DM")
    with pytest.raises(ValueError, match=r"nothing/config\.json: not a convoplan DM \(no such file\)"):
        read_config(tmp_path / "nothing", "convoplan-dm/1", "DM")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json: not a convoplan DM \("):
        read_config(folder, "convoplan-test/1", "DM")
    with pytest.raises(ValueError, match=r"model/model\.safetensors: cannot load the weights"):
        load_weights(folder, nn.Linear(4, 2))  # the wrong shapes
    (folder / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ValueError, match=r"model/model\.safetensors: cannot load the weights"):
        load_weights(folder, nn.Linear(3, 2))


@dataclass
class Config:
    lr: float = 0.1


def test_the_training_record_has_the_same_keys_for_every_model() -> None:
    record = training_record(Config(), [2.0, 1.0, 0.5], 3.5, transitions=10)
    assert record == {
        "config": {"lr": 0.1},
        "steps": 3,
        "first_loss": 2.0,
        "final_loss": 0.5,
        "seconds": 3.5,
        "transitions": 10,
    }
    empty = training_record(Config(), [], 0.0)
    assert empty["steps"] == 0 and empty["first_loss"] is None and math.isfinite(empty["seconds"])
    json.dumps(empty, allow_nan=False)


@pytest.mark.bad_input("27.6 smaller ones: --out, modes, BOM, --host, empty splits")
def test_a_folder_holding_another_kind_of_model_is_not_replaceable(tmp_path: Path) -> None:
    check_replaceable(tmp_path / "missing", "convoplan-dm/1", "DM")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".model.123.abc.tmp").mkdir()  # the leftover of a write in progress: still empty
    check_replaceable(tmp_path / "empty", "convoplan-dm/1", "DM")
    dm = write_folder(tmp_path / "dm", "convoplan-dm/1", {})
    check_replaceable(dm, "convoplan-dm/1", "DM")
    labeller = write_folder(tmp_path / "labeller", "convoplan-labeller/1", {})
    with pytest.raises(ValueError) as caught:
        check_replaceable(labeller, "convoplan-dm/1", "DM")
    assert str(caught.value) == (
        f"{labeller} holds another kind of model: labeller (convoplan-labeller/1); the DM would replace it, "
        "choose another"
    )
    run = tmp_path / "lm"  # a language model's interrupted run: its checkpoint is a subfolder, tagged in its own file
    write_folder(run / "checkpoint", "convoplan-lm/1", {}, config_file="convoplan-lm.json")
    check_replaceable(run, "convoplan-lm/1", "language model")
    with pytest.raises(ValueError, match="holds another kind of model: lm \\(convoplan-lm/1\\)"):
        check_replaceable(run, "convoplan-nba/1", "next-action model")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="mine exists and is not a DM folder: the DM would replace it"):
        check_replaceable(tmp_path / "mine", "convoplan-dm/1", "DM")
