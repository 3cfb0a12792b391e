"""Convert an ordinary YOLO image dataset into the SmartCash ``.npy`` layout (``smartcash-ultra convert``).

Every image goes through SmartCash preprocessing (:mod:`smartcash_ultra.data.preprocess`) and lands in
``DST/{train,valid,test}/``: ``images/<name>.npy`` (float32 HWC RGB in 0..1, letterboxed to ``size`` with grey 114),
``images/<name>.meta.json`` (the geometry and the source path) and ``labels/<name>.txt`` (its boxes mapped into the
letterboxed frame, 6 decimals); ``DST/data.yaml`` keeps the class names. The rules:

- **Names**: ``pre_`` + the source file's stem, so a raw SmartCash photo ``rp_001000_<uuid>.jpg`` becomes
  ``pre_rp_001000_<uuid>.npy`` (the SmartCash convention) and ``IMG_42.png`` becomes ``pre_IMG_42.npy``; a stem that
  already starts with ``pre_`` or ``aug_`` (images exported from a SmartCash tree) is kept as it is. Names thus
  depend on the source name only and are the same on every run. When two images of a split share a stem
  (``a.jpg`` and ``a.png``, or ``x/a.jpg`` and ``y/a.jpg``), the first in path order keeps it, the others are skipped.
- **Sources are only read**; a destination overlapping the source dataset is refused before anything is written,
  with or without ``overwrite``. Overlap is judged on real paths (symlinks resolved) of the destination and its split
  folders and of every source file and folder, so a ``link/...`` path in a split list cannot hide that the
  destination is the source. Each file is written atomically; one that exists with other content is replaced only
  with ``overwrite=True``.
- **Resume**: an image whose three outputs exist, whose sidecar names the same source and size, and whose outputs are
  not older than its source image and label file is skipped; the sidecar is written last, so an interrupted image is
  converted again.
- **Bad inputs** (an unreadable image, a malformed label row, a class id outside the names, coordinates outside 0..1)
  are skipped and listed in :attr:`ConvertReport.problems`, naming the file; the rest is converted. An image without a
  label file is a background: it gets an empty label file and is counted in :attr:`ConvertReport.unlabelled`.
- **Orientation**: images are read with Ultralytics' reader (OpenCV, EXIF orientation applied), so labels made for
  Ultralytics training stay on their objects.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import yaml
from ultralytics.utils import NUM_THREADS, TQDM
from ultralytics.utils.ops import xywhn2xyxy
from ultralytics.utils.patches import imread

from smartcash_ultra.data.image_dataset import SPLITS, DatasetError, ImageDataset, find_image_dataset
from smartcash_ultra.data.labels import format_label_rows, parse_label_rows
from smartcash_ultra.data.preprocess import array_bytes, boxes_to_letterbox, letterbox, sidecar_bytes
from smartcash_ultra.utils.files import write_atomic

STRIDE = 32
"""The output size must be a multiple of the largest YOLO stride."""
OVERWRITE_HINT = "pass overwrite=True (--overwrite) to replace it"
CONVERSION_ENTRIES = frozenset({"data.yaml", *SPLITS.values()})
"""What a destination folder may hold before a conversion: an earlier (maybe interrupted) one."""
SMARTCASH_PREFIXES = ("pre_", "aug_")
"""Stems that already follow the SmartCash convention keep their name (no ``pre_pre_…``)."""


@dataclass(frozen=True)
class Problem:
    """One input that was skipped: the file at fault and what is wrong with it."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass
