"""What a dataset holds, verified: the figures behind ``smartcash-ultra check`` and ``smartcash-ultra stats``.

Every sample goes through the verifier training uses (:func:`smartcash_ultra.data.dataset.inspect_sample`), so ``check``
lists exactly what training would leave out (or correct), by file and problem. Nothing is written: no label cache,
no repair.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smartcash_ultra.data.arrays import IMAGE_SUFFIXES, is_array_file
from smartcash_ultra.data.dataset import Sample, inspect_samples, unknown_class_refusal
from smartcash_ultra.data.image_dataset import DatasetError, ImageDataset, find_image_dataset, read_declarations
from smartcash_ultra.data.preprocess import read_sidecar
from smartcash_ultra.utils.classes import LAYERS, is_full_scheme

SIZE_BINS = {"small": 32**2, "medium": 96**2}
"""COCO's object size classes, in pixels of the array: small < 32², medium < 96², large otherwise."""


@dataclass
class SplitReport:
    """One split: every sample's verification result and the sidecars found beside the arrays."""

    name: str
    samples: list[Sample]
    sidecars: list[dict] = field(default_factory=list)
    sidecar_problems: list[str] = field(default_factory=list)

    @property
    def used(self) -> list[Sample]:
        return [s for s in self.samples if not s.problem]

    def counts(self) -> dict[str, int]:
        """Images, arrays, labelled, backgrounds (no label file), empty label files, skipped and corrected items."""
        return {
            "images": len(self.samples),
            "arrays": sum(is_array_file(s.im_file) for s in self.samples),
            "labelled": sum(s.label_found and len(s.labels) > 0 for s in self.used),
            "backgrounds": sum(not s.label_found for s in self.used),
            "empty_label_files": sum(s.label_found and len(s.labels) == 0 for s in self.used),
            "skipped": sum(bool(s.problem) for s in self.samples),
            "corrected": sum(bool(s.fixed) for s in self.samples),
            "sidecars": len(self.sidecars),
        }

    def instances(self) -> Counter:
        return Counter(int(c) for s in self.used for c in s.labels[:, 0])

    def box_sizes(self) -> dict[str, Any]:
        """Box width/height (fraction of the image) percentiles and COCO small/medium/large counts in pixels."""
        wh = [(s.labels[:, 3:5], s.shape) for s in self.used if len(s.labels)]
        if not wh:
            return {"boxes": 0}
        rel = np.concatenate([b for b, _ in wh])
        pixels = np.concatenate([b[:, 0] * shape[1] * b[:, 1] * shape[0] for b, shape in wh])
        return {
            "boxes": len(rel),
            "width_percentiles": _percentiles(rel[:, 0]),
            "height_percentiles": _percentiles(rel[:, 1]),
            "small": int((pixels < SIZE_BINS["small"]).sum()),
            "medium": int(((pixels >= SIZE_BINS["small"]) & (pixels < SIZE_BINS["medium"])).sum()),
            "large": int((pixels >= SIZE_BINS["medium"]).sum()),
        }


