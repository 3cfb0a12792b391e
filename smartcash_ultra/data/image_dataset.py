"""An ordinary YOLO image dataset on disk: its class names and, per split, its image and label files.

A dataset is named by its data YAML, by a folder holding ``data.yaml`` (or ``data.yml``), or by a folder without one
whose split folders ``train``, ``valid`` (or ``val``) and ``test`` each hold ``images/``; such a bare tree is taken to
use the 17-class SmartCash scheme. A data YAML's paths are resolved by Ultralytics' ``check_det_dataset``, the
function training resolves them with, so ``check`` and training read one tree; split entries may be folders (searched
recursively, each real folder and file once) or ``.txt`` lists of image files, and an image's label file is the one
Ultralytics pairs with it (the last ``images`` folder becomes ``labels``). Nothing here writes: a dataset is only
listed.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tarfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import ultralytics.data.utils as data_utils
import yaml
from ultralytics.data.utils import IMG_FORMATS, check_det_dataset, img2label_paths
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
    repeats: tuple[str, ...] = ()
    """``path: problem`` of each folder or file listed again and used once (:attr:`Listing.repeats`)."""
    refusals: tuple[str, ...] = ()
    """Why training refuses this data YAML before reading any split (a missing ``train`` or ``val`` key)."""

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
    strict = data.get("strict", False)
    if not isinstance(strict, bool):  # bool("false") is True
        raise DatasetError(source, f"'strict' must be true or false, got {strict!r}")
    return Declarations(channel_order, (low, high), strict)


def find_image_dataset(
    src: str | Path, suffixes: frozenset[str] = frozenset(IMG_FORMATS), *, as_training: bool = True
) -> ImageDataset:
    """Find the dataset ``src`` names: a data YAML, a folder with ``data.yaml``, or a folder with split folders.

    ``suffixes`` (lower case, no dot) are the files listed as images: Ultralytics' image formats by default, plus
    ``npy`` to list a SmartCash tree (:data:`smartcash_ultra.data.arrays.IMAGE_SUFFIXES`). ``as_training=False``
    reads a data YAML as a source to convert: any split may be missing and a relative ``path`` is tried from the
    YAML's folder first (:func:`_source_paths`).

    Raises:
        DatasetError: naming the file or folder, when ``src`` is none of these or a split it lists does not exist.
    """
    src = Path(src).resolve()
    if not src.exists():
        raise DatasetError(src, "does not exist")
    if src.is_file():
        if src.suffix.lower() not in {".yaml", ".yml"}:
            raise DatasetError(src, "is not a data YAML (expected a .yaml file or a dataset folder)")
        return _from_yaml(src, suffixes, as_training)
    yaml_file = next((src / n for n in YAML_NAMES if (src / n).is_file()), None)
    return _from_yaml(yaml_file, suffixes, as_training) if yaml_file else _from_split_folders(src, suffixes)


def _from_yaml(yaml_file: Path, suffixes: frozenset[str], as_training: bool) -> ImageDataset:
    """Read a data YAML: class names, root and the image files of each split, every path as training reads it."""
    data = _read_yaml(yaml_file)
    if "val" not in data and "validation" in data:  # Ultralytics accepts this spelling too
        data["val"] = data["validation"]
    for key in SPLITS:
        entries = data.get(key)
        if entries and (not isinstance(entries, (str, list)) or not all(isinstance(e, str) for e in _as_list(entries))):
            raise DatasetError(yaml_file, f"'{key}' must be a path or a list of paths, got {entries!r}")
    if not any(data.get(key) for key in SPLITS):
        raise DatasetError(yaml_file, "lists no split (train, val or test)")
    names = _class_names(yaml_file, data)
    refusals = [
        f"{yaml_file}: no '{key}' split; training refuses a data YAML without one"
        for key in ("train", "val")
        if not data.get(key)
    ]
    if as_training and refusals:  # check_det_dataset refuses it: there is no tree training would read
        return ImageDataset(yaml_file.parent, yaml_file, names, {}, (yaml_file.parent,), data, (), (), tuple(refusals))
    root, paths = _training_paths(yaml_file, data) if as_training else _source_paths(yaml_file, data)
    splits, locations, warnings, repeats = {}, [root], [], []
    for key, folder in SPLITS.items():
        present = []
        for path in paths.get(key, []):
            if path.exists():
                present.append(path)
            elif key in OPTIONAL_SPLITS:
                warnings.append(
                    f"{yaml_file}: '{key}' path {path} does not exist; the optional split is skipped "
                    "(training does not need it)"
                )
            else:
                raise DatasetError(yaml_file, f"'{key}' path {path} does not exist")
        if not present:
            continue
        listing = list_split(present, suffixes)
        repeats += listing.repeats
        # a list file may name images anywhere: their folders and label folders are the dataset's too
        folders = {path if path.is_dir() else path.parent for path in present}
        folders |= {f.parent for f in listing.files} | {ImageDataset.label_file(f).parent for f in listing.files}
        locations += sorted(folders - set(locations))
        splits[folder] = sorted(listing.files)
    return ImageDataset(root, yaml_file, names, splits, tuple(locations), data, tuple(warnings), tuple(repeats))


def _read_yaml(yaml_file: Path) -> dict:
    """Return the data YAML as a mapping (safe loader: no tags run code), or raise DatasetError naming the file."""
    if zipfile.is_zipfile(yaml_file) or tarfile.is_tarfile(yaml_file):  # check_det_dataset would unpack it
        raise DatasetError(yaml_file, "is an archive, not a data YAML")
    try:
        data = yaml.safe_load(yaml_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise DatasetError(yaml_file, f"cannot be read as YAML ({e})") from None
    except RecursionError:
        raise DatasetError(yaml_file, "cannot be read as YAML (nested too deeply)") from None
    if not isinstance(data, dict):
        raise DatasetError(yaml_file, "is not a data YAML (expected a mapping with train/val/test and names)")
    return data


def _training_paths(yaml_file: Path, data: dict) -> tuple[Path, dict[str, list[Path]]]:
    """Return the dataset root and each split's paths as training gets them: from Ultralytics' ``check_det_dataset``.

    It reads a relative ``path`` (``.`` too) from the working folder, then from ``datasets_dir``; without ``path``
    the YAML's folder is the root. It is called without downloads and with its closing ``check_font`` (which probes
    the network and downloads a font into the user's config folder) made a no-op, so nothing is fetched, run or
    written. A missing ``val`` path, which it refuses, is refused here with its path.
    """
    try:
        with _no_font_download():
            resolved = check_det_dataset(str(yaml_file), autodownload=False)
    except FileNotFoundError as e:
        missing = re.search(r"missing path '(.+?)'", str(e))
        path = data.get("path")
        hint = ""
        if isinstance(path, str) and path and not Path(path).is_absolute():
            hint = (
                f"; training reads the relative 'path' {path!r} from the working folder ({Path.cwd()}), then from "
                f"{DATASETS_DIR}"
            )
        what = f"'val' path {missing[1]} does not exist" if missing else str(e).strip().splitlines()[0]
        raise DatasetError(yaml_file, what + hint) from None
    except (OSError, SyntaxError, TypeError, ValueError, KeyError, AssertionError) as e:  # its refusals of a YAML
        raise DatasetError(yaml_file, str(e).strip().splitlines()[0]) from None
    paths = {key: [Path(p) for p in _as_list(resolved[key])] for key in SPLITS if resolved.get(key)}
    return Path(resolved["path"]).resolve(), paths


@contextlib.contextmanager
def _no_font_download() -> Iterator[None]:
    """Make ``check_det_dataset``'s font check a no-op meanwhile (fonts matter to plots, never to a dataset)."""
    check_font = data_utils.check_font
    data_utils.check_font = lambda *args, **kwargs: None
    try:
        yield
    finally:
        data_utils.check_font = check_font