class ConvertReport:
    """What a conversion did; ``ok`` is False when any input was skipped."""

    data_yaml: Path
    images: int = 0
    """Source images found."""
    converted: int = 0
    """Images written by this run."""
    up_to_date: int = 0
    """Images already converted by an earlier run, skipped."""
    unlabelled: int = 0
    """Converted (or up-to-date) images that had no label file: backgrounds with an empty label file."""
    problems: list[Problem] = field(default_factory=list)
    """Skipped inputs: name clashes first, then the others in source order."""
    foreign_files: list[Path] = field(default_factory=list)
    """Files in the destination's split folders that this conversion did not produce (training would use them)."""
    warnings: list[str] = field(default_factory=list)
    """What was left aside without a refusal: a missing optional ``test`` split."""

    @property
    def ok(self) -> bool:
        """Return True when every source image was converted or already up to date."""
        return not self.problems

    def summary(self) -> str:
        """Return the counts as one line, plus warning lines: foreign files in the destination, a skipped split."""
        lines = [
            f"{self.data_yaml}: {self.images} images, {self.converted} converted, {self.up_to_date} already up to "
            f"date, {len(self.problems)} skipped; {self.unlabelled} without a label file (kept as backgrounds)"
        ]
        if self.foreign_files:
            lines.append(
                f"warning: {len(self.foreign_files)} file(s) in the destination's split folders were not written by "
                f"this conversion (first: {self.foreign_files[0]}); training would use them too. Nothing was deleted."
            )
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


class _Outputs(NamedTuple):
    """The three files one image becomes, in writing order (the sidecar last: it marks the image as finished)."""

    array: Path
    label: Path
    sidecar: Path


@dataclass(frozen=True)
class _Job:
    """Everything a worker process needs to convert one image."""

    image: Path
    label: Path
    source: str  # the image's path as recorded in the sidecar
    outputs: _Outputs
    size: int
    num_cls: int
    overwrite: bool


class _Outcome(NamedTuple):
    """The result of one job: ``status`` is 'converted', 'up_to_date' or 'skipped' (then ``problem`` says why)."""

    status: str
    unlabelled: bool
    problem: Problem | None = None


def output_stem(image: str | Path) -> str:
    """Return the SmartCash name (without suffix) of a source image: ``pre_`` + its stem, see the module docstring."""
    stem = Path(image).stem
    return stem if stem.startswith(SMARTCASH_PREFIXES) else f"pre_{stem}"


def convert_dataset(
    src: str | Path, dst: str | Path, size: int = 640, workers: int | None = None, overwrite: bool = False
) -> ConvertReport:
    """Convert the YOLO image dataset ``src`` into the SmartCash ``.npy`` layout under ``dst``; return the report.

    Args:
        src: a data YAML, a folder holding ``data.yaml``, or a folder with ``train``/``valid``/``test`` image folders
            (see :mod:`smartcash_ultra.data.image_dataset`).
        dst: destination folder, created if missing; it must not overlap the source dataset.
        size: side of the square letterboxed arrays, a multiple of 32.
        workers: worker processes; 0 converts in this process, None uses Ultralytics' ``NUM_THREADS``.
        overwrite: replace destination files that exist with other content (otherwise those images are skipped).

    Raises:
        DatasetError: when the source cannot be read as a dataset, the destination overlaps it, or ``dst/data.yaml``
            exists with other content (without ``overwrite``); nothing is written then.
    """
    size = check_size(size)
    workers = NUM_THREADS if workers is None else check_workers(workers)
    dataset = find_image_dataset(src, as_training=False)
    dst = Path(dst).resolve()
    _refuse_overlap(dataset, dst)
    _refuse_foreign_destination(dst)
    yaml_path, yaml_bytes = dst / "data.yaml", _data_yaml(dataset)
    if not overwrite and yaml_path.is_file() and yaml_path.read_bytes() != yaml_bytes:
        raise DatasetError(yaml_path, f"exists with other content (another dataset?); {OVERWRITE_HINT}")

    report = ConvertReport(yaml_path, images=sum(len(images) for images in dataset.splits.values()))
    report.warnings = list(dataset.warnings)
    if not report.images:
        raise DatasetError(dataset.yaml_file or dataset.root, "lists no image files (jpg, png, bmp, webp, ...)")
    jobs, report.problems = _plan(dataset, dst, size, overwrite)
    for split in dataset.splits:
        for sub in ("images", "labels"):
            (dst / split / sub).mkdir(parents=True, exist_ok=True)
    finished = []
    for job, outcome in zip(jobs, _run(jobs, workers), strict=True):
        if outcome.problem:
            report.problems.append(outcome.problem)
            continue
        report.converted += outcome.status == "converted"
        report.up_to_date += outcome.status == "up_to_date"
        report.unlabelled += outcome.unlabelled
        finished.append(job)
    report.foreign_files = _foreign_files(dst, dataset.splits, finished)
    write_atomic(yaml_path, yaml_bytes)
    return report


