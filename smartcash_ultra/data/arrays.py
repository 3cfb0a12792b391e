"""Reading SmartCash ``.npy`` arrays: header checks without loading, and one-pass conversion to what Ultralytics eats.

SmartCash preprocessing writes float32 HWC RGB arrays in 0..1. The Ultralytics augmentation pipeline expects HWC uint8
BGR (0..255), so every array is converted once at load time. Files are only ever opened read-only and memory-mapped;
nothing here can write, move or delete a user's file.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import cv2
import numpy as np
from ultralytics.data.utils import IMG_FORMATS

from smartcash_ultra.utils.errors import SmartCashError

ARRAY_SUFFIX = ".npy"
IMAGE_SUFFIXES = frozenset(IMG_FORMATS) | {"npy"}
"""File suffixes (no dot, lower case) a SmartCash tree may hold as images: arrays and Ultralytics' image formats."""
ARRAY_DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(np.uint8))
"""Accepted array dtypes, in either byte order: floats are 0..1, uint8 is 0..255."""
CHANNEL_ORDERS = ("RGB", "BGR")
DEFAULT_VALUE_RANGE = (0.0, 1.0)
"""Float arrays hold 0..1 unless the data YAML declares ``value_range`` (uint8 arrays are always 0..255)."""
RANGE_TOLERANCE = 1e-3
"""Values this far (as a fraction of the range) outside it pass: float16 rounding and resampling overshoot."""


class ArrayFormatError(SmartCashError, ValueError):
    """An ``.npy`` file that is not a usable SmartCash image array; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


def is_array_file(path: str | Path) -> bool:
    return str(path).lower().endswith(ARRAY_SUFFIX)


def open_array(path: str | Path) -> np.ndarray:
    """Memory-map an image array read-only and check its header (rank, channels, dtype, size) without reading pixels.

    ``np.load`` decides what loads (magic, header, file size; object arrays refused without unpickling); its refusals
    are re-worded by :func:`_refusal`, naming the file and what is wrong with it.

    Raises:
        ArrayFormatError: for what is no regular file (a FIFO), non-NumPy or truncated files, object arrays (never
            unpickled), or wrong shape/dtype.
    """
    check_regular_file(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except OSError as e:
        raise ArrayFormatError(path, f"cannot be read ({e.strerror or e})") from e
    except (ValueError, EOFError) as e:
        raise ArrayFormatError(path, _refusal(path, e)) from e
    if not isinstance(arr, np.ndarray):  # np.load opens a zip (.npz) archive whatever its suffix
        arr.close()
        raise ArrayFormatError(path, "not a NumPy .npy file (a zip archive, as .npz files are)")
    return check_array(arr, path)


def check_regular_file(path: str | Path) -> None:
    """Raise :class:`ArrayFormatError` unless ``path`` is a readable regular file: a FIFO would block its reader."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ArrayFormatError(path, f"cannot be read ({e.strerror or e})") from e
    if not stat.S_ISREG(mode):
        raise ArrayFormatError(path, "not a regular file (a FIFO, device or socket); never read")


def _refusal(path: str | Path, error: Exception) -> str:
    """Say why ``np.load`` refused ``path``, from its header (public ``numpy.lib.format``).

    NumPy's own messages give no sizes for a truncated file, no dtype for an object array, and call any file without
    the NPY magic "pickled (object) data".
    """
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
            offset, actual = f.tell(), os.fstat(f.fileno()).st_size
    except (OSError, ValueError) as e:  # no NPY magic, a malformed or cut header, an unknown format version
        return f"not a NumPy .npy file ({e})"
    if dtype.hasobject:
        return f"holds Python objects (dtype {dtype}); object arrays are never unpickled"
    expected = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if actual < expected:
        return f"truncated: {actual} of {expected} bytes for shape {tuple(shape)} {dtype}"
    return f"not a readable NumPy array ({error})"


