"""An ordinary YOLO image dataset on disk: its class names and, per split, its image and label files.

A dataset is named by its data YAML, by a folder holding ``data.yaml`` (or ``data.yml``), or by a folder without one
whose split folders ``train``, ``valid`` (or ``val``) and ``test`` each hold ``images/``; such a bare tree is taken to
use the 17-class SmartCash scheme. YAML paths resolve as Ultralytics resolves them (``path``, then a ``../`` prefix
dropped when the path does not exist), split entries may be folders (searched recursively) or ``.txt`` lists of image
files, and an image's label file is the one Ultralytics pairs with it (the last ``images`` folder becomes ``labels``).
Nothing here writes: a dataset is only listed.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import yaml
from ultralytics.data.utils import IMG_FORMATS, img2label_paths
from ultralytics.nn.autobackend import check_class_names
from ultralytics.utils import DATASETS_DIR

from smartcash_ultra.data.arrays import CHANNEL_ORDERS, DEFAULT_VALUE_RANGE, is_array_file
from smartcash_ultra.utils.classes import NAMES
from smartcash_ultra.utils.errors import SmartCashError

SPLITS = {"train": "train", "val": "valid", "test": "test"}
"""Data YAML split key -> SmartCash split folder name."""
OPTIONAL_SPLITS = ("test",)
"""Data YAML split keys training never reads: a missing path there is a warning, not a refusal."""
YAML_NAMES = ("data.yaml", "data.yml")
"""Names a dataset folder's data YAML may have."""


class DatasetError(SmartCashError, ValueError):
    """A dataset (or destination) that cannot be used as asked; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = Path(path), problem


@dataclass(frozen=True)
class ImageDataset:
    """A YOLO image dataset: where it is, its class names and its images per SmartCash split folder."""

    root: Path
    """Dataset root: the YAML's ``path`` (default: the YAML's folder), or the bare tree's folder."""
    yaml_file: Path | None
    """The data YAML, or None for a bare tree (class names then are the SmartCash scheme)."""
    names: dict[int, str]
    splits: dict[str, list[Path]]
    """SmartCash split folder (train, valid, test) -> its image files, sorted, absolute."""
    locations: tuple[Path, ...]
    """Folders the dataset's files are read from (root, split folders, list files' folders, every image's folder and
    label folder)."""
    data: dict = field(default_factory=dict)
    """The data YAML as written (empty for a bare tree): declarations such as ``channel_order`` live here."""
    warnings: tuple[str, ...] = ()
    """``file: problem`` of what was skipped but needs no refusal: a missing optional ``test`` split."""

    @staticmethod
    def label_file(image: Path) -> Path:
        """Return the label file Ultralytics pairs with ``image`` (it need not exist)."""
        return Path(img2label_paths([image])[0])


class Declarations(NamedTuple):
    """How a data YAML says its arrays were written, and whether a problem stops training (``strict``)."""

    channel_order: str = "RGB"
    value_range: tuple[float, float] = DEFAULT_VALUE_RANGE
    """Range of float arrays (uint8 arrays are always 0..255)."""
    strict: bool = False