def check_size(size: int) -> int:
    """Return ``size`` if it is a usable letterbox size (an int >= 32 and a multiple of 32), else raise ValueError."""
    if not isinstance(size, int) or isinstance(size, bool) or size < STRIDE or size % STRIDE:
        raise ValueError(
            f"size must be an integer >= {STRIDE} and a multiple of {STRIDE} (the YOLO stride), got {size}"
        )
    return size


def check_workers(workers: int) -> int:
    """Return ``workers`` if it is a usable process count (an int >= 0), else raise ValueError."""
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0 (0 converts in this process), got {workers}")
    return workers


def _refuse_overlap(dataset: ImageDataset, dst: Path) -> None:
    """Refuse a destination that is, lies inside or holds a source folder, or whose written paths do.

    Every side is compared as a real path: listed images may reach the source through a symlinked folder
    (``link/...`` with ``link -> real``), and ``dst``'s own ``data.yaml`` or split folders may be links into the
    source; an unresolved comparison missed both and the conversion rewrote source labels and the source data YAML.
    """
    if dst.exists() and not dst.is_dir():
        raise DatasetError(dst, "exists and is not a folder")
    written = {dst, (dst / "data.yaml").resolve()}
    written |= {(dst / split / sub).resolve() for split in dataset.splits for sub in ("", "images", "labels")}
    for folder in _source_folders(dataset):
        if any(_within(out, folder) or _within(folder, out) for out in written):
            raise DatasetError(
                dst, f"overlaps the source dataset folder {folder}; choose a destination outside the source"
            )


def _source_folders(dataset: ImageDataset) -> dict[Path, None]:
    """Return the real paths (symlinks resolved) of the dataset's folders and of the folders its files really sit in.

    The files are the data YAML and every image and label file (any of them may be a link to a file elsewhere).
    A written path that is or holds a source file lies in or holds that file's folder, so folders are all the overlap
    test needs, and it stays linear in the number of images. An ordered set: the first overlap is the one named.
    """
    files = [dataset.yaml_file] if dataset.yaml_file else []
    files += [f for images in dataset.splits.values() for image in images for f in (image, dataset.label_file(image))]
    return dict.fromkeys(
        [*(Path(os.path.realpath(f)) for f in dataset.locations), *(Path(os.path.realpath(f)).parent for f in files)]
    )


def _refuse_foreign_destination(dst: Path) -> None:
    """Refuse a destination holding anything but an earlier conversion: ``data.yaml`` and split folders.

    ``convert src /tmp`` would otherwise mix the dataset into whatever is there; an interrupted conversion (split
    folders, no ``data.yaml`` yet) still resumes. Hidden entries (``.DS_Store``...) do not count.
    """
    if not dst.is_dir():
        return
    foreign = sorted(p.name for p in dst.iterdir() if p.name not in CONVERSION_ENTRIES and not p.name.startswith("."))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 5 else "")
        raise DatasetError(
            dst, f"is not empty and holds no earlier conversion ({shown}); choose an empty or new folder"
        )


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _data_yaml(dataset: ImageDataset) -> bytes:
    """Return the destination's data YAML: split image folders (as SmartCash names them) and the class names."""
    data: dict[str, object] = {key: f"{folder}/images" for key, folder in SPLITS.items() if folder in dataset.splits}
    data |= {"nc": len(dataset.names), "names": dataset.names}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode()


def _plan(dataset: ImageDataset, dst: Path, size: int, overwrite: bool) -> tuple[list[_Job], list[Problem]]:
    """Make one job per source image; an image whose output name an earlier image of its split took is a problem."""
    jobs, problems = [], []
    for split, images in dataset.splits.items():
        taken: dict[str, Path] = {}
        for image in images:
            stem = output_stem(image)
            if stem in taken:
                problems.append(Problem(image, f"its output name {stem}.npy is taken by {taken[stem]}; rename one"))
                continue
            taken[stem] = image
            outputs = _Outputs(
                dst / split / "images" / f"{stem}.npy",
                dst / split / "labels" / f"{stem}.txt",
                dst / split / "images" / f"{stem}.meta.json",
            )
            source = image.relative_to(dataset.root) if dataset.root in image.parents else image
            label = dataset.label_file(image)
            jobs.append(_Job(image, label, source.as_posix(), outputs, size, len(dataset.names), overwrite))
    return jobs, problems


