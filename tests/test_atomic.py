"""Atomic writes: whole or not at all, and no litter after a process is killed mid-write."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import SafetensorError

from convoplan.atomic import StorageError, atomic_folder, atomic_write, atomic_write_bytes, storage_errno


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


def killed_mid_write(target: Path, folder: bool = False) -> None:
    """A process that dies by SIGKILL inside an atomic write of `target` (it cannot clean up)."""
    block = "(temp / 'x').write_text('partial')" if folder else "temp.write('partial'); temp.flush()"
    opener = "atomic_folder" if folder else "atomic_write"
    code = (
        f"import os, signal\nfrom convoplan.atomic import {opener}\n"
        f"with {opener}({str(target)!r}) as temp:\n    {block}\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], timeout=120)
    assert completed.returncode == -signal.SIGKILL


@pytest.mark.bad_input("9 no litter after a crash")
@pytest.mark.parametrize("folder", [False, True], ids=["file", "folder"])
def test_the_next_write_removes_what_a_killed_writer_left(tmp_path: Path, folder: bool) -> None:
    target = tmp_path / "out"
    killed_mid_write(target, folder)
    assert [p.name.startswith(".out.") and p.name.endswith(".tmp") for p in tmp_path.iterdir()] == [True]
    if folder:
        with atomic_folder(target) as temp:
            (temp / "x").write_text("whole")
    else:
        atomic_write_bytes(target, b"whole")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.bad_input("9 no litter after a crash")
def test_a_live_writers_temp_file_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    other = tmp_path / "other.txt"
    live = tmp_path / f".out.txt.{os.getpid()}.abcdefgh.tmp"  # this process is alive: a concurrent write
    live.write_text("in progress")
    unrelated = tmp_path / f".other.txt.{2**22 + 12345}.abcdefgh.tmp"  # another target's temp: not ours to judge
    unrelated.write_text("x")
    with atomic_write(target) as stream:
        stream.write("done")
    assert live.exists() and unrelated.exists() and target.read_text() == "done" and not other.exists()


@pytest.mark.bad_input("27.3 a full disk")
def test_a_write_the_storage_refuses_names_the_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target, folder = tmp_path / "out.txt", tmp_path / "model"
    target.write_text("before")

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch, pytest.raises(StorageError) as caught:
        patch.setattr(os, "fsync", full)
        with atomic_write(target) as stream:
            stream.write("after")
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(target))
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(StorageError) as caught, atomic_folder(folder):  # safetensors' Rust error, by its text
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(folder))
    with pytest.raises(FileNotFoundError) as other, atomic_write(target):  # any other error passes unchanged
        open(tmp_path / "missing")  # noqa: SIM115
    assert other.value.filename == str(tmp_path / "missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"] and target.read_text() == "before"
    assert storage_errno(OSError(errno.EDQUOT, "quota")) == errno.EDQUOT and storage_errno(ValueError("x")) is None


@pytest.mark.bad_input("27.6 smaller ones: --out, modes, BOM, --host, empty splits")
def test_what_an_atomic_write_leaves_has_a_plain_files_mode(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "plain").mkdir()
    plain_file, plain_folder = ((tmp_path / name).stat().st_mode & 0o7777 for name in ("plain.txt", "plain"))
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    with atomic_folder(tmp_path / "model") as temp:
        save_file({"w": torch.zeros(2)}, temp / "model.safetensors")  # safetensors creates it 0600
        (temp / "sub").mkdir(mode=0o700)
        (temp / "sub" / "tokenizer.json").write_text("{}")
    written = [
        tmp_path / "a.bin",
        tmp_path / "model" / "model.safetensors",
        tmp_path / "model" / "sub" / "tokenizer.json",
    ]
    assert [path.stat().st_mode & 0o7777 for path in written] == [plain_file] * 3
    folders = [tmp_path / "model", tmp_path / "model" / "sub"]
    assert [path.stat().st_mode & 0o7777 for path in folders] == [plain_folder] * 2
