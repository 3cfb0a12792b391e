"""Atomic file writes: every file this plugin writes appears whole under its final name, or not at all."""

from __future__ import annotations

import hashlib
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


FINGERPRINT_BLOCKS, FINGERPRINT_BLOCK = 16, 4096
"""Content sampled by :func:`file_fingerprint`: 16 blocks of 4 KiB (64 KiB), the first one holding any file header."""


def file_fingerprint(path: str | Path) -> str:
    """Return 16 hex digits that change with a file's size, modification time or (sampled) content.

    Size and mtime alone miss a file replaced by one of the same size that carries the old mtime (``cp -p``,
    ``rsync -a``, ``tar``, timestamps of coarse file systems): every SmartCash array of one shape has the same size.
    The content is sampled, not read whole: the first block (an array's header: shape and dtype) and blocks spread
    evenly to the end, so a different image of the same shape almost surely differs in one of them, at the cost
    of 16 small reads instead of the whole file (the figures are in ``docs/benchmarks.md``).
    """
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        digest = hashlib.sha1(f"{st.st_size}:{st.st_mtime_ns}".encode(), usedforsecurity=False)
        if st.st_size <= FINGERPRINT_BLOCKS * FINGERPRINT_BLOCK:
            digest.update(f.read())
        else:
            for k in range(FINGERPRINT_BLOCKS):
                f.seek(k * (st.st_size - FINGERPRINT_BLOCK) // (FINGERPRINT_BLOCKS - 1))
                digest.update(f.read(FINGERPRINT_BLOCK))
    return digest.hexdigest()[:16]