def _run(jobs: list[_Job], workers: int) -> Iterator[_Outcome]:
    """Convert the jobs in this process or in ``workers`` processes, in order, behind a progress bar."""
    with contextlib.ExitStack() as stack:
        if workers and len(jobs) > 1:
            pool = stack.enter_context(ProcessPoolExecutor(min(workers, len(jobs))))
            outcomes = pool.map(_convert_image, jobs, chunksize=max(1, min(32, len(jobs) // (4 * workers))))
        else:
            outcomes = map(_convert_image, jobs)
        yield from TQDM(outcomes, total=len(jobs), desc="smartcash-ultra convert", unit="image", file=sys.stderr)


def _convert_image(job: _Job) -> _Outcome:
    """Convert one image and its labels, or say why not; runs in a worker process."""
    unlabelled = not job.label.is_file()
    if _is_up_to_date(job, unlabelled):
        return _Outcome("up_to_date", unlabelled)
    try:
        rows = np.zeros((0, 5)) if unlabelled else _read_rows(job.label, job.num_cls)
    except ValueError as e:
        return _skipped(job.label, str(e))
    try:
        photo = imread(job.image, cv2.IMREAD_COLOR)
    except cv2.error as e:
        return _skipped(job.image, f"cannot be decoded ({e.err})")
    if photo is None:
        return _skipped(job.image, "cannot be read as an image (missing, empty, truncated or not an image format)")
    lb = letterbox(cv2.cvtColor(photo, cv2.COLOR_BGR2RGB), job.size)
    h, w = photo.shape[:2]
    boxes = xywhn2xyxy(rows[:, 1:], w, h)
    contents = dict(
        zip(
            job.outputs,
            (
                array_bytes(lb.image),
                format_label_rows(rows[:, 0], boxes_to_letterbox(boxes, lb)).encode(),
                sidecar_bytes(lb, job.source),
            ),
            strict=True,
        )
    )
    if not job.overwrite:
        clash = next((p for p, data in contents.items() if p.exists() and p.read_bytes() != data), None)
        if clash:
            return _skipped(clash, f"exists with other content; {OVERWRITE_HINT}")
    for path, data in contents.items():
        try:
            write_atomic(path, data)
        except OSError as e:
            return _skipped(path, f"cannot be written ({e.strerror or e})")
    return _Outcome("converted", unlabelled)


def _read_rows(label: Path, num_cls: int) -> np.ndarray:
    """Read and check a source label file; a problem (also an unreadable file) is a ValueError saying what it is."""
    try:
        text = label.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot be read ({e})") from None
    return parse_label_rows(text, num_cls)


def _is_up_to_date(job: _Job, unlabelled: bool) -> bool:
    """Return True when an earlier run finished this image from the same source, size and (unchanged) labels."""
    try:
        outputs = [p.stat() for p in job.outputs]
        meta = json.loads(job.outputs.sidecar.read_bytes())
        sources = [job.image.stat()] + ([] if unlabelled else [job.label.stat()])
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("source") != job.source or meta.get("imgsz") != job.size:
        return False
    if unlabelled and outputs[1].st_size:  # the source label file was removed since
        return False
    return min(s.st_mtime_ns for s in outputs) >= max(s.st_mtime_ns for s in sources)


def _skipped(path: Path, problem: str) -> _Outcome:
    return _Outcome("skipped", False, Problem(path, problem))


def _foreign_files(dst: Path, splits: dict[str, list[Path]], finished: list[_Job]) -> list[Path]:
    """List files in the destination's split folders that no finished job produced (hidden temp files aside)."""
    produced = {p for job in finished for p in job.outputs}
    return sorted(
        p
        for split in splits
        for sub in ("images", "labels")
        for p in (dst / split / sub).iterdir()
        if p not in produced and not p.name.startswith(".")
    )
