"""Atomic writes: whole or not at all, and no litter after a process is killed mid-write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from convoplan.atomic import atomic_folder, atomic_write, atomic_write_bytes


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
