"""Test-set scenarios: the split as photographed in other light or at another position, built once and cached.

A scenario names, per transform, the range its parameter is drawn from, and a seed. Each image gets its own
parameters from a NumPy ``Generator`` seeded with the scenario's seed and the image's file name, so the same seed gives
the same parameters on any machine (and the same bytes on one), whatever the order or number of images. A scenario
set is a SmartCash tree (``images/`` arrays in the source's declared channel order and value range, ``labels/``,
``manifest.json`` with every image's parameters, ``data.yaml`` carrying the source's declarations) written to a cache
folder outside the source, reused while the source files and the scenario are unchanged, rebuilt when either changes.
The source is only read.

Transforms (parameters drawn uniformly from ``[low, high]``):

- lighting, on the image's values scaled to 0..1 and clipped back to it; labels stay as they are:
  ``contrast`` c then ``brightness`` b, ``x -> (x - 0.5) * c + 0.5 + b``; then ``gamma`` g, ``x -> x ** g``;
- position, one affine map about the image centre by OpenCV (``cv2.getRotationMatrix2D``, ``cv2.warpAffine``, the
  border filled with Ultralytics' letterbox grey 114): ``rotation`` in degrees (counter-clockwise), ``scale``,
  ``translate`` x and y as fractions of the width and height (each drawn separately). Boxes map as Ultralytics'
  ``RandomPerspective`` maps them: the four corners transformed, their bounding box clipped to the frame, and a box
  kept only if it passes ``RandomPerspective.box_candidates`` (at least 2 px wide and high, more than 10 % of its
  scaled area left visible, aspect ratio under 100).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml
from ultralytics.data.augment import RandomPerspective

from smartcash_ultra.data.arrays import open_array
from smartcash_ultra.data.image_dataset import DatasetError, ImageDataset, read_declarations
from smartcash_ultra.data.labels import format_label_rows, parse_label_rows
from smartcash_ultra.utils.files import write_atomic

BUILD_VERSION = 1
"""Part of every scenario set's fingerprint: raise it when a transform's code changes what it writes."""
LIGHTING = ("brightness", "contrast", "gamma")
POSITION = ("rotation", "translate", "scale")
LIMITS = {
    "brightness": (-1.0, 1.0),
    "contrast": (0.0, math.inf),
    "gamma": (0.0, math.inf),
    "rotation": (-180.0, 180.0),
    "translate": (-1.0, 1.0),
    "scale": (0.0, math.inf),
}
"""Transform -> the open (0, inf) or closed interval its range must lie in."""
BORDER = 114
"""Grey (0..255) of the border a position transform uncovers: the fill of Ultralytics' letterbox."""
MANIFEST = "manifest.json"


class ScenarioError(DatasetError):
    """A scenario that cannot be built: the message names its file (or name) and the problem."""


@dataclass(frozen=True)
class Scenario:
    """A named set of transform ranges and the seed the per-image parameters are drawn with."""

    name: str
    transforms: dict[str, tuple[float, float]] = field(default_factory=dict)
    seed: int = 0

    @property
    def is_original(self) -> bool:
        """True for the split as it is (nothing to build: the source itself is evaluated)."""
        return not self.transforms

    def definition(self) -> dict:
        """Return the scenario as plain data (the manifest's and the summary's record of it)."""
        return {"name": self.name, "seed": self.seed, "transforms": {k: list(v) for k, v in self.transforms.items()}}

    def parameters(self, image_name: str) -> dict[str, float]:
        """Draw the parameters of ``image_name`` from its own generator, seeded with (seed, name), in a fixed order."""
        digest = hashlib.sha256(image_name.encode("utf-8")).digest()
        rng = np.random.default_rng([self.seed, *np.frombuffer(digest[:16], dtype="<u4").tolist()])
        drawn = {}
        for key in (*LIGHTING, *POSITION):
            if key not in self.transforms:
                continue
            low, high = self.transforms[key]
            if key == "translate":
                drawn["translate_x"], drawn["translate_y"] = (float(v) for v in rng.uniform(low, high, 2))
            else:
                drawn[key] = float(rng.uniform(low, high))
        return drawn


