"""YOLO detection label text: parse and check ``cls xc yc w h`` rows, and format them as SmartCash writes them.

One parser serves the dataset verifier and the converter, so a label file is judged the same way wherever it is read;
each problem names the line it is on.
"""

from __future__ import annotations

import math

import numpy as np
from ultralytics.utils.ops import segments2boxes

FIELDS = ("cls", "xc", "yc", "w", "h")
COORD_TOLERANCE = 1e-6
"""Coordinates up to ``1 + COORD_TOLERANCE`` pass as 1 (rounding in files written with 6 decimals)."""


class ClassIdError(ValueError):
    """A label row whose class id is beyond the dataset's ``names``; ``class_id`` is the id it uses."""

    def __init__(self, message: str, class_id: int):
        super().__init__(message)
        self.class_id = class_id


def parse_label_rows(text: str, num_cls: int | None) -> np.ndarray:
    """Parse YOLO detection rows into an ``(n, 5)`` float64 array ``cls xc yc w h``; blank lines are ignored.

    A polygon row ``cls x1 y1 x2 y2 x3 y3 ...`` (more than 6 fields, as Ultralytics tells them apart) becomes its
    bounding box through Ultralytics' ``segments2boxes``, computed in float32 as Ultralytics computes it, so a
    segmentation dataset trains as a detection dataset does in Ultralytics; unlike Ultralytics, a file may mix box
    and polygon rows (each row is unambiguous). ``num_cls=None`` accepts any non-negative integer class id
    (``single_cls``, where every class becomes 0).

    Raises:
        ValueError: for the first bad row, naming its line: wrong field count, a non-number, NaN/inf, a coordinate
            outside 0..1, a class id that is not a non-negative integer; :class:`ClassIdError` for one beyond
            ``num_cls - 1``.
    """
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        polygon = len(fields) > len(FIELDS) + 1
        if polygon and len(fields) % 2 == 0:
            raise ValueError(
                f"label line {number} has {len(fields)} fields: a polygon needs x y pairs after the class id"
            )
        if not polygon and len(fields) != len(FIELDS):
            raise ValueError(
                f"label line {number} has {len(fields)} fields, expected 5 ({' '.join(FIELDS)}) or a polygon "
                "(cls x1 y1 x2 y2 x3 y3 ...)"
            )
        try:
            row = [float(v) for v in fields]
        except ValueError:
            bad = next(v for v in fields if not _is_number(v))
            raise ValueError(f"label line {number}: {bad!r} is not a number") from None
        if not all(math.isfinite(v) for v in row):
            raise ValueError(f"label line {number} contains NaN or inf")
        _check_class(row[0], fields[0], number, num_cls)
        if min(row[1:]) < 0 or max(row[1:]) > 1 + COORD_TOLERANCE:
            what = (
                "polygon coordinates outside 0..1 (labels must be normalised)"
                if polygon
                else ("box coordinates outside 0..1 (labels must be normalised xywh)")
            )
            raise ValueError(f"label line {number}: {what}")
        if polygon:
            row = [row[0], *segments2boxes([np.array(row[1:], dtype=np.float32).reshape(-1, 2)])[0]]
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(-1, len(FIELDS))


def _check_class(cls: float, text: str, number: int, num_cls: int | None) -> None:
    """Raise unless ``cls`` is an integer in ``0..num_cls-1`` (any ``>= 0`` without num_cls)."""
    if cls % 1:
        raise ValueError(f"label line {number}: class id {text} is not an integer")
    if cls < 0:
        raise ValueError(f"label line {number}: class id {text} is negative")
    if num_cls is not None and cls >= num_cls:
        raise ClassIdError(f"label line {number}: class id {text} outside 0-{num_cls - 1} (nc={num_cls})", int(cls))


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
    try:
        float(value)
    except ValueError:
        return False
    return True