@dataclass
class DatasetReport:
    """A verified dataset: its declarations, per-split results and every problem, naming the file."""

    source: Path
    names: dict[int, str]
    channel_order: str
    value_range: tuple[float, float]
    strict: bool
    splits: dict[str, SplitReport]
    dataset_problems: list[str] = field(default_factory=list)
    """Problems of the dataset as a whole (training refuses it): a missing split, ``names`` most labels go beyond,
    and files training never reads (label files without an image)."""
    warnings: list[str] = field(default_factory=list)
    """What does not stop or change training: a missing optional split, a pickled label cache that is ignored."""

    @property
    def problems(self) -> list[str]:
        """Every problem, ``file: problem``: empty splits, skipped items, corrected labels, unreadable sidecars."""
        found = list(self.dataset_problems)
        for split in self.splits.values():
            found += [s.problem for s in split.samples if s.problem]
            found += [s.fixed for s in split.samples if s.fixed]
            found += split.sidecar_problems
        return found

    @property
    def ok(self) -> bool:
        """Return True when training would use every file as it is."""
        return not self.problems

    def class_distribution(self, split: str | None = None) -> dict[str, int]:
        """Boxes per class name (every class listed, 0 when absent), in one split or all."""
        counts = Counter()
        for name, report in self.splits.items():
            if split is None or name == split:
                counts.update(report.instances())
        return {self.names[i]: counts.get(i, 0) for i in self.names}

    def info(self) -> dict[str, Any]:
        """Everything ``stats`` shows, as plain data (``--json``)."""
        splits = {}
        for name, report in self.splits.items():
            per_class = self.class_distribution(name)
            splits[name] = {
                **report.counts(),
                "instances": sum(per_class.values()),
                "instances_per_class": per_class,
                **({"instances_per_layer": self._per_layer(per_class)} if is_full_scheme(self.names) else {}),
                "box_sizes": report.box_sizes(),
                "sidecar_geometry": _sidecar_summary(report.sidecars),
            }
        return {
            "source": str(self.source),
            "classes": len(self.names),
            "names": self.names,
            "smartcash_17_class_scheme": is_full_scheme(self.names),
            "channel_order": self.channel_order,
            "value_range": list(self.value_range),
            "strict": self.strict,
            "splits": splits,
            "problems": len(self.problems),
        }

    def _per_layer(self, per_class: dict[str, int]) -> dict[str, int]:
        return {layer: sum(per_class[self.names[i]] for i in ids) for layer, ids in LAYERS.items()}

    def format_check(self) -> str:
        """Return the ``check`` report: declarations, one line of counts per split, then every problem."""
        low, high = self.value_range
        lines = [
            f"{self.source}: {len(self.names)} classes, channel order {self.channel_order}, float values "
            f"{low:g}..{high:g}" + (", strict" if self.strict else "")
        ]
        for name, report in self.splits.items():
            c = report.counts()
            lines.append(
                f"  {name}: {c['images']} images ({c['arrays']} .npy), {c['labelled']} labelled, "
                f"{c['backgrounds']} without label file (background), {c['empty_label_files']} empty label files, "
                f"{c['sidecars']} .meta.json, {c['skipped']} skipped, {c['corrected']} corrected"
            )
        problems = self.problems
        if problems:
            lines.append(f"{len(problems)} problem(s); training leaves skipped files out (strict: true refuses):")
            lines += [f"  {p}" for p in problems]
        else:
            lines.append("no problems: training uses every file as it is")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def format_stats(self) -> str:
        """Return the ``stats`` report: images, instances per class and layer, backgrounds, box sizes, per split."""
        info = self.info()
        lines = [f"{self.source}: {info['classes']} classes"]
        for name, s in info["splits"].items():
            lines.append(
                f"\n{name}: {s['images']} images, {s['instances']} instances, {s['backgrounds']} without labels, "
                f"{s['empty_label_files']} empty label files, {s['skipped']} skipped"
            )
            lines.append("  " + "  ".join(f"{k} {v}" for k, v in s["instances_per_class"].items()))
            if "instances_per_layer" in s:
                lines.append("  " + "  ".join(f"{k} {v}" for k, v in s["instances_per_layer"].items()))
            b = s["box_sizes"]
            if b["boxes"]:
                lines.append(
                    f"  boxes: {b['small']} small, {b['medium']} medium, {b['large']} large (COCO sizes, pixels); "
                    f"width p5/p50/p95 {b['width_percentiles']['5']}/{b['width_percentiles']['50']}/"
                    f"{b['width_percentiles']['95']}, height {b['height_percentiles']['5']}/"
                    f"{b['height_percentiles']['50']}/{b['height_percentiles']['95']} of the image"
                )
            g = s["sidecar_geometry"]
            if g["sidecars"]:
                lines.append(
                    f"  .meta.json: {g['sidecars']}, original sizes {g['original_shape_min']} to "
                    f"{g['original_shape_max']}, scale {g['scale_min']:.3g} to {g['scale_max']:.3g}"
                )
        if info["problems"]:
            lines.append(f"\n{info['problems']} problem(s): run `smartcash-ultra check` to list them")
        return "\n".join(lines)