def read_declarations(data: dict, source: str | Path | None = None) -> Declarations:
    """Read and check a data YAML's ``channel_order``, ``value_range`` and ``strict``; absent keys take the defaults.

    The one reader of these keys: training (``SmartCashDataset``) and ``check``/``stats`` (``scan_dataset``) use it.

    Raises:
        DatasetError: naming ``source`` (default: the data's ``yaml_file``, set by ``check_det_dataset``).
    """
    source = source or data.get("yaml_file") or "data YAML"
    channel_order = str(data.get("channel_order", "RGB")).upper()
    if channel_order not in CHANNEL_ORDERS:
        raise DatasetError(source, f"'channel_order' must be RGB or BGR, got {data['channel_order']!r}")
    value = data.get("value_range")
    try:
        low, high = DEFAULT_VALUE_RANGE if value is None else (float(v) for v in value)
    except (TypeError, ValueError):
        raise DatasetError(source, f"value_range must be [low, high], e.g. [0, 1] or [0, 255], got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise DatasetError(source, f"value_range must be [low, high] with low < high, got {value!r}")
    return Declarations(channel_order, (low, high), bool(data.get("strict", False)))


def find_image_dataset(src: str | Path, suffixes: frozenset[str] = frozenset(IMG_FORMATS)) -> ImageDataset:
    """Find the dataset ``src`` names: a data YAML, a folder with ``data.yaml``, or a folder with split folders.

    ``suffixes`` (lower case, no dot) are the files listed as images: Ultralytics' image formats by default, plus
    ``npy`` to list a SmartCash tree (:data:`smartcash_ultra.data.arrays.IMAGE_SUFFIXES`).

    Raises:
        DatasetError: naming the file or folder, when ``src`` is none of these or a split it lists does not exist.
    """
    src = Path(src).resolve()
    if not src.exists():
        raise DatasetError(src, "does not exist")
    if src.is_file():
        if src.suffix.lower() not in {".yaml", ".yml"}:
            raise DatasetError(src, "is not a data YAML (expected a .yaml file or a dataset folder)")
        return _from_yaml(src, suffixes)
    yaml_file = next((src / n for n in YAML_NAMES if (src / n).is_file()), None)
    return _from_yaml(yaml_file, suffixes) if yaml_file else _from_split_folders(src, suffixes)


def _from_yaml(yaml_file: Path, suffixes: frozenset[str]) -> ImageDataset:
    """Read a data YAML: class names, root and split entries, resolved like ``check_det_dataset`` resolves them.

    ``check_det_dataset`` itself is not called: it ends with ``check_font``, which probes the network and downloads
    a font into the user's config folder (nothing may be fetched or written here); it refuses a YAML without both
    ``train`` and ``val`` (a dataset to convert or check may have any split), verifies only ``val``, and takes a
    relative ``path`` from the working folder, never from the YAML's.
    """
    try:
        data = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DatasetError(yaml_file, f"cannot be read as YAML ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(yaml_file, "is not a data YAML (expected a mapping with train/val/test and names)")
    if "val" not in data and "validation" in data:  # Ultralytics accepts this spelling too
        data["val"] = data["validation"]
    root = _dataset_root(yaml_file, data.get("path"))
    splits, locations, warnings = {}, [root], []
    for key, folder in SPLITS.items():
        entries = data.get(key)
        if not entries:
            continue
        if not isinstance(entries, (str, list)) or not all(isinstance(e, str) for e in _as_list(entries)):
            raise DatasetError(yaml_file, f"'{key}' must be a path or a list of paths, got {entries!r}")
        images, found = [], False
        for entry in _as_list(entries):
            path = _resolve_entry(root, entry)
            if not path.exists() and key in OPTIONAL_SPLITS:
                warnings.append(
                    f"{yaml_file}: '{key}' path {path} does not exist; the optional split is skipped "
                    "(training does not need it)"
                )
                continue
            if not path.exists():
                raise DatasetError(yaml_file, f"'{key}' path {path} does not exist")
            listed = list_images(path, suffixes)
            images += listed
            # a list file may name images anywhere: their folders and label folders are the dataset's too
            folders = {path if path.is_dir() else path.parent}
            folders |= {f.parent for f in listed} | {ImageDataset.label_file(f).parent for f in listed}
            locations += sorted(folders - set(locations))
            found = True
        if found:
            splits[folder] = sorted(set(images))
    if not splits:
        raise DatasetError(yaml_file, "lists no split (train, val or test)")
    names = _class_names(yaml_file, data)
    return ImageDataset(root, yaml_file, names, splits, tuple(locations), data, tuple(warnings))


def _from_split_folders(src: Path, suffixes: frozenset[str]) -> ImageDataset:
    """Read a bare tree ``src/{train,valid|val,test}/images`` (labels beside) with the SmartCash class names."""
    if (src / "valid" / "images").is_dir() and (src / "val" / "images").is_dir():
        raise DatasetError(src, "has both valid/ and val/ image folders; keep one or write a data.yaml naming them")
    splits, locations = {}, [src]
    for name in ("train", "valid", "val", "test"):
        images_dir = src / name / "images"
        if images_dir.is_dir():
            splits[SPLITS.get(name, name)] = sorted(list_images(images_dir, suffixes))
            locations.append(images_dir.parent)
    if not splits:
        raise DatasetError(
            src, f"holds no data YAML ({' or '.join(YAML_NAMES)}) and no train/valid/val/test 'images' folders"
        )
    return ImageDataset(src, None, dict(NAMES), splits, tuple(locations))


def _dataset_root(yaml_file: Path, path: object) -> Path:
    """Return the dataset root: ``path`` relative to the YAML's folder, the working folder or Ultralytics' datasets_dir.

    Ultralytics itself tries the working folder and then ``datasets_dir``; the YAML's own folder is tried first so
    a dataset converts the same from wherever the command runs.
    """
    if path is None or path == "":
        return yaml_file.parent
    if not isinstance(path, str):
        raise DatasetError(yaml_file, f"'path' must be a folder path, got {path!r}")
    candidates = (
        [Path(path)] if Path(path).is_absolute() else [yaml_file.parent / path, Path(path), DATASETS_DIR / path]
    )
    root = next((c for c in candidates if c.is_dir()), None)
    if root is None:
        raise DatasetError(yaml_file, f"'path' {path} is not a folder (tried {', '.join(map(str, candidates))})")
    return root.resolve()


def _resolve_entry(root: Path, entry: str) -> Path:
    """Resolve a split entry against the root; a missing ``../x`` falls back to ``x`` (Roboflow exports need it)."""
    path = (root / entry).resolve()
    if not path.exists() and entry.startswith("../"):
        path = (root / entry[3:]).resolve()
    return path


def list_images(path: Path, suffixes: frozenset[str]) -> list[Path]:
    """List the image files of a split entry: a folder (recursively, hidden folders skipped) or a ``.txt`` list.

    The one discovery of the package: the converter, ``check``/``stats``, ``SmartCashDataset`` and the predictor's
    folder sources all use it. An ``x.npy`` beside a listed image ``x.jpg`` is that image's Ultralytics ``cache=disk``
    file, not an image of its own.
    """
    if path.is_dir():
        pattern = os.path.join(glob.escape(str(path)), "**", "*.*")
        # glob also yields folders: one named 'x.npy' is searched (by '**'), never read as an image itself
        files = [Path(f) for f in glob.glob(pattern, recursive=True) if not os.path.isdir(f)]
    else:
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(path, f"cannot be read as a list of image files ({e})") from None
        # As in Ultralytics: './x' is relative to the list file, any other relative path to the working folder.
        files = [path.parent / x[2:] if x.startswith("./") else Path(x) for x in (s.strip() for s in lines) if x]
    files = [f.absolute() for f in files if f.suffix[1:].lower() in suffixes]
    images = {f.with_suffix("") for f in files if not is_array_file(f)}
    return [f for f in files if not (is_array_file(f) and f.with_suffix("") in images)]


def _class_names(yaml_file: Path, data: dict) -> dict[int, str]:
    """Return ``{id: name}`` from ``names`` (list or mapping with ids 0..n-1) or from ``nc`` alone (``class_<id>``).

    ``names`` go through Ultralytics' ``check_class_names``, so they read as training reads them; its errors name no
    file and it lets ids such as ``{-1: a, 1: b}`` pass, hence the checks around it.
    """
    names, nc = data.get("names"), data.get("nc")
    if names is None:
        if not isinstance(nc, int) or nc < 1:
            raise DatasetError(yaml_file, "needs 'names' (or at least 'nc') to know the classes")
        return {i: f"class_{i}" for i in range(nc)}
    if not isinstance(names, (list, dict)) or not names:
        raise DatasetError(yaml_file, f"'names' must be a non-empty list or mapping, got {names!r}")
    try:
        checked = check_class_names(names)
    except (KeyError, ValueError):
        checked = {}
    if sorted(checked) != list(range(len(names))):
        raise DatasetError(yaml_file, f"'names' keys must be class ids 0..n-1, got {list(names)}")
    if nc is not None and nc != len(checked):
        raise DatasetError(yaml_file, f"'nc' is {nc} but 'names' has {len(checked)} classes")
    return dict(sorted(checked.items()))


def _as_list(value: str | list) -> list:
    return value if isinstance(value, list) else [value]