def _source_paths(yaml_file: Path, data: dict) -> tuple[Path, dict[str, list[Path]]]:
    """Return the root and split paths of a dataset to convert, more lenient than training's.

    Any split may be missing, and a relative ``path`` is tried from the YAML's folder first (so a dataset converts the
    same from wherever the command runs), then the working folder and Ultralytics' ``datasets_dir``; a missing
    ``../x`` entry falls back to ``x`` as in Ultralytics.
    """
    path = data.get("path")
    if path is None or path == "":
        root = yaml_file.parent
    elif not isinstance(path, str):
        raise DatasetError(yaml_file, f"'path' must be a folder path, got {path!r}")
    else:
        candidates = (
            [Path(path)] if Path(path).is_absolute() else [yaml_file.parent / path, Path(path), DATASETS_DIR / path]
        )
        root = next((c for c in candidates if c.is_dir()), None)
        if root is None:
            raise DatasetError(yaml_file, f"'path' {path} is not a folder (tried {', '.join(map(str, candidates))})")
        root = root.resolve()
    paths = {}
    for key in SPLITS:
        if data.get(key):
            paths[key] = []
            for entry in _as_list(data[key]):
                resolved = (root / entry).resolve()
                if not resolved.exists() and entry.startswith("../"):
                    resolved = (root / entry[3:]).resolve()
                paths[key].append(resolved)
    return root, paths