def scan_dataset(src: str | Path) -> DatasetReport:
    """Verify every sample of the dataset ``src`` (data YAML or dataset folder) and read its sidecars.

    Raises:
        DatasetError: naming the file, for a dataset that cannot be read at all (missing split path, names/nc
            mismatch, a bad ``channel_order`` or ``value_range``).
    """
    dataset = find_image_dataset(src, IMAGE_SUFFIXES)
    source = dataset.yaml_file or dataset.root
    channel_order, value_range, strict = read_declarations(dataset.data, source)
    report = DatasetReport(source, dataset.names, channel_order, value_range, strict, {}, warnings=[*dataset.warnings])
    report.dataset_problems += [*dataset.refusals, *dataset.repeats]
    for split, images in dataset.splits.items():
        if not images:
            report.dataset_problems.append(f"{source}: split '{split}' holds no .npy arrays or images")
            continue
        files = [str(p) for p in images]
        labels = [str(ImageDataset.label_file(p)) for p in images]
        samples = inspect_samples(files, labels, len(dataset.names), value_range)
        if refusal := unknown_class_refusal(samples, len(dataset.names), f"split '{split}'"):
            report.dataset_problems.append(f"{source}: {refusal}")
        split_report = SplitReport(split, samples)
        for s in split_report.samples:
            if not is_array_file(s.im_file):
                continue
            try:
                meta = read_sidecar(s.im_file)
            except ValueError as e:
                split_report.sidecar_problems.append(str(e))
                continue
            if meta is not None:
                split_report.sidecars.append(meta)
        report.splits[split] = split_report
    _check_label_folders(report, [ImageDataset.label_file(p) for images in dataset.splits.values() for p in images])
    return report


def _check_label_folders(report: DatasetReport, label_files: list[Path]) -> None:
    """Report label files no image pairs with (their boxes never train) and Ultralytics' pickled label caches.

    ``classes.txt``, the class list LabelImg writes beside its labels, is no label file.
    """
    expected = set(label_files)
    for folder in sorted({p.parent for p in expected}):
        if folder.with_suffix(".cache").is_file():
            report.warnings.append(
                f"{folder.with_suffix('.cache')}: Ultralytics' label cache, a pickle; SmartCash never loads it (it "
                "could run code), delete it unless you made it"
            )
        orphans = sorted(p for p in folder.glob("*.txt") if p not in expected and p.name != "classes.txt")
        report.dataset_problems += [f"{p}: label file without an image; training does not read it" for p in orphans]


def get_dataset_info(src: str | Path) -> dict[str, Any]:
    """Images per split, instances per class and layer, backgrounds, box sizes and sidecar geometry of ``src``."""
    return scan_dataset(src).info()


def get_class_distribution(src: str | Path, split: str | None = None) -> dict[str, int]:
    """Boxes per class name of the dataset ``src``, in one split (``train``, ``valid``, ``test``) or all."""
    report = scan_dataset(src)
    if split is not None and split not in report.splits:
        raise DatasetError(report.source, f"has no split {split!r}; it has {sorted(report.splits)}")
    return report.class_distribution(split)


def _sidecar_summary(sidecars: list[dict]) -> dict[str, Any]:
    if not sidecars:
        return {"sidecars": 0}
    shapes = [tuple(m["original_shape"]) for m in sidecars]
    areas = [h * w for h, w in shapes]
    scales = [float(m["scale"]) for m in sidecars]
    return {
        "sidecars": len(sidecars),
        "original_shape_min": list(shapes[int(np.argmin(areas))]),
        "original_shape_max": list(shapes[int(np.argmax(areas))]),
        "scale_min": min(scales),
        "scale_max": max(scales),
    }


def _percentiles(values: np.ndarray) -> dict[str, float]:
    """Return the 5th, 25th, 50th, 75th and 95th percentiles, keyed by their number."""
    points = (5, 25, 50, 75, 95)
    return {str(p): round(float(v), 4) for p, v in zip(points, np.percentile(values, points), strict=True)}
