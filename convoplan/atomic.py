"""Atomic file writes: a crash or an error mid-write never leaves a half-written file behind.

A write goes to a hidden temp file (or folder) beside its target, named after the target and the writing process
(`.NAME.PID.XXXXXXXX.tmp`), and is renamed over the target when complete. A process killed mid-write (SIGKILL, OOM)
cannot remove its temp file; the next write of the same target removes the temp files of processes that no longer
exist, so crashes leave no litter that grows.

A write the storage refuses (no space left on device, over quota, a read-only file system) raises `StorageError`
naming the target, whatever raised it underneath (a Python file, or safetensors' Rust writer, whose errors carry
only "(os error 28)" in their text); the command line turns it into one line (`convoplan.cli.common`).

What an atomic write leaves has the permissions a plain `open()` or `mkdir` would give under the current umask,
though `tempfile` (and safetensors) create files readable by their owner only.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["STORAGE_ERRNOS", "StorageError", "atomic_folder", "atomic_write", "atomic_write_bytes", "storage_errno"]

# mkstemp creates files readable by the owner only; give the result the mode a plain open() would.
_UMASK = os.umask(0)
os.umask(_UMASK)

STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
"""The errors of a storage that refuses writes: no space left on device, disk quota exceeded, read-only."""
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class StorageError(OSError):
    """A write the storage refused (`STORAGE_ERRNOS`); `filename` is the file or folder being written, and what it
    held before is left as it was."""


def storage_errno(error: BaseException) -> int | None:
    """The errno of `error` if it says the storage refused a write (`STORAGE_ERRNOS`), else None. An OSError says it
    by its errno; libraries written in Rust (safetensors, tokenizers) raise their own types, saying "(os error N)"."""
    if isinstance(error, OSError):
        code = error.errno
    else:
        found = _RUST_OS_ERROR.search(str(error)) if isinstance(error, Exception) else None
        code = int(found.group(1)) if found else None
    return code if code in STORAGE_ERRNOS else None


@contextmanager
def _storage_errors_name(target: Path) -> Iterator[None]:
    """Raise a write the storage refuses inside the block as a StorageError naming `target` (an outer atomic write
    renames the error of one nested in it: the outermost target is what the caller asked for)."""
    try:
        yield
    except Exception as error:
        code = storage_errno(error)
        if code is None:
            raise
        raise StorageError(code, os.strerror(code), str(target)) from error


def _plain_modes(folder: Path) -> None:
    """Give everything below `folder` the mode a plain open() or mkdir would have given it under the umask (a
    writer such as safetensors' save_file creates its files readable by the owner only); execute bits are kept."""
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), 0o777 & ~_UMASK)
        for name in files:
            path = os.path.join(root, name)
            mode = os.lstat(path).st_mode
            if not os.path.islink(path):
                os.chmod(path, (0o666 | (mode & 0o111)) & ~_UMASK)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove the temp files and folders that writes of `target` by processes now dead left beside it; return
    them. Temps of live processes (a concurrent writer) are left alone."""
    removed = []
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        pid = leftover.name[len(target.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


@contextmanager
def _replace_on_success(path: str | Path) -> Iterator[int]:
    """Yield a descriptor of a temp file beside `path`; rename it over `path` only if the block succeeds."""
    target = Path(path)
    with _storage_errors_name(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=_temp_prefix(target), suffix=".tmp")
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)
            yield fd
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


@contextmanager
def atomic_write(path: str | Path, *, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """Open `path` for writing text; the file appears, complete and fsynced, only when the block exits cleanly.

    On an exception the temp file is removed and whatever `path` held before is untouched.
    """
    with _replace_on_success(path) as fd, os.fdopen(fd, "w", encoding=encoding, newline="\n") as stream:
        yield stream
        stream.flush()
        os.fsync(stream.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with _replace_on_success(path) as fd, os.fdopen(fd, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `path` to fill; on a clean exit it replaces `path` (a checkpoint appears whole).

    An existing `path` is moved aside first and deleted only once the new folder is in place.
    """
    target = Path(path)
    with _storage_errors_name(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)
        temp = Path(tempfile.mkdtemp(dir=target.parent, prefix=_temp_prefix(target), suffix=".tmp"))
        temp.chmod(0o777 & ~_UMASK)  # mkdtemp makes it private; the folder should read as a plain mkdir's would
        try:
            yield temp
            _plain_modes(temp)
            old = target.with_name(f".{target.name}.old") if target.exists() else None
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
                os.replace(target, old)
            os.replace(temp, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