def _from_split_folders(src: Path, suffixes: frozenset[str]) -> ImageDataset:
    """Read a bare tree ``src/{train,valid|val,test}/images`` (labels beside) with the SmartCash class names."""
    if (src / "valid" / "images").is_dir() and (src / "val" / "images").is_dir():
        raise DatasetError(src, "has both valid/ and val/ image folders; keep one or write a data.yaml naming them")
    splits, locations, repeats = {}, [src], []
    for name in ("train", "valid", "val", "test"):
        images_dir = src / name / "images"
        if images_dir.is_dir():
            listing = list_split([images_dir], suffixes)
            splits[SPLITS.get(name, name)] = sorted(listing.files)
            repeats += listing.repeats
            locations.append(images_dir.parent)
    if not splits:
        raise DatasetError(
            src, f"holds no data YAML ({' or '.join(YAML_NAMES)}) and no train/valid/val/test 'images' folders"
        )
    return ImageDataset(src, None, dict(NAMES), splits, tuple(locations), repeats=tuple(repeats))


class Listing(NamedTuple):
    """The image files of a split, each real file once, and what was passed over to keep it so."""

    files: list[Path]
    repeats: list[str]
    """``path: problem`` of a folder reached again (a symlink loop, a second link to it; not searched again) or a
    file that is one already listed (a link, a second list entry; used once)."""


def list_split(entries: list[Path], suffixes: frozenset[str]) -> Listing:
    """List the image files of a split's entries (folders, ``.txt`` lists), every real folder and file once.

    The one discovery of the package: the converter, ``check``/``stats``, ``SmartCashDataset`` and the predictor's
    folder sources all use it. Symlinked folders are followed, once: a loop (``loop -> .``) made stock listing repeat
    a split 40 levels deep, every copy a background (no label file pairs with ``loop/x``). An ``x.npy`` beside a
    listed image ``x.jpg`` is that image's Ultralytics ``cache=disk`` file, not an image of its own.

    Raises:
        DatasetError: for a folder that is a file system's root (a split of a whole disk) or an unreadable list.
    """
    files, repeats, seen_files, seen_folders = [], [], {}, {}
    for entry in entries:
        if entry.is_dir():
            found = _walk(Path(entry), suffixes, seen_folders, repeats)
        else:
            found = ((f, os.path.realpath(f)) for f in _read_list(entry, suffixes))
        for f, real in found:
            if real in seen_files:
                repeats.append(f"{f}: the same file as {seen_files[real]}; used once")
            else:
                seen_files[real] = f
                files.append(f)
    images = {f.with_suffix("") for f in files if not is_array_file(f)}
    return Listing([f for f in files if not (is_array_file(f) and f.with_suffix("") in images)], repeats)


def list_images(path: Path, suffixes: frozenset[str]) -> list[Path]:
    """List the image files of one split entry, a folder or a ``.txt`` list (:func:`list_split`)."""
    return list_split([path], suffixes).files


def _walk(
    folder: Path, suffixes: frozenset[str], seen: dict[str, Path], repeats: list[str]
) -> Iterator[tuple[Path, str]]:
    """Yield the files with ``suffixes`` under ``folder`` with their real paths, depth first, each real folder once.

    Hidden entries are skipped, as glob skips them. Within a folder, entries that are no symlink come first, so a file
    or folder reached both directly and through a link is kept under its own path (where its label file is).
    """
    folder = folder.absolute()
    if os.path.realpath(folder) == folder.anchor:
        raise DatasetError(folder, "is the root of the file system; a split names a dataset folder, not the disk")
    stack = [folder]
    while stack:
        current = stack.pop()
        real = os.path.realpath(current)
        if real in seen:
            repeats.append(
                f"{current}: a folder already searched ({seen[real]}, a symlink loop or a second link); "
                "not searched again"
            )
            continue
        seen[real] = current
        try:
            with os.scandir(current) as it:
                entries = sorted(it, key=lambda e: (e.is_symlink(), e.name))
        except OSError:  # unreadable, as glob passes it over
            continue
        folders = []
        for e in entries:
            if e.name.startswith("."):
                continue
            if _is_dir(e):
                folders.append(Path(e.path))
            elif Path(e.name).suffix[1:].lower() in suffixes:  # a real path per link only: 4x faster than each
                yield Path(e.path), os.path.realpath(e.path) if e.is_symlink() else os.path.join(real, e.name)
        stack += reversed(folders)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _read_list(path: Path, suffixes: frozenset[str]) -> list[Path]:
    """Return the image files a ``.txt`` list names (``./x`` relative to the list, others to the working folder)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(path, f"cannot be read as a list of image files ({e})") from None
    files = [path.parent / x[2:] if x.startswith("./") else Path(x) for x in (s.strip() for s in lines) if x]
    return [f.absolute() for f in files if f.suffix[1:].lower() in suffixes]


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
