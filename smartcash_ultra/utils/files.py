"""Atomic file writes: every file this plugin writes appears whole under its final name, or not at all."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, data: bytes) -> int:
    """Write ``data`` to a temp file beside ``path``, fsync it, then rename it over ``path``.

    A process killed mid-write leaves the previous file (or none) in place, never a truncated one, and no temp file
    survives a failed write.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            n = f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n
