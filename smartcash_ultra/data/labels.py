"""YOLO detection label text: parse and check ``cls xc yc w h`` rows, and format them as SmartCash writes them.

One parser serves the dataset verifier and the converter, so a label file is judged the same way wherever it is read;
each problem names the line it is on.
"""

from __future__ import annotations

import math

import numpy as np

FIELDS = ("cls", "xc", "yc", "w", "h")
COORD_TOLERANCE = 1e-6
"""Coordinates up to ``1 + COORD_TOLERANCE`` pass as 1 (rounding in files written with 6 decimals)."""


def parse_label_rows(text: str, num_cls: int) -> np.ndarray:
    """Parse YOLO detection rows into an ``(n, 5)`` float64 array ``cls xc yc w h``; blank lines are ignored.

    Raises:
        ValueError: for the first bad row, naming its line: wrong field count, a non-number, NaN/inf, a class id that
            is not an integer in ``0..num_cls-1``, or a coordinate outside 0..1.
    """
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(FIELDS):
            raise ValueError(f"label line {number} has {len(fields)} fields, expected 5 ({' '.join(FIELDS)})")
        try:
            row = [float(v) for v in fields]
        except ValueError:
            bad = next(v for v in fields if not _is_number(v))
            raise ValueError(f"label line {number}: {bad!r} is not a number") from None
        if not all(math.isfinite(v) for v in row):
            raise ValueError(f"label line {number} contains NaN or inf")
        cls = row[0]
        if cls % 1:
            raise ValueError(f"label line {number}: class id {fields[0]} is not an integer")
        if not 0 <= cls < num_cls:
            raise ValueError(f"label line {number}: class id {fields[0]} outside 0-{num_cls - 1} (nc={num_cls})")
        if min(row[1:]) < 0 or max(row[1:]) > 1 + COORD_TOLERANCE:
            raise ValueError(f"label line {number}: box coordinates outside 0..1 (labels must be normalised xywh)")
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(-1, len(FIELDS))


def format_label_rows(classes: np.ndarray, xyxy: np.ndarray) -> str:
    """Format normalised ``x0 y0 x1 y1`` boxes as YOLO rows ``cls xc yc w h`` with 6 decimals, one per line.

    Returns an empty string for no boxes (an empty label file: a background image).
    """
    rows = [
        f"{int(c)} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}"
        for c, (x0, y0, x1, y1) in zip(classes, xyxy, strict=True)
    ]
    return "\n".join(rows) + "\n" if rows else ""


def _is_number(value: str) -> bool:
    """Return True when ``float`` accepts ``value``."""
    try:
        float(value)
    except ValueError:
        return False
    return True