def check_array(arr: object, source: str | Path) -> np.ndarray:
    """Return ``arr`` if it is a usable HWC colour image, else raise :class:`ArrayFormatError` naming ``source``."""
    if not isinstance(arr, np.ndarray):
        raise ArrayFormatError(source, f"holds {type(arr).__name__}, expected one HWC image array")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ArrayFormatError(source, f"shape {arr.shape}, expected (H, W, 3) HWC colour image")
    if arr.dtype.newbyteorder("=") not in ARRAY_DTYPES:  # big-endian float32 is float32 too
        raise ArrayFormatError(source, f"dtype {arr.dtype}, expected one of {', '.join(map(str, ARRAY_DTYPES))}")
    if min(arr.shape[:2]) < 10:
        raise ArrayFormatError(source, f"image size {arr.shape[:2]} is smaller than 10 pixels")
    return arr


def check_values(arr: np.ndarray, source: str | Path, value_range: tuple[float, float] = (0.0, 1.0)) -> None:
    """Raise :class:`ArrayFormatError` when a float array holds NaN/inf or values outside its declared range.

    Reads every pixel (two vectorised passes over the memory map), so it runs once, at dataset verification. Values
    are reported, never clipped: a 0..255 float array in a 0..1 dataset would otherwise train as a white image.
    uint8 arrays are always 0..255 and pass.
    """
    if arr.dtype == np.uint8:
        return
    lo, hi = float(arr.min()), float(arr.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ArrayFormatError(source, f"{bad} NaN/inf values")
    low, high = value_range
    tolerance = RANGE_TOLERANCE * (high - low)
    if lo < low - tolerance or hi > high + tolerance:
        hint = ""
        if high <= 1 and 1.5 < hi <= 255 + tolerance and lo >= -tolerance:
            hint = "; the values look like 0..255: declare 'value_range: [0, 255]' in the data YAML"
        raise ArrayFormatError(source, f"values {lo:.4g}..{hi:.4g} outside the declared range {low:g}..{high:g}{hint}")


def _opencv_scales_float16() -> bool:
    """Return True if this OpenCV converts float16 to uint8 itself (5.x does; 4.x has no such kernel)."""
    try:
        return cv2.convertScaleAbs(np.full((1, 1, 3), 0.5, np.float16), alpha=255.0)[0, 0, 0] == 128
    except (cv2.error, TypeError):
        return False


_FLOAT16_DIRECT = _opencv_scales_float16()
"""Whether float16 arrays skip NumPy's float32 cast: with it a 640² load took 2.1 ms, against 0.33 ms for float32."""


def to_bgr_uint8(
    arr: np.ndarray, channel_order: str = "RGB", value_range: tuple[float, float] = DEFAULT_VALUE_RANGE
) -> np.ndarray:
    """Convert an HWC image array (float in ``value_range`` or uint8 0..255) to a new contiguous uint8 BGR array.

    Float input is scaled, rounded and saturated in one OpenCV pass straight from the (memory-mapped) source, so no
    full-size float copy is made; the channel swap then runs in place on the uint8 result. uint8 RGB input is swapped
    into its new array in one pass.
    """
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
    if channel_order == "BGR":
        return to_uint8(arr, value_range)
    if arr.dtype == np.uint8:
        return cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    im = to_uint8(arr, value_range)
    cv2.cvtColor(im, cv2.COLOR_RGB2BGR, dst=im)
    return im


def to_uint8(arr: np.ndarray, value_range: tuple[float, float] = DEFAULT_VALUE_RANGE) -> np.ndarray:
    """Convert an image array (float in ``value_range`` or uint8 0..255) to a new contiguous uint8 array.

    Channels stay as they are; ``low..high`` maps to 0..255 in the same single OpenCV pass.
    """
    if arr.dtype == np.uint8:
        return np.array(arr, copy=True, order="C")
    if not arr.dtype.isnative:  # OpenCV reads the buffer in the machine's byte order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    src = arr if arr.dtype == np.float32 or _FLOAT16_DIRECT else arr.astype(np.float32)
    low, high = value_range
    alpha = 255.0 / (high - low)
    return cv2.convertScaleAbs(src, alpha=alpha, beta=-low * alpha)


def load_bgr_uint8(
    path: str | Path, channel_order: str = "RGB", value_range: tuple[float, float] = DEFAULT_VALUE_RANGE
) -> np.ndarray:
    """Read an image array file as uint8 BGR, the format of ``cv2.imread``."""
    return to_bgr_uint8(open_array(path), channel_order, value_range)
