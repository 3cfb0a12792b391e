"""Deterministic generator of a small, learnable synthetic SmartCash banknote dataset.

Why: the project must be runnable and testable without the (private) SmartCash Rupiah data, so the README's
"train on the bundled sample" command and the test suite need data in the *exact* SmartCash on-disk layout:
letterboxed float32 RGB ``.npy`` arrays in 0..1 with YOLO txt labels, ``pre_*``/``aug_*`` file names carrying the
main note's nominal, optional ``.meta.json`` sidecars, and a ``data.yaml`` Ultralytics resolves relative to itself.

The scenes are deliberately easy: axis-aligned 2:1 notes with a saturated colour and a pattern per denomination,
the nominal printed in digits (layer 2) and three security features that look the same on every note (layer 3),
on smooth noisy backgrounds with distractor shapes. A small YOLO model learns them from scratch in a few CPU
epochs, which makes a training smoke test meaningful. Same seed and arguments give byte-identical files.
"""

from __future__ import annotations

import argparse
import math
import uuid
import warnings
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import yaml

from smartcash_ultra.data.labels import format_label_rows
from smartcash_ultra.data.preprocess import Letterbox, array_bytes, boxes_to_letterbox, letterbox, sidecar_bytes
from smartcash_ultra.utils.classes import DENOMINATIONS, LAYERS, NAMES, nominal_code
from smartcash_ultra.utils.files import write_atomic

SPLITS = ("train", "valid", "test")
"""Split folder names, in the order their per-split random streams are derived from the seed."""

CLASS_SCHEMES = ("full", "layer_1")

# Approximate base colours (RGB) of the 2022 Rupiah notes, one per layer-1 class.
_NOTE_COLOURS = (
    (140, 165, 120),  # Rp1.000 grey-green
    (115, 135, 175),  # Rp2.000 grey-blue
    (150, 115, 55),  # Rp5.000 brown/olive
    (130, 65, 160),  # Rp10.000 purple
    (45, 150, 75),  # Rp20.000 green
    (35, 85, 195),  # Rp50.000 blue
    (215, 55, 90),  # Rp100.000 red/pink
)
_SIGN_COLOUR = (215, 180, 60)
_DARK = (30, 30, 35)
_SILVER = (190, 190, 200)
_FONT = cv2.FONT_HERSHEY_SIMPLEX

_ASPECT_RANGE = (0.6, 1.8)  # photo width / height
_SQUARE_BAND = (0.9, 1.1)  # aspects resampled so every image shows letterbox padding, like the real data
_NOTE_ASPECT = (1.9, 2.1)  # note width / height
_MAIN_NOTE_WIDTH = (0.35, 0.70)  # fraction of the photo width
_SECONDARY_NOTE_WIDTH = (0.6, 0.85)  # fraction of the main note width, so the main note is always the largest


class _Obj(NamedTuple):
    """One labelled object in photo pixel coordinates (edges, x1/y1 exclusive)."""

    cls: int
    x0: float
    y0: float
    x1: float
    y1: float


