"""A full disk ends every command in one line naming what it was writing, exit 1, no traceback, no temp file, and
what the output held before untouched (`convoplan.atomic.StorageError`, turned into a line by the CLI's group)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from safetensors import SafetensorError
from typer.testing import CliRunner

from convoplan.cli import app
from convoplan.embed import SentenceEmbedder
from convoplan.schema import Turn, write_jsonl
from convoplan.serve.store import Store
from tests.lm.conftest import synthetic

runner = CliRunner()
LM = ["--from-scratch"]
LM += [f"--set={item}" for item in ("model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.n_positions=32")]
LM += [f"--set={item}" for item in ("vocab_size=280", "epochs=1", "batch_size=8", "device=cpu", "checkpoint_every=0")]
FULL = "no space left on device"


def no_space(*args: Any, **kwargs: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as a write() to a full disk: no file named


def rust_no_space(*args: Any, **kwargs: Any) -> None:
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file below `path` (or `path` itself) and its bytes, and the names of everything beside it."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): p.read_bytes() for p in files} | {f"beside:{p.name}": b"" for p in path.parent.iterdir()}


def exported(tmp_path: Path) -> list[str]:
    """Arguments of `data export` from a store holding two sessions."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    for name in ("s1", "s2"):
        store.create_session(name, user_id="u", arm="a", mode="bot", domain="d", meta={})
        store.append_turns(name, 0, [Turn(speaker="user", text="hello"), Turn(speaker="agent", text="hi there")])
    store.close()
    return ["data", "export", "--db", f"sqlite:///{tmp_path / 'store.db'}", "--out"]


def commands(tmp_path: Path, embedder: SentenceEmbedder) -> dict[str, list[str]]:
    """The command lines of lm train, label train and data export, each but its output path."""
    data = tmp_path / "data.jsonl"
    write_jsonl(data, synthetic(24))
    label = ["label", "train", str(data), "--embedding-cache", str(embedder.cache_dir)]
    return {
        "lm": ["lm", "train", str(data), *LM, "--out"],
        "label": [*label, "--set", "epochs=2", "--set", "hidden=8", "--out"],
        "export": exported(tmp_path),
    }


def assert_refused(arguments: list[str], out: Path) -> None:
    """Run the command onto the existing `out` on a full disk: one line naming `out`, exit 1, `out` untouched."""
    before = snapshot(out)
    result = runner.invoke(app, [*arguments, str(out)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), "a traceback"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: writing {out}") and last.endswith(f"{FULL} (what it held before is left as it was)")
    assert "Traceback" not in result.output
    assert snapshot(out) == before, "the output changed, or a temp file was left beside it"


# Where a full disk is injected for each command: the writer that the command's output goes through.
INJECT: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    # the LM's weights and config are written by transformers' save_pretrained
    "lm": lambda patch: patch.setattr("transformers.PreTrainedModel.save_pretrained", no_space),
    # safetensors writes in Rust, and says only "(os error 28)" in its own exception type
    "label": lambda patch: patch.setattr("safetensors.torch.save_file", rust_no_space),
    "export": lambda patch: patch.setattr(os, "fsync", no_space),
}


@pytest.mark.bad_input("27.3 a full disk")
@pytest.mark.parametrize("command", ["lm", "label", "export"])
def test_a_full_disk_is_one_line_naming_the_output(
    command: str, tmp_path: Path, embedder: SentenceEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    arguments = commands(tmp_path, embedder)[command]
    out = tmp_path / "out" / ("export.jsonl" if command == "export" else "model")
    first = runner.invoke(app, [*arguments, str(out)])
    assert first.exit_code == 0, first.output
    with monkeypatch.context() as patch:
        INJECT[command](patch)
        assert_refused(arguments, out)


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (mounting one needs root); skipped where it cannot be mounted."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if not can_mount() or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)]).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.bad_input("27.3 a full disk")
def test_a_real_full_disk_is_one_line_for_every_command(
    small_disk: Path, tmp_path: Path, embedder: SentenceEmbedder
) -> None:
    lines = commands(tmp_path, embedder)
    outputs = {name: small_disk / name / ("export.jsonl" if name == "export" else "model") for name in lines}
    for name, arguments in lines.items():
        result = runner.invoke(app, [*arguments, str(outputs[name])])
        assert result.exit_code == 0, result.output
    with (small_disk / "filler").open("wb", buffering=0) as filler, pytest.raises(OSError) as full:
        while True:
            filler.write(b"\0" * 65536)
    assert full.value.errno == errno.ENOSPC
    for name, arguments in lines.items():
        assert_refused(arguments, outputs[name])