BUILTIN = {
    "original": Scenario("original"),
    "lighting": Scenario("lighting", {"brightness": (-0.3, 0.3), "contrast": (0.7, 1.3), "gamma": (0.7, 1.3)}),
    "position": Scenario("position", {"rotation": (-30.0, 30.0), "translate": (-0.2, 0.2), "scale": (0.8, 1.2)}),
}
"""SmartCash's evaluation scenarios: the test split as it is, in other light, at another position (seed 0)."""


def load_scenario(spec: str | Path) -> Scenario:
    """Return the built-in scenario ``spec`` names, or the one a scenario YAML defines.

    A scenario YAML (read with ``yaml.safe_load``)::

        name: dim_light            # default: the file's stem
        seed: 7                    # default: 0
        transforms:                # any of brightness, contrast, gamma, rotation, translate, scale
          brightness: [-0.5, -0.2]
          gamma: [1.2, 1.6]

    Raises:
        ScenarioError: naming the file: not a built-in name nor a file, not YAML, an unknown transform or key, a range
            that is not ``[low, high]`` with ``low <= high`` inside what the transform allows.
    """
    if str(spec) in BUILTIN:
        return BUILTIN[str(spec)]
    path = Path(spec)
    if not path.is_file():
        raise ScenarioError(spec, f"no built-in scenario ({', '.join(BUILTIN)}) and no scenario YAML file")
    try:
        d = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ScenarioError(path, f"cannot be read as YAML ({e})") from None
    if not isinstance(d, dict):
        raise ScenarioError(path, "a scenario YAML is a mapping with name, seed and transforms")
    unknown = set(d) - {"name", "seed", "transforms"}
    if unknown:
        raise ScenarioError(
            path, f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; keys: name, seed, transforms"
        )
    name, seed, transforms = d.get("name", path.stem), d.get("seed", 0), d.get("transforms")
    if not isinstance(name, str) or not name or name in BUILTIN or not name.replace("_", "").replace("-", "").isalnum():
        raise ScenarioError(path, f"name {name!r} must be letters, digits, _ or - and not a built-in scenario's name")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ScenarioError(path, f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(transforms, dict) or not transforms:
        raise ScenarioError(path, f"transforms must map at least one of {', '.join(LIMITS)} to [low, high]")
    ranges = {}
    for key, value in transforms.items():
        if key not in LIMITS:
            raise ScenarioError(path, f"unknown transform {key!r}; transforms: {', '.join(LIMITS)}")
        ranges[key] = _checked_range(path, key, value)
    return Scenario(name, ranges, seed)


def _checked_range(path: Path, key: str, value: object) -> tuple[float, float]:
    ok = isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
    low, high = (float(v) for v in value) if ok else (math.nan, math.nan)
    lo, hi = LIMITS[key]
    open_low = lo == 0.0 and hi == math.inf  # contrast, gamma, scale: strictly positive
    inside = (low > lo if open_low else low >= lo) and high <= hi
    if not (ok and math.isfinite(low) and math.isfinite(high) and low <= high and inside):
        allowed = f"{'(' if open_low else '['}{lo:g}, {hi:g}{')' if hi == math.inf else ']'}"
        raise ScenarioError(path, f"{key} must be [low, high] with low <= high within {allowed}, got {value!r}")
    return low, high


def load_scenarios(specs: list[str | Path] | tuple[str | Path, ...] | str) -> list[Scenario]:
    """Load every scenario ``specs`` names (a list, or one comma-separated string); refuse a name given twice."""
    if isinstance(specs, str):
        specs = [s.strip() for s in specs.split(",") if s.strip()]
    scenarios = [load_scenario(s) for s in specs]
    names = [s.name for s in scenarios]
    if not scenarios or len(set(names)) != len(names):
        raise ScenarioError(", ".join(map(str, specs)) or "(none)", "give at least one scenario, each name once")
    return scenarios


# Transforms ----------------------------------------------------------------------------------------------------------
def apply_lighting(im: np.ndarray, p: dict[str, float]) -> np.ndarray:
    """Apply contrast, brightness and gamma to a float32 image in 0..1 (a new array, clipped to 0..1)."""
    out = (im - 0.5) * p.get("contrast", 1.0) + 0.5 + p.get("brightness", 0.0)
    np.clip(out, 0.0, 1.0, out=out)
    gamma = p.get("gamma", 1.0)
    return np.power(out, gamma, out=out) if gamma != 1.0 else out


def affine_matrix(p: dict[str, float], width: int, height: int) -> np.ndarray:
    """Return the 2x3 map of rotation and scale about the centre, then the translation (pixels)."""
    m = cv2.getRotationMatrix2D((width / 2, height / 2), p.get("rotation", 0.0), p.get("scale", 1.0))
    m[0, 2] += p.get("translate_x", 0.0) * width
    m[1, 2] += p.get("translate_y", 0.0) * height
    return m


def apply_position(
    im: np.ndarray, boxes: np.ndarray, p: dict[str, float], border: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp ``im`` (HWC) and its ``boxes`` (pixel xyxy, ``(n, 4)``); return the image, the boxes and which are kept."""
    h, w = im.shape[:2]
    m = affine_matrix(p, w, h)
    warped = cv2.warpAffine(im, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(border,) * 3)
    if not len(boxes):
        return warped, boxes.reshape(0, 4), np.zeros(0, bool)
    geometry = RandomPerspective()  # perspective 0: an affine map of the corners
    moved = geometry.apply_bboxes(boxes.astype(np.float32), np.vstack([m, [0, 0, 1]]).astype(np.float32))
    moved[:, [0, 2]] = moved[:, [0, 2]].clip(0, w)
    moved[:, [1, 3]] = moved[:, [1, 3]].clip(0, h)
    keep = geometry.box_candidates(box1=(boxes * p.get("scale", 1.0)).T, box2=moved.T)
    return warped, moved, keep


def transform_sample(
    arr: np.ndarray, rows: np.ndarray, p: dict[str, float], value_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Transform one source array (its dtype, channel order and value range kept) and its label rows ``cls xc yc w h``.

    Returns the new array and label rows ``cls x0 y0 x1 y1`` (normalised xyxy, for :func:`format_label_rows`).
    """
    low, high = (0.0, 255.0) if arr.dtype == np.uint8 else value_range
    im = ((np.asarray(arr, dtype=np.float32) - low) / (high - low)).clip(0.0, 1.0)
    im = apply_lighting(im, p)
    h, w = im.shape[:2]
    cls, xywh = rows[:, 0], rows[:, 1:5]
    xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1) * [w, h, w, h]
    if any(k in p for k in ("rotation", "scale", "translate_x")):
        im, xyxy, keep = apply_position(im, xyxy, p, BORDER / 255)
        cls, xyxy = cls[keep], xyxy[keep]
    out = im * (high - low) + low
    out = np.rint(out).astype(np.uint8) if arr.dtype == np.uint8 else out.astype(arr.dtype.newbyteorder("="))
    return out, np.concatenate([cls[:, None], (xyxy / [w, h, w, h]).clip(0, 1)], 1)


# Scenario sets -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScenarioSet:
    """A built scenario: its data YAML (which names the built images under every split key) and folder."""

    scenario: Scenario
    data_yaml: Path
    root: Path
    built: bool
    """False when the cached set was reused."""


def fingerprint(dataset: ImageDataset, split: str, scenario: Scenario) -> str:
    """Hash what a scenario set is made of: the scenario, the source's declarations, and every source file's bytes."""
    h = hashlib.sha256(json.dumps([BUILD_VERSION, scenario.definition(), split], sort_keys=True).encode())
    h.update(repr(read_declarations(dataset.data, dataset.yaml_file or dataset.root)[:2]).encode())
    h.update(json.dumps(dataset.names, sort_keys=True).encode())
    for image in dataset.splits[split]:
        label = dataset.label_file(image)
        for f in (image, label):
            h.update(f.name.encode())
            if f.is_file():
                with open(f, "rb") as fh:
                    for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                        h.update(block)
    return h.hexdigest()


def build_scenario_set(
    dataset: ImageDataset,
    split: str,
    scenario: Scenario,
    cache: Path,
    progress: Callable[[int, int, str], None] | None = None,
) -> ScenarioSet:
    """Write (or reuse) the scenario set of ``dataset``'s ``split`` under ``cache``, outside the source.

    The set lives in ``cache/<scenario>-<split>-<source hash>/``; it is reused when its manifest's fingerprint matches
    (:func:`fingerprint`), else built whole in a temp folder and renamed into place, so a killed build leaves no half
    set behind. ``progress(current, total, message)`` follows the images.

    Raises:
        DatasetError: the cache folder lies inside the source, or a source file cannot be read (named).
    """
    cache = Path(cache).resolve()
    for location in dataset.locations:
        if cache == location.resolve() or location.resolve() in cache.parents:
            raise DatasetError(cache, f"the scenario cache must be outside the source dataset ({location})")
    source_id = hashlib.sha256(str(dataset.yaml_file or dataset.root).encode()).hexdigest()[:10]
    root = cache / f"{scenario.name}-{split}-{source_id}"
    stamp = fingerprint(dataset, split, scenario)
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("fingerprint") == stamp:
                return ScenarioSet(scenario, root / "data.yaml", root, built=False)
        except (OSError, ValueError):
            pass  # unreadable manifest: rebuild
    declared = read_declarations(dataset.data, dataset.yaml_file or dataset.root)
    tmp = cache / f".{root.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "labels").mkdir()
    images = dataset.splits[split]
    records = {}
    try:
        for i, image in enumerate(images):
            records[image.name] = _build_one(image, dataset, tmp, scenario, declared.value_range)
            if progress:
                progress(i + 1, len(images), f"{scenario.name}: {i + 1}/{len(images)} images")
        data = {  # no 'path': the splits resolve beside the YAML, wherever the set lies
            "train": "images",
            "val": "images",
            "test": "images",
            "names": dict(dataset.names),
            "channel_order": declared.channel_order,
            "value_range": list(declared.value_range),
        }
        write_atomic(tmp / "data.yaml", yaml.safe_dump(data, sort_keys=False).encode())
        document = {
            "fingerprint": stamp,
            "scenario": scenario.definition(),
            "source": {"data": str(dataset.yaml_file or dataset.root), "split": split, "images": len(images)},
            "declarations": {"channel_order": declared.channel_order, "value_range": list(declared.value_range)},
            "images": records,
        }
        write_atomic(tmp / MANIFEST, json.dumps(document, indent=1).encode())
        if root.exists():  # an outdated set of this scenario, written by this function: replaced whole
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ScenarioSet(scenario, root / "data.yaml", root, built=True)


def _build_one(image: Path, dataset: ImageDataset, out: Path, scenario: Scenario, value_range) -> dict:
    """Transform one source image and its labels into ``out``; return its manifest record."""
    if image.suffix.lower() == ".npy":
        arr = open_array(image)
    else:
        arr = cv2.imread(str(image))
        if arr is None:
            raise DatasetError(image, "cannot be read as an image")
        arr = arr[..., ::-1] if read_declarations(dataset.data).channel_order == "RGB" else arr
    label = dataset.label_file(image)
    try:
        rows = parse_label_rows(label.read_text(encoding="utf-8"), len(dataset.names)) if label.is_file() else None
    except ValueError as e:
        raise DatasetError(label, str(e)) from None
    rows = np.zeros((0, 5)) if rows is None else rows
    p = scenario.parameters(image.name)
    new, labels = transform_sample(arr, rows, p, value_range)
    stem = image.stem
    with open(out / "images" / f"{stem}.npy", "wb") as f:
        np.save(f, np.ascontiguousarray(new), allow_pickle=False)
    if any(k in p for k in ("rotation", "scale", "translate_x")):
        text = format_label_rows(labels[:, 0], labels[:, 1:])
    else:  # lighting moves no box: the label file is copied as it is
        text = label.read_text(encoding="utf-8") if label.is_file() else ""
    (out / "labels" / f"{stem}.txt").write_text(text, encoding="utf-8")
    return {**p, "boxes": int(len(rows)), "kept": int(len(labels))}