def _validate(n_train: int, n_valid: int, n_test: int, imgsz: int, aug_per_image: int, classes: str, seed: int) -> None:
    """Reject arguments that would produce a broken or misleading dataset, before anything is written."""
    for name, value in (
        ("n_train", n_train),
        ("n_valid", n_valid),
        ("n_test", n_test),
        ("aug_per_image", aug_per_image),
        ("imgsz", imgsz),
        ("seed", seed),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if n_train < 1:
        raise ValueError(f"n_train must be >= 1 (a dataset needs training images), got {n_train}")
    if imgsz < 64 or imgsz % 32:
        raise ValueError(f"imgsz must be >= 64 and a multiple of 32 (the YOLO stride), got {imgsz}")
    if classes not in CLASS_SCHEMES:
        raise ValueError(f"classes must be one of {CLASS_SCHEMES}, got {classes!r}")


def _uuid(rng: np.random.Generator) -> str:
    """Return a uuid4-format string drawn from the seeded RNG (uuid.uuid4() would break determinism)."""
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _blend(img: np.ndarray, mask: np.ndarray, colour: tuple[float, ...]) -> None:
    """Paint ``colour`` into float image ``img`` in place, using the anti-aliased uint8 ``mask`` as alpha."""
    alpha = mask.astype(np.float32)[..., None] / 255.0
    img *= 1.0 - alpha
    img += alpha * np.asarray(colour, np.float32)


def _mask_box(mask: np.ndarray, margin: float) -> tuple[float, float, float, float]:
    """Return the tight box (x0, y0, x1, y1) of the painted pixels of ``mask``, grown by ``margin`` and clipped."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (
        max(0.0, xs.min() - margin),
        max(0.0, ys.min() - margin),
        min(float(w), xs.max() + 1 + margin),
        min(float(h), ys.max() + 1 + margin),
    )


def _draw_pattern(img: np.ndarray, cls: int, colour: np.ndarray) -> None:
    """Draw the denomination's own light background pattern, a second cue besides the colour."""
    nh, nw = img.shape[:2]
    tint = tuple(float(c) for c in colour * 0.55 + 255 * 0.45)
    t = max(1, round(nh / 70))
    step = max(3, nh // 4)
    if cls == 0:  # horizontal lines
        for y in range(step // 2, nh, max(3, nh // 5)):
            cv2.line(img, (0, y), (nw, y), tint, t, cv2.LINE_AA)
    elif cls in (1, 2, 3):  # '/' diagonals, '\' diagonals, cross-hatch
        for s in range(-nh, nw + nh, step if cls < 3 else max(3, nh // 3)):
            if cls in (1, 3):
                cv2.line(img, (s, nh), (s + nh, 0), tint, t, cv2.LINE_AA)
            if cls in (2, 3):
                cv2.line(img, (s, 0), (s + nh, nh), tint, t, cv2.LINE_AA)
    elif cls == 4:  # dot grid
        gap = max(4, nh // 6)
        for y in range(gap // 2, nh, gap):
            for x in range(gap // 2, nw, gap):
                cv2.circle(img, (x, y), max(1, nh // 30), tint, -1, cv2.LINE_AA)
    elif cls == 5:  # horizontal waves
        xs = np.arange(0, nw + 1, max(1, nw // 40))
        for y in range(step // 2, nh, step):
            ys = y + np.sin(xs / max(1, nh) * 2 * math.pi * 1.5) * nh / 12
            pts = np.stack([xs, ys], axis=1).round().astype(np.int32)
            cv2.polylines(img, [pts], False, tint, t, cv2.LINE_AA)
    else:  # light grid
        for y in range(step // 2, nh, step):
            cv2.line(img, (0, y), (nw, y), tint, t, cv2.LINE_AA)
        for x in range(step // 2, nw, step):
            cv2.line(img, (x, 0), (x, nh), tint, t, cv2.LINE_AA)


def _draw_note(
    rng: np.random.Generator, cls: int, nw: int, nh: int, min_thread: float
) -> tuple[np.ndarray, list[_Obj]]:
    """Render one note of layer-1 class ``cls`` and return it (uint8 RGB) with its objects in note coordinates.

    The layout is fixed up to a little jitter (sign left, thread, micro-text top right, nominal bottom right) so
    each layer-2/3 feature has one consistent look to learn; ``min_thread`` keeps the thread visible after resizing.
    """
    colour = np.clip(np.asarray(_NOTE_COLOURS[cls], np.float32) + rng.normal(0, 6, 3), 0, 255).astype(np.float32)
    shade = np.linspace(1.08, 0.92, nh, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(colour, (nh, nw, 3)) * shade
    _draw_pattern(img, cls, colour)
    inset, t = max(1, round(0.05 * nh)), max(1, round(nh / 60))
    cv2.rectangle(img, (inset, inset), (nw - 1 - inset, nh - 1 - inset), tuple(float(c) for c in colour * 0.6), t)
    objs = [_Obj(cls, 0.0, 0.0, float(nw), float(nh))]
    mask = np.zeros((nh, nw), np.uint8)
    # The thread is placed first: on small notes ``min_thread`` widens it and the features right of it make room.
    thread_x0 = round(nw * rng.uniform(0.30, 0.32))
    thread_x1 = thread_x0 + max(1, round(min(max(0.10 * nw, min_thread), 0.15 * nw)))
    free_x = thread_x1 + 0.03 * nw

    # Layer 2: the nominal digits; the box is the tight box of the painted text plus a small margin.
    text = str(int(DENOMINATIONS[cls]) * 1000)
    right, bottom = nw * rng.uniform(0.90, 0.93), nh * rng.uniform(0.82, 0.86)
    target_h, max_w = 0.30 * nh * rng.uniform(0.9, 1.1), min(0.50 * nw, right - free_x)
    thick = max(1, round(target_h / 7))
    (tw, th), _ = cv2.getTextSize(text, _FONT, 1.0, thick)
    scale = min(target_h / th, max_w / tw)
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, thick)
    cv2.putText(mask, text, (round(right - tw), round(bottom)), _FONT, scale, 255, thick, cv2.LINE_AA)
    _blend(img, mask, tuple(float(c) for c in colour * 0.3))
    objs.append(_Obj(cls + 7, *_mask_box(mask, max(1.0, 0.08 * th))))

    # Layer 3 sign: a filled gold disc inside a dark ring.
    mask[:] = 0
    cx, cy, radius = nw * rng.uniform(0.14, 0.17), nh * rng.uniform(0.45, 0.55), nh * rng.uniform(0.16, 0.19)
    ring = max(1, round(radius / 6))
    cv2.circle(mask, (round(cx), round(cy)), round(radius), 255, ring, cv2.LINE_AA)
    _blend(img, mask, _DARK)
    objs.append(_Obj(14, *_mask_box(mask, 0.0)))
    mask[:] = 0
    cv2.circle(mask, (round(cx), round(cy)), max(1, round(radius * 0.7)), 255, -1, cv2.LINE_AA)
    _blend(img, mask, _SIGN_COLOUR)

    # Layer 3 text: two rows of tiny dark dashes (micro-text / serial strip) near the top edge.
    mask[:] = 0
    x_start, x_end = max(free_x, nw * rng.uniform(0.42, 0.46)), nw * rng.uniform(0.86, 0.92)
    y_top, row_h = nh * rng.uniform(0.12, 0.15), max(2.0, 0.05 * nh)
    pitch = max(3.0, 0.025 * nw)
    for row in range(2):
        y = round(y_top + row * row_h * 1.6)
        for k in range(max(1, int((x_end - x_start) // pitch))):
            x = x_start + k * pitch
            length = pitch * rng.uniform(0.4, 0.75)
            cv2.rectangle(mask, (round(x), y), (round(x + length), round(y + row_h) - 1), 255, -1)
    _blend(img, mask, _DARK)
    objs.append(_Obj(15, *_mask_box(mask, 0.0)))

    # Layer 3 thread: a dark full-height stripe with silver "windows".
    x0, x1 = thread_x0, thread_x1
    img[:, x0:x1] = _DARK
    window = max(2, nh // 8)
    for y in range(window // 2, nh, 2 * window):
        img[y : y + window, x0 + (x1 - x0) // 3 : x1 - (x1 - x0) // 3] = _SILVER
    objs.append(_Obj(16, float(x0), 0.0, float(x1), float(nh)))
    return np.clip(img, 0, 255).astype(np.uint8), objs


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Return a smooth random gradient with distractor shapes (no note-like rectangles or digits) as float RGB."""
    c0, c1 = rng.uniform(30, 230, 3).astype(np.float32), rng.uniform(30, 230, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.arange(w, dtype=np.float32)[None, :] * math.cos(angle) + np.arange(h, dtype=np.float32)[
        :, None
    ] * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(1e-6, float(ramp.max() - ramp.min()))
    img = c0 + (c1 - c0) * ramp[..., None]
    for _ in range(int(rng.integers(2, 7))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = max(2, int(rng.uniform(0.03, 0.15) * min(h, w)))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            cv2.circle(img, (cx, cy), size, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            axes = (size, max(1, size // 2))
            cv2.ellipse(img, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        elif kind == 2:
            end = (cx + int(rng.integers(-3 * size, 3 * size + 1)), cy + int(rng.integers(-3 * size, 3 * size + 1)))
            cv2.line(img, (cx, cy), end, colour, max(1, size // 6), cv2.LINE_AA)
        else:
            pts = (np.array([[cx, cy]]) + rng.integers(-size, size + 1, (3, 2))).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    return img


def _photo_size(rng: np.random.Generator, imgsz: int) -> tuple[int, int]:
    """Draw a (height, width) with a random aspect, never near-square, and a long side of 1-1.5x ``imgsz``."""
    aspect = 1.0
    while _SQUARE_BAND[0] < aspect < _SQUARE_BAND[1]:
        aspect = math.exp(rng.uniform(math.log(_ASPECT_RANGE[0]), math.log(_ASPECT_RANGE[1])))
    long_side = imgsz * rng.uniform(1.0, 1.5)
    if aspect >= 1:
        return round(long_side / aspect), round(long_side)
    return round(long_side), round(long_side * aspect)


def _scene(rng: np.random.Generator, main_cls: int, imgsz: int) -> tuple[np.ndarray, list[_Obj]]:
    """Compose one synthetic "photo" (uint8 RGB) of 1-3 non-overlapping notes, the first one the largest."""
    h, w = _photo_size(rng, imgsz)
    # >= 10 px after letterboxing: a box thinner than the finest YOLO stride (8) gets few or no anchor points
    min_thread = 10 * max(h, w) / imgsz
    img = _background(rng, h, w)
    objs: list[_Obj] = []
    placed: list[tuple[int, int, int, int]] = []
    # On tall photos the lower bound is raised so the main note stays >= 30 % of the letterboxed frame wide.
    main_w = rng.uniform(max(_MAIN_NOTE_WIDTH[0], 0.3 * max(h, w) / w), _MAIN_NOTE_WIDTH[1]) * w
    notes = [(main_cls, main_w)] + [
        (int(rng.integers(0, 7)), main_w * rng.uniform(*_SECONDARY_NOTE_WIDTH)) for _ in range(int(rng.integers(0, 3)))
    ]
    for cls, width in notes:
        nw = round(width)
        nh = round(nw / rng.uniform(*_NOTE_ASPECT))
        for _ in range(30):  # rejection sampling; a secondary note that does not fit is left out
            x0, y0 = int(rng.integers(0, w - nw + 1)), int(rng.integers(0, h - nh + 1))
            if all(
                x0 + nw + 2 <= px0 or px1 + 2 <= x0 or y0 + nh + 2 <= py0 or py1 + 2 <= y0
                for px0, py0, px1, py1 in placed
            ):
                break
        else:
            continue
        note, note_objs = _draw_note(rng, cls, nw, nh, min_thread)
        img[y0 : y0 + nh, x0 : x0 + nw] = note
        placed.append((x0, y0, x0 + nw, y0 + nh))
        objs += [_Obj(o.cls, o.x0 + x0, o.y0 + y0, o.x1 + x0, o.y1 + y0) for o in note_objs]
    # Camera look: uneven lighting, slight blur, sensor noise.
    light = np.linspace(rng.uniform(0.85, 1.1), rng.uniform(0.85, 1.1), w, dtype=np.float32)[None, :, None]
    img = cv2.GaussianBlur(img * light, (0, 0), rng.uniform(0.3, 0.9))
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 6))
    return np.clip(img, 0, 255).astype(np.uint8), objs


def _augment(rng: np.random.Generator, photo: np.ndarray, objs: list[_Obj]) -> tuple[np.ndarray, list[_Obj]]:
    """Return a photometric variant of a scene (contrast/brightness/colour jitter, noise, maybe a mirror).

    Applied to the photo before letterboxing, as SmartCash augmented raw images, so padding stays grey 114.
    """
    img = photo.astype(np.float32) * np.float32(rng.uniform(0.75, 1.25)) + np.float32(rng.uniform(-30, 30))
    img *= rng.uniform(0.96, 1.04, 3).astype(np.float32)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 8))
    if rng.random() < 0.5:
        w = photo.shape[1]
        img = img[:, ::-1]
        objs = [_Obj(o.cls, w - o.x1, o.y0, w - o.x0, o.y1) for o in objs]
    return np.clip(img, 0, 255).astype(np.uint8), objs


def _label_text(objs: list[_Obj], lb: Letterbox, keep: range) -> str:
    """Map the kept objects' photo-pixel boxes into the letterboxed frame as YOLO rows with 6 decimals."""
    kept = [o for o in objs if o.cls in keep]
    boxes = boxes_to_letterbox(np.array([[o.x0, o.y0, o.x1, o.y1] for o in kept]), lb)
    return format_label_rows(np.array([o.cls for o in kept]), boxes)


def _prepare_root(root: Path, overwrite: bool) -> None:
    """Create ``root`` and the split folders, refusing a non-empty ``root`` unless ``overwrite`` is set."""
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(
            f"{root} is not empty; choose an empty folder or pass overwrite=True "
            "(which rewrites the generated files and deletes nothing)"
        )
    for split in SPLITS:
        for sub in ("images", "labels"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)


def _warn_leftovers(root: Path, written: dict[str, set[str]]) -> None:
    """Warn when split folders hold files this run did not write: training would silently mix them in."""
    extra = 0
    for split in SPLITS:
        for sub in ("images", "labels"):
            folder = root / split / sub
            extra += sum(1 for p in folder.iterdir() if p.name not in written[f"{split}/{sub}"])
    if extra:
        warnings.warn(
            f"{root} holds {extra} file(s) in its split folders that this run did not write (an earlier "
            "run with other arguments?); they will be used for training too. Nothing was deleted.",
            stacklevel=3,
        )


def generate_sample_dataset(
    root: str | Path,
    n_train: int = 160,
    n_valid: int = 40,
    n_test: int = 40,
    imgsz: int = 320,
    aug_per_image: int = 1,
    classes: str = "full",
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic SmartCash dataset under ``root`` and return the path of its ``data.yaml``.

    ``n_train`` originals each get ``aug_per_image`` ``aug_*`` variants; valid/test hold only ``pre_*`` files.
    Main-note denominations are balanced per split. ``classes='layer_1'`` keeps only the 7 note classes.
    ``data.yaml`` is written last, so its presence means the generation finished.
    """
    _validate(n_train, n_valid, n_test, imgsz, aug_per_image, classes, seed)
    root = Path(root)
    _prepare_root(root, overwrite)
    keep = range(7) if classes == "layer_1" else range(len(NAMES))
    written: dict[str, set[str]] = {f"{s}/{sub}": set() for s in SPLITS for sub in ("images", "labels")}

    def emit(split: str, stem: str, image: np.ndarray, labels: str) -> None:
        write_atomic(root / split / "images" / f"{stem}.npy", array_bytes(image))
        write_atomic(root / split / "labels" / f"{stem}.txt", labels.encode())
        written[f"{split}/images"].add(f"{stem}.npy")
        written[f"{split}/labels"].add(f"{stem}.txt")

    for split_index, (split, count) in enumerate(zip(SPLITS, (n_train, n_valid, n_test), strict=True)):
        main_classes = np.random.default_rng([seed, split_index]).permutation(np.arange(count) % len(LAYERS["layer_1"]))
        for i, main_cls in enumerate(main_classes.tolist()):
            rng = np.random.default_rng([seed, split_index, i])
            uid, nominal = _uuid(rng), nominal_code(main_cls)
            stem = f"pre_{nominal}_{uid}" if rng.random() < 0.2 else f"pre_rp_{nominal}_{uid}"
            with_meta = rng.random() < 0.5
            photo, objs = _scene(rng, main_cls, imgsz)
            lb = letterbox(photo, imgsz)
            emit(split, stem, lb.image, _label_text(objs, lb, keep))
            if with_meta:
                meta_name = f"{stem}.meta.json"
                write_atomic(root / split / "images" / meta_name, sidecar_bytes(lb, f"rp_{nominal}_{uid}.jpg"))
                written[f"{split}/images"].add(meta_name)
            if split != "train":
                continue
            for k in range(1, aug_per_image + 1):
                aug_photo, aug_objs = _augment(rng, photo, objs)
                aug_lb = letterbox(aug_photo, imgsz)
                emit(
                    split,
                    f"aug_{nominal}_{uid}_{k:03d}",
                    aug_lb.image,
                    _label_text(aug_objs, aug_lb, keep),
                )

    _warn_leftovers(root, written)
    names = {i: NAMES[i] for i in keep}
    data = {"train": "train/images", "val": "valid/images", "test": "test/images", "nc": len(names), "names": names}
    yaml_path = root / "data.yaml"
    write_atomic(yaml_path, yaml.safe_dump(data, sort_keys=False).encode())
    return yaml_path


def ensure_sample_dataset(root: str | Path, **kwargs: object) -> Path:
    """Return ``root/data.yaml`` when a finished sample is already there, else generate one with ``kwargs``.

    Why: the README's sample-training command can then be re-run without regenerating (or refusing) every time.
    An existing sample built for another class scheme is an error rather than a silent mismatch.
    """
    root = Path(root)
    yaml_path = root / "data.yaml"
    if yaml_path.is_file() and all((root / s / sub).is_dir() for s in SPLITS for sub in ("images", "labels")):
        nc = yaml.safe_load(yaml_path.read_text()).get("nc")
        wanted = 7 if kwargs.get("classes", "full") == "layer_1" else len(NAMES)
        if nc != wanted:
            raise ValueError(f"{yaml_path} has nc={nc} but nc={wanted} was asked for; use another folder")
        return yaml_path
    return generate_sample_dataset(root, **kwargs)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: generate a sample dataset and print where it is and how many images each split has."""
    p = argparse.ArgumentParser(prog="python -m smartcash_ultra.tools.sample_data", description=__doc__.splitlines()[0])
    p.add_argument("root", help="output folder (must be empty or missing unless --overwrite)")
    p.add_argument("--n-train", type=int, default=160, help="original train images (each gets --aug-per-image aug_*)")
    p.add_argument("--n-valid", type=int, default=40)
    p.add_argument("--n-test", type=int, default=40)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--aug-per-image", type=int, default=1)
    p.add_argument("--classes", choices=CLASS_SCHEMES, default="full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder (never deletes files)")
    a = p.parse_args(argv)
    args = (a.n_train, a.n_valid, a.n_test, a.imgsz, a.aug_per_image, a.classes, a.seed)
    # Only argument and target-folder problems become usage errors; anything else keeps its traceback.
    try:
        _validate(*args)
    except ValueError as e:
        p.error(str(e))
    try:
        yaml_path = generate_sample_dataset(a.root, *args, overwrite=a.overwrite)
    except FileExistsError as e:
        p.error(str(e))
    print(yaml_path)
    counts = {"train": a.n_train * (1 + a.aug_per_image), "valid": a.n_valid, "test": a.n_test}
    for split, n in counts.items():
        print(f"{split}: {n} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
