"""Atomic file writes: every file this plugin writes appears whole under its final name, or not at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_target(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path`` for a writer that takes a file name; then fsync it and rename it over ``path``.

    A process killed mid-write leaves the previous file (or none) in place, never a truncated one, and no temp file
    survives a failed write.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes) -> int:
    """Write ``data`` to ``path`` through :func:`atomic_target`."""
    with atomic_target(path) as tmp, open(tmp, "wb") as f:
        return f.write(data)
