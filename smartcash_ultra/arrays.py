"""Reading SmartCash ``.npy`` arrays: header checks without loading, and one-pass conversion to what Ultralytics eats.

SmartCash preprocessing writes float32 HWC RGB arrays in 0..1. The Ultralytics augmentation pipeline expects HWC uint8
BGR (0..255), so every array is converted once at load time. Files are only ever opened read-only and memory-mapped;
nothing here can write, move or delete a user's file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from ultralytics.data.utils import IMG_FORMATS

ARRAY_SUFFIX = ".npy"
IMAGE_SUFFIXES = frozenset(IMG_FORMATS) | {"npy"}
"""File suffixes (no dot, lower case) a SmartCash tree may hold as images: arrays and Ultralytics' image formats."""
ARRAY_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.uint8))
"""Accepted array dtypes: floats are 0..1, uint8 is 0..255."""
CHANNEL_ORDERS = ("RGB", "BGR")


class ArrayFormatError(ValueError):
    """An ``.npy`` file that is not a usable SmartCash image array; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


def is_array_file(path: str | Path) -> bool:
    """Return True for a path that names a NumPy array file."""
    return str(path).lower().endswith(ARRAY_SUFFIX)


def open_array(path: str | Path) -> np.ndarray:
    """Memory-map an image array read-only and check its header (rank, channels, dtype, size) without reading pixels.

    Raises:
        ArrayFormatError: for truncated or non-NumPy files, object arrays (never unpickled), or wrong shape/dtype.
    """
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # bad magic, truncated data, object dtype (cannot be mapped)
        raise ArrayFormatError(path, f"not a readable NumPy image array ({e})") from e
    return check_array(arr, path)


def check_array(arr: object, source: str | Path) -> np.ndarray:
    """Return ``arr`` if it is a usable HWC colour image, else raise :class:`ArrayFormatError` naming ``source``."""
    if not isinstance(arr, np.ndarray):
        raise ArrayFormatError(source, f"holds {type(arr).__name__}, expected one HWC image array")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ArrayFormatError(source, f"shape {arr.shape}, expected (H, W, 3) HWC colour image")
    if arr.dtype not in ARRAY_DTYPES:
        raise ArrayFormatError(source, f"dtype {arr.dtype}, expected one of {', '.join(map(str, ARRAY_DTYPES))}")
    if min(arr.shape[:2]) < 10:
        raise ArrayFormatError(source, f"image size {arr.shape[:2]} is smaller than 10 pixels")
    return arr


def _opencv_scales_float16() -> bool:
    """Return True if this OpenCV converts float16 to uint8 itself (5.x does; 4.x has no such kernel)."""
    try:
        return cv2.convertScaleAbs(np.full((1, 1, 3), 0.5, np.float16), alpha=255.0)[0, 0, 0] == 128
    except (cv2.error, TypeError):
        return False


_FLOAT16_DIRECT = _opencv_scales_float16()
"""Whether float16 arrays skip NumPy's float32 cast: with it a 640² load took 2.1 ms, against 0.33 ms for float32."""


def to_bgr_uint8(arr: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    """Convert an HWC image array (float 0..1 or uint8 0..255) to a new contiguous uint8 BGR array.

    Float input is scaled, rounded and saturated in one OpenCV pass straight from the (memory-mapped) source, so no
    full-size float copy is made; the channel swap then runs in place on the uint8 result. uint8 RGB input is swapped
    into its new array in one pass.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    if channel_order == "BGR":
        return to_uint8(arr)
    if arr.dtype == np.uint8:
        return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    im = to_uint8(arr)
    cv2.cvtColor(im, cv2.COLOR_RGB2BGR, dst=im)
    return im


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Convert an image array (float 0..1 or uint8 0..255) to a new contiguous uint8 array, channels as they are."""
    if arr.dtype == np.uint8:
        return np.array(arr, copy=True, order="C")
    src = arr if arr.dtype == np.float32 or _FLOAT16_DIRECT else arr.astype(np.float32)
    return cv2.convertScaleAbs(src, alpha=255.0)


def load_bgr_uint8(path: str | Path, channel_order: str = "RGB") -> np.ndarray:
    """Read an image array file as uint8 BGR, the format of ``cv2.imread``."""
    return to_bgr_uint8(open_array(path), channel_order)
