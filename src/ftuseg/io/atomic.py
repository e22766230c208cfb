"""Atomic output: write to a temporary file beside the target, fsync, then rename over it.

An interrupted run therefore leaves either the old complete file or the new complete file, never a
truncated one. A run killed mid-write can leave a hidden ``.NAME.*.tmp`` beside the target; it is
never read and :func:`remove_stale_temps` tidies it away.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ftuseg.errors import FtusegError


def _os_reason(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else str(exc)


def _check_parent(path: Path) -> Path:
    """The folder that will hold ``path``, with a clear error when it is missing or not a folder."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        # a path below a regular file is "missing" for exists(); say what is really wrong
        for up in parent.parents:
            if up.exists() and not up.is_dir():
                raise FtusegError(f"{path}: {up} is a file, not a folder")
        raise FtusegError(f"{path}: output folder {parent} does not exist")
    if not parent.is_dir():
        raise FtusegError(f"{path}: {parent} is not a folder")
    return parent


def check_output_dir(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path after checking that its folder exists and is writable.

    Writability is probed by creating (and removing) a temporary file: ``os.access`` says yes to root
    even on read-only mounts and immutable folders, and a long run should fail before it starts.
    """
    path = Path(path)
    parent = _check_parent(path)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
    except OSError as exc:
        raise FtusegError(f"{path}: output folder {parent} is not writable ({_os_reason(exc)})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return path


def remove_stale_temps(folder: str | os.PathLike, name: str) -> int:
    """Delete temp files a killed process left behind for target ``name`` in ``folder``; returns the count."""
    n = 0
    for stale in Path(folder).glob(f".{glob_escape(name)}.*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()
            n += 1
    return n


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut after it must not bring the old file back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename is still atomic
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is renamed onto ``path``."""
    path = Path(path)
    parent = _check_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=parent)
    except OSError as exc:
        raise FtusegError(f"{path}: output folder {parent} is not writable ({_os_reason(exc)})") from None
    os.close(fd)
    # mkstemp creates 0600 files; give outputs the permissions a plain open() would (0666 minus umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, path)
            _fsync_dir(parent)
        except OSError as exc:  # disk full, folder removed or made read-only mid-run
            raise FtusegError(f"{path}: cannot write ({_os_reason(exc)})") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file for writing; it replaces ``path`` only if the block completes."""
    binary = "b" in mode
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if binary else encoding) as fh:
        yield fh
        fh.flush()


def atomic_save(path: str | os.PathLike, save: Callable[[Path], object], suffix: str | None = None) -> Path:
    """Call ``save(tmp_path)`` and atomically move the result to ``path``."""
    with atomic_path(path, suffix=suffix) as tmp:
        save(tmp)
    return Path(path)
