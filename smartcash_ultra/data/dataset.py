"""``SmartCashDataset``: SmartCash ``.npy`` arrays (and ordinary images) fed to Ultralytics' YOLO pipeline unchanged.

Arrays are converted to uint8 BGR when loaded, so Mosaic, HSV, flips, perspective and LetterBox run exactly as on
JPEGs, and validation sees the unaugmented array. Four stock behaviours are replaced because they would touch a
user's files or run a dataset's code: image discovery (it ignores ``.npy``), verification (PIL, which rewrites
"corrupt" JPEGs in place), image loading of arrays (stock reads ``<image>.npy`` as its own disk cache: for an array
that is the user's file, which stock deletes when it fails to load) and the label cache (a pickle, which runs code
when loaded). ``cache=disk`` reads arrays where they are, as they already are what a disk cache would hold; ordinary
images in the same tree keep Ultralytics' ``<image>.npy`` cache beside them.
"""

from __future__ import annotations

import contextlib
import math
import os
from itertools import repeat
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image
from ultralytics.data import YOLODataset
from ultralytics.data.utils import (
    FORMATS_HELP_MSG,
    HELP_URL,
    check_file_speeds,
    exif_size,
    get_hash,
    get_split_fraction,
)
from ultralytics.utils import LOCAL_RANK, LOGGER, NUM_THREADS, TQDM, colorstr

from smartcash_ultra.data.arrays import (
    DEFAULT_VALUE_RANGE,
    IMAGE_SUFFIXES,
    ArrayFormatError,
    check_regular_file,
    check_values,
    is_array_file,
    load_bgr_uint8,
    open_array,
)
from smartcash_ultra.data.image_dataset import DatasetError, list_split, read_declarations
from smartcash_ultra.data.label_cache import (
    Scan,
    contents_hash,
    label_cache_path,
    label_dict,
    read_label_cache,
    write_label_cache,
)
from smartcash_ultra.data.labels import ClassIdError, parse_label_rows
from smartcash_ultra.data.preprocess import read_sidecar
from smartcash_ultra.utils.errors import SmartCashError

CORRUPT = "ignoring corrupt image/label: "
"""How a left-out item's message starts (Ultralytics' wording), after the dataset's prefix."""
VERIFIER_VERSION = "smartcash-4"
"""Part of the label-cache hash and version: a cache written by an older verifier is rebuilt."""


