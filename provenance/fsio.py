"""Durable file-system writes: fsync a file or a folder, replace a small file atomically.

A rename of a file whose bytes were never flushed can leave an empty file after a power cut, and
a rename is itself only durable once its folder is flushed. Publishing, the index's snapshots and
the keys all write through these helpers so that the rule is written once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO


def fsync_file(path: Path) -> None:
    """Flush a written file to stable storage (a rename of an unflushed file can leave it empty)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_handle(handle: IO[bytes] | IO[str]) -> None:
    """Flush an open file's buffers, then the file itself, to stable storage."""
    handle.flush()
    os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries, so that a rename in it survives a power cut."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # platforms without directory handles: the rename is as durable as they allow
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_text(path: Path, text: str, *, temp: Path) -> None:
    """Write `text` to `temp`, flush it, and rename it over `path` (readers see old or new, never half)."""
    with open(temp, "w") as handle:
        handle.write(text)
        fsync_handle(handle)
    os.replace(temp, path)
