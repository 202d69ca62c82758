"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Every result file (tables, `run.json`, `config.toml`, study trials) and the converted
weights cache is rewritten while others may read it, and a process can die at any
moment (Ctrl-C, OOM killer, a preempted node). So each write goes to a temp file in the
target's own directory (`os.replace` is only atomic within one file system), is flushed
and fsync'ed, replaces the target in one rename, and then the directory is fsync'ed so
the rename itself survives a power cut.

The temp name carries the pid and random bytes and is created with `O_EXCL`, so two
processes writing the same target never share a temp file; whichever rename lands last
wins, and either version is complete. A write that raises removes its temp file. A
process killed by SIGKILL cannot clean up: it may leave a `.<name>.*.tmp` file beside
the target, but the target itself is intact.

The Parquet and JSON writers built on this live in `results/atomic.py`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _temp_path(target: Path) -> Path:
    """A fresh temp path beside `target`: hidden, and unique per process and call."""
    return target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _fsync_dir(directory: Path) -> None:
    """Persist a rename: on Linux the new directory entry is durable only after this."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file whose content replaces `path` when the block exits cleanly.

    If the block (or the flush, fsync or rename) raises, the temp file is removed and
    `path` keeps its old content (or stays absent).
    """
    target = Path(path)
    tmp = _temp_path(target)
    # 0o666 and not mkstemp's 0o600: the result should get the usual umask-derived mode.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        # BaseException too: a KeyboardInterrupt mid-write must not leave debris.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_open(path) as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace `path` with UTF-8 `text` atomically (newlines written as given)."""
    atomic_write_bytes(path, text.encode("utf-8"))