class DatasetProblems(SmartCashError, ValueError):
    """A ``strict: true`` dataset with problems: raised before training, listing every problem (file: problem)."""

    def __init__(self, source: str, problems: list[str]):
        listing = "\n  ".join(problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in a strict dataset, not training:\n  {listing}")
        self.problems = problems


class Sample(NamedTuple):
    """What verifying one image (or array) and its label file found; nothing is modified to find it."""

    im_file: str
    label_file: str
    shape: tuple[int, int] | None
    """(h, w), None when the item is skipped."""
    labels: np.ndarray | None
    """(n, 5) float32 ``cls xc yc w h``, duplicates removed; None when the item is skipped."""
    label_found: bool
    problem: str | None = None
    """``file: problem`` when the item is skipped (training leaves it out)."""
    fixed: str | None = None
    """``file: what was fixed`` when the item is used with a correction (duplicate or zero-size boxes dropped)."""
    unknown_class: int | None = None
    """The class id beyond ``names`` that got the label file left out, if that was its problem."""


class SmartCashDataset(YOLODataset):
    """YOLO dataset over SmartCash ``pre_*``/``aug_*`` arrays, with labels in the sibling ``labels/`` folder.

    The data YAML declares how its arrays were written: ``channel_order`` (RGB, or BGR for trees of the old SmartCash
    augmentation) and ``value_range`` of float arrays (``[0, 1]``, or e.g. ``[0, 255]``); ``strict: true`` refuses to
    train when any file has a problem instead of leaving it out.
    """

    def __init__(self, *args, data: dict, **kwargs):
        """Initialise like ``YOLODataset`` with the data YAML's ``channel_order``, ``value_range`` and ``strict``."""
        self.channel_order, self.value_range, self.strict = read_declarations(data)
        self._samples: list[Sample] = []
        super().__init__(*args, data=data, **kwargs)

    # Discovery -------------------------------------------------------------------------------------------------------
    def get_img_files(self, img_path: str | list[str]) -> list[str]:
        """Return the image and ``.npy`` files under ``img_path`` (folders, list files or lists of either), sorted.

        Each real folder is searched once and each real file listed once; what was passed over is logged.
        """
        entries = [Path(p) for p in (img_path if isinstance(img_path, list) else [img_path])]
        for p in entries:
            if not p.exists():
                raise FileNotFoundError(f"{self.prefix}image path {p} does not exist")
        listing = list_split(entries, IMAGE_SUFFIXES)
        if listing.repeats and LOCAL_RANK in {-1, 0}:
            LOGGER.warning("\n".join(f"{self.prefix}{r}" for r in listing.repeats))
        im_files = sorted(map(str, listing.files))
        if not im_files:
            raise FileNotFoundError(f"{self.prefix}no .npy arrays or images found in {img_path}. {FORMATS_HELP_MSG}")
        count = self.fraction if isinstance(self.fraction, int) else max(1, round(len(im_files) * self.fraction))
        im_files = im_files[:count]
        check_file_speeds([f for f in im_files if os.path.isfile(f)], prefix=self.prefix)  # it reads: no FIFO
        return im_files

    # Verification ----------------------------------------------------------------------------------------------------
    def get_cache_hash(self) -> str:
        """Tie the label cache to the verifier, the value range, the images' disk caches and the label files' bytes.

        The value range decides which arrays pass, a ``<image>.npy`` that is no cache of its image whether the image
        does (:func:`inspect_sample`); the stock hash reads sizes and modification times only, which an edit in place
        may keep.
        """
        disk_caches = [str(Path(f).with_suffix(".npy")) for f in self.im_files if not is_array_file(f)]
        return (
            f"{super().get_cache_hash()}-{VERIFIER_VERSION}-{self.value_range}-{get_hash(disk_caches)}-"
            f"{contents_hash(self.label_files)}"
        )

    def get_labels(self) -> list[dict]:
        """Verify every item (or read the label cache of an identical earlier scan) and return the usable labels.

        Replaces Ultralytics' reading of its label cache, a pickle it loads with ``np.load(allow_pickle=True)``: that
        file is never loaded (:mod:`smartcash_ultra.data.label_cache`). A split whose label files mostly use class
        ids beyond ``names`` is refused, and so is a strict dataset with any problem; both from this scan's own
        results, also where no cache can be written.
        """
        label_files = self.get_label_files()
        stock_cache = Path(label_files[0]).parent.with_suffix(".cache")
        cache_path = label_cache_path(label_files[0])
        if stock_cache.is_file():
            LOGGER.warning(
                f"{self.prefix}ignoring {stock_cache}: Ultralytics' label cache is a pickle, which can run code when "
                f"loaded; SmartCash never loads it and keeps its own, code-free cache in {cache_path}"
            )
        scan = read_label_cache(cache_path, VERIFIER_VERSION, self.get_cache_hash(), self.label_classes)
        if scan is None:
            scan = self.scan_labels(cache_path)
        elif LOCAL_RANK in {-1, 0}:
            nf, nm, ne, nc, n = scan.results
            TQDM(
                None,
                desc=f"{self.prefix}Scanning {cache_path}... {self.scan_summary(nf, nm, ne, nc)}",
                total=n,
                initial=n,
            )
            messages = [f"{self.prefix}{CORRUPT}{p}" for p in scan.problems] + [f"{self.prefix}{f}" for f in scan.fixes]
            if messages:  # as cache_labels logs them when it scans
                LOGGER.info("\n".join(messages))
        if scan.refusal:
            raise DatasetError(self.data.get("yaml_file") or self.img_path, scan.refusal)
        if self.strict and scan.problems + scan.fixes:
            raise DatasetProblems(f"{self.prefix}{self.img_path}", scan.problems + scan.fixes)
        if not scan.labels:
            issues = "\n  ".join(sorted(scan.problems)) or "no error details"
            raise RuntimeError(f"{self.prefix}No valid images found in {self.img_path}.\n  {issues}\n{HELP_URL}")
        self.im_files = [lb["im_file"] for lb in scan.labels]
        self.verify_labels(scan.labels, cache_path)
        return scan.labels

    def scan_labels(self, path: Path) -> Scan:
        """Verify every item in Ultralytics' ``cache_labels``, through its hooks below, and keep the scan at ``path``.

        ``cache_labels`` saves its result as a pickle at ``path``; that file is replaced at once by the code-free
        cache. Where it cannot be written (a read-only tree) the scan is used all the same and runs again next time.
        """
        with contextlib.suppress(OSError):  # unwritable: Ultralytics says its cache was not saved
            path.parent.mkdir(parents=True, exist_ok=True)
        self._samples = []
        x = self.cache_labels(path)
        samples, self._samples = self._samples, []
        scan = Scan(
            x["labels"],
            x["results"],
            [s.problem for s in samples if s.problem],
            [s.fixed for s in samples if s.fixed],
            unknown_class_refusal(samples, self.label_classes, self.img_path),
            x["hash"],
        )
        if scan.labels:
            try:
                write_label_cache(path, scan, VERIFIER_VERSION)
            except OSError as e:
                LOGGER.warning(
                    f"{self.prefix}label cache not saved to {path} ({e.strerror or e}); verified again next run"
                )
        return scan

    @property
    def label_classes(self) -> int | None:
        """Number of classes a label row may use; None for ``single_cls`` (any class id, all become 0)."""
        return None if self.single_cls else len(self.data["names"])

    def verify_args(self) -> tuple:
        """``cache_labels`` hook: verify each item with :func:`inspect_sample` (no PIL repair, no unpickling)."""
        return _inspect, zip(self.im_files, self.label_files, repeat(self.label_classes), repeat(self.value_range))

    def result_to_label(self, sample: Sample) -> tuple[dict | None, int, int, int, int, str]:
        """``cache_labels`` hook: a :class:`Sample` as Ultralytics' label dict, counts and message, kept for later."""
        self._samples.append(sample)
        found, problem = sample.label_found, sample.problem
        label = None if problem else label_dict(sample.im_file, sample.shape, sample.labels)
        msg = f"{self.prefix}{CORRUPT}{problem}" if problem else f"{self.prefix}{sample.fixed}" if sample.fixed else ""
        empty = found and not problem and not len(sample.labels)
        return label, int(not found), int(found), int(empty), int(bool(problem)), msg

    def meta(self, i: int) -> dict | None:
        """Return the ``.meta.json`` geometry of item ``i`` (original shape, scale, padding); None when it has none."""
        return read_sidecar(self.im_files[i]) if is_array_file(self.im_files[i]) else None

    # Loading ---------------------------------------------------------------------------------------------------------
    def load_image(self, i: int, rect_mode: bool = True, resize_short: bool = False):
        """Load image ``i`` as uint8 BGR resized for ``imgsz``; arrays take the SmartCash path, images the stock one.

        Arrays never reach stock ``load_image``: it would read the array as its own ``<image>.npy`` disk cache, and
        delete it when loading fails. Recent images are kept for Mosaic as stock keeps them (its ``buffer``).
        """
        if self.ims[i] is not None or not is_array_file(self.im_files[i]):
            return super().load_image(i, rect_mode, resize_short)
        im = load_bgr_uint8(self.im_files[i], self.channel_order, self.value_range)
        h0, w0 = im.shape[:2]
        im = _resize(im, self.imgsz, rect_mode, resize_short)
        if self.augment and self.cache != "ram":  # keep recent images for Mosaic, as BaseDataset.load_image does
            self.ims[i], self.im_hw0[i], self.im_hw[i] = im, (h0, w0), im.shape[:2]
            self.buffer.append(i)
            if 1 < len(self.buffer) >= self.max_buffer_length:
                j = self.buffer.pop(0)
                self.ims[j], self.im_hw0[j], self.im_hw[j] = None, None, None
        return im, (h0, w0), im.shape[:2]

    def check_cache_disk(self, safety_margin: float = 0.1) -> bool:
        """Say that arrays are read where they are; check room for the ordinary images' cache as Ultralytics does."""
        arrays = sum(map(is_array_file, self.im_files))
        if arrays:
            LOGGER.info(
                f"{self.prefix}cache=disk: {arrays} .npy arrays are read where they are, they already are what a disk "
                "cache would hold" + ("; images are cached beside them" if arrays < len(self.im_files) else "")
            )
        return arrays < len(self.im_files) and super().check_cache_disk(safety_margin)

    def cache_images_to_disk(self, i: int) -> None:
        """Cache an ordinary image as Ultralytics does (``<image>.npy`` beside it); an array is never written."""
        if not is_array_file(self.im_files[i]):
            super().cache_images_to_disk(i)


def build_smartcash_dataset(
    cfg, img_path: str, batch: int, data: dict, mode: str = "train", rect: bool = False, stride: int = 32
) -> SmartCashDataset:
    """Build a :class:`SmartCashDataset` from the arguments ``build_yolo_dataset`` gives ``YOLODataset``."""
    return SmartCashDataset(
        img_path=img_path,
        imgsz=cfg.imgsz,
        batch_size=batch,
        augment=mode == "train",
        hyp=cfg,
        rect=cfg.rect or rect,
        cache=cfg.cache or None,
        single_cls=cfg.single_cls or False,
        stride=stride,
        pad=0.0 if mode == "train" else 0.5,
        prefix=colorstr(f"{mode}: "),
        task=cfg.task,
        classes=cfg.classes,
        data=data,
        fraction=get_split_fraction(cfg.fraction, "train" if mode == "train" else cfg.split),
    )


def inspect_sample(
    im_file: str, lb_file: str, num_cls: int | None, value_range: tuple[float, float] = DEFAULT_VALUE_RANGE
) -> Sample:
    """Verify one image/array and its label file; never raises for a bad file, the result says what is wrong.

    Arrays are checked by header (rank, channels, dtype, size; never unpickled) and by value (NaN/inf, outside the
    declared ``value_range``), images by PIL (no repair); label rows by
    :func:`smartcash_ultra.data.labels.parse_label_rows`. A missing label file makes a background image.
    """
    found = os.path.isfile(lb_file)
    try:
        shape = _image_shape(im_file, value_range)
    except Exception as e:  # one bad file must not stop the scan (PIL may even fail importing a HEIF plugin)
        problem = e.problem if isinstance(e, ArrayFormatError) else e
        return Sample(im_file, lb_file, None, None, found, problem=f"{im_file}: {problem}")
    if not found:
        return Sample(im_file, lb_file, shape, np.zeros((0, 5), dtype=np.float32), False)
    try:
        labels, fixed = _read_labels(lb_file, num_cls)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        unknown = e.class_id if isinstance(e, ClassIdError) else None
        return Sample(im_file, lb_file, None, None, True, problem=f"{lb_file}: {e}", unknown_class=unknown)
    return Sample(im_file, lb_file, shape, labels, True, fixed=f"{lb_file}: {fixed}" if fixed else None)


def inspect_samples(
    im_files: list[str], label_files: list[str], num_cls: int, value_range: tuple[float, float] = DEFAULT_VALUE_RANGE
) -> list[Sample]:
    """Run :func:`inspect_sample` over many files with Ultralytics' thread count, in order."""
    with ThreadPool(NUM_THREADS) as pool:
        return pool.starmap(
            inspect_sample, zip(im_files, label_files, repeat(num_cls), repeat(value_range)), chunksize=16
        )


def _inspect(args: tuple) -> Sample:
    return inspect_sample(*args)


def unknown_class_refusal(samples: list[Sample], num_cls: int | None, where: str | Path) -> str | None:
    """Say why a split is refused when more label files use class ids beyond ``names`` than training could use.

    A few such files are ordinary bad input (left out and named); most of them mean ``names`` is incomplete, and
    training on the few files that fit would give a model of the wrong classes with exit 0.
    """
    beyond = [s for s in samples if s.unknown_class is not None and num_cls is not None]
    used = sum(not s.problem and len(s.labels) > 0 for s in samples)
    if len(beyond) <= used:
        return None
    worst = max(beyond, key=lambda s: s.unknown_class)
    return (
        f"'names' has {num_cls} classes (ids 0-{num_cls - 1}), but {len(beyond)} of the {len(beyond) + used} label "
        f"files with boxes in {where} use higher class ids (e.g. {worst.unknown_class} in {worst.label_file}): "
        f"'names' is probably incomplete. Not training on the {used} that fit; fix 'names' or those labels"
    )


def _image_shape(im_file: str, value_range: tuple[float, float]) -> tuple[int, int]:
    """Return (h, w) of an array (header, then values) or image (PIL verify, no repair)."""
    if is_array_file(im_file):
        arr = open_array(im_file)
        check_values(arr, im_file, value_range)
        return arr.shape[:2]
    check_regular_file(im_file)
    with Image.open(im_file) as im:
        im.verify()
        w, h = exif_size(im)
    if min(h, w) < 10:
        raise ValueError(f"image size {(h, w)} is smaller than 10 pixels")
    _check_disk_cache(Path(im_file).with_suffix(".npy"))
    return h, w


def _check_disk_cache(cache: Path) -> None:
    """Raise unless ``cache``, the ``<image>.npy`` Ultralytics reads in an image's place, is absent or its uint8 cache.

    Stock ``load_image`` takes that file as the image, and deletes it when it fails to load: where it is a SmartCash
    array (float) or no readable array, the image is left out, so the file is never read in its place nor deleted.
    """
    if not cache.exists():
        return
    try:
        dtype = open_array(cache).dtype
    except ArrayFormatError as e:
        dtype = e.problem
    if dtype != np.uint8:
        raise ValueError(
            f"{cache.name} beside it is not Ultralytics' disk cache of this image ({dtype}), which Ultralytics would "
            "read in its place or delete; rename one of the two"
        )


def _read_labels(lb_file: str, num_cls: int | None) -> tuple[np.ndarray, str]:
    """Parse a YOLO detection label file into an (n, 5) float32 array; what is dropped is reported.

    Duplicate rows are dropped as Ultralytics drops them; boxes of zero width or height too, which Ultralytics keeps:
    such a box cannot be learned, and as a validation target it can never be matched.
    """
    with open(lb_file, encoding="utf-8-sig") as f:
        lb = parse_label_rows(f.read(), num_cls).astype(np.float32)
    fixes = []
    _, keep = np.unique(lb, axis=0, return_index=True)
    if len(keep) < len(lb):
        fixes.append(f"{len(lb) - len(keep)} duplicate labels removed")
        lb = lb[np.sort(keep)]
    zero = (lb[:, 3] == 0) | (lb[:, 4] == 0)
    if zero.any():
        fixes.append(f"{zero.sum()} zero-size boxes removed")
        lb = lb[~zero]
    return lb, "; ".join(fixes)


def _resize(im: np.ndarray, imgsz: int | tuple[int, int], rect_mode: bool, resize_short: bool) -> np.ndarray:
    """Resize like ``BaseDataset.load_image``: long (or short) side to ``imgsz`` keeping aspect, else stretch.

    A copy, kept: stock ``load_image`` reads through the module-level ``imread`` and its ``<image>.npy`` cache, no
    method to override, and feeding it an array would mean patching that global or writing BGR cache files (which
    it deletes on a read error). ``tests/test_dataset.py`` holds it to stock on a lossless PNG twin.
    """
    h0, w0 = im.shape[:2]
    shape = tuple(imgsz) if isinstance(imgsz, (tuple, list)) else (imgsz, imgsz)
    size = max(shape)
    if not rect_mode:
        return im if (h0, w0) == shape else cv2.resize(im, shape[::-1], interpolation=cv2.INTER_LINEAR)
    r = size / (min(h0, w0) if resize_short else max(h0, w0))
    if r == 1:
        return im
    if resize_short:
        w, h = (math.ceil(w0 * r), size) if h0 < w0 else (size, math.ceil(h0 * r))
    else:
        w, h = min(math.ceil(w0 * r), size), min(math.ceil(h0 * r), size)
    return cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)
