"""SmartCash preprocessing of one photo: letterbox it, map its boxes, and encode the array and ``.meta.json`` sidecar.

Shared by the sample generator and the dataset converter, so both write exactly what SmartCash preprocessing writes:
a square image with the aspect kept and grey 114 padding, stored as float32 HWC RGB in 0..1, and a sidecar recording
the geometry (``original_shape``, ``scale``, ``padding`` as top/bottom/left/right, ``imgsz``, ``source``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

PAD_VALUE = 114
"""Letterbox padding grey (0..255), as in SmartCash preprocessing; 114/255 in the saved arrays."""


class Letterbox(NamedTuple):
    """A letterboxed photo and its geometry, needed to map boxes and to write the ``.meta.json`` sidecar."""

    image: np.ndarray  # uint8, imgsz x imgsz, channels as given
    scale: float
    padding: tuple[int, int, int, int]  # top, bottom, left, right
    content: tuple[int, int]  # resized photo (height, width)
    original: tuple[int, int]  # photo (height, width)


def letterbox(photo: np.ndarray, imgsz: int) -> Letterbox:
    """Resize a uint8 photo to fit ``imgsz`` with its aspect kept and pad it to a square with grey 114."""
    h, w = photo.shape[:2]
    r = min(imgsz / h, imgsz / w)
    nh, nw = max(1, min(imgsz, round(h * r))), max(1, min(imgsz, round(w * r)))
    resized = cv2.resize(photo, (nw, nh), interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    top, left = (imgsz - nh) // 2, (imgsz - nw) // 2
    canvas = np.full((imgsz, imgsz, 3), PAD_VALUE, np.uint8)
    canvas[top : top + nh, left : left + nw] = resized
    return Letterbox(canvas, r, (top, imgsz - nh - top, left, imgsz - nw - left), (nh, nw), (h, w))


def boxes_to_letterbox(boxes: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Map ``(n, 4)`` pixel boxes ``x0 y0 x1 y1`` of the photo to normalised boxes of the letterboxed frame.

    Boxes are scaled by the resized content size (which rounding makes differ from ``scale`` by under a pixel) and
    clipped to the content area, so no box reaches into the padding.
    """
    h, w = lb.original
    nh, nw = lb.content
    top, _, left, _ = lb.padding
    size = lb.image.shape[0]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x = np.clip((boxes[:, [0, 2]] * nw / w + left) / size, left / size, (left + nw) / size)
    y = np.clip((boxes[:, [1, 3]] * nh / h + top) / size, top / size, (top + nh) / size)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)


def array_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 RGB letterboxed image as SmartCash stores it: a float32 HWC RGB ``.npy`` in 0..1, no pickle."""
    buf = io.BytesIO()
    np.save(buf, image.astype(np.float32) / np.float32(255), allow_pickle=False)
    return buf.getvalue()


def sidecar_bytes(lb: Letterbox, source: str) -> bytes:
    """Encode the ``.meta.json`` sidecar of a letterboxed photo; ``source`` names the photo it came from."""
    meta = {
        "original_shape": list(lb.original),
        "scale": lb.scale,
        "padding": list(lb.padding),
        "imgsz": lb.image.shape[0],
        "source": source,
    }
    return (json.dumps(meta) + "\n").encode()


SIDECAR_SUFFIX = ".meta.json"
SIDECAR_GEOMETRY = ("original_shape", "scale", "padding")
"""Sidecar fields a reader relies on (``imgsz`` and ``source`` are informative)."""


def sidecar_path(array_file: str | Path) -> Path:
    path = Path(array_file)
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def read_sidecar(array_file: str | Path) -> dict | None:
    """Return the geometry sidecar of an array (None when it has none), checked for the fields this format defines.

    Raises:
        ValueError: naming the sidecar, when it is not JSON or its ``original_shape``/``scale``/``padding`` are missing
            or malformed.
    """
    path = sidecar_path(array_file)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON sidecar ({e})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a readable JSON sidecar (nested too deeply)") from None
    shape, scale, padding = (meta.get(k) if isinstance(meta, dict) else None for k in SIDECAR_GEOMETRY)
    if not (
        _ints(shape, 2, minimum=1)
        and isinstance(scale, (int, float))
        and not isinstance(scale, bool)
        and scale > 0
        and _ints(padding, 4, minimum=0)
    ):
        got = {k: meta.get(k) for k in SIDECAR_GEOMETRY} if isinstance(meta, dict) else meta
        raise ValueError(
            f"{path}: expected original_shape [h, w], scale > 0 and padding [top, bottom, left, right], got {got!r}"
        )
    return meta


def _ints(value: object, n: int, minimum: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)
    )
