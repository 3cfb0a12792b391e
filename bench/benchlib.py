"""Shared pieces of the backbone benchmark suite (throughput, latency, accuracy): the models, data, machine, reports.

The compared models are named once here, so every part of the suite means the same thing by "CSPDarknet-s": the
SmartCash model YAMLs trained by ``SmartCashTrainer`` on ``.npy`` arrays, and stock Ultralytics YAMLs trained by
Ultralytics' own ``DetectionTrainer`` on the same images written as ordinary image files, with the same settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from smartcash_ultra.utils.files import write_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CSP_CFG = "cfg/smartcash_cspdarknet.yaml"
EFF_CFG = "cfg/smartcash_effb4.yaml"
EFF_YAML = "cfg/models/smartcash_effb4_yolov5.yaml"
STUDY = {"effb4_vs_cspdarknet_gpu_latency": 5.4, "mAP50_delta": -0.01, "mAP50-95_delta": 0.022}
"""The SmartCash study's headline: EfficientNet-B4 vs CSPDarknet, GPU ms/image 37.8 vs 7 and the mAP differences."""


@dataclass(frozen=True)
class Spec:
    """One compared model: how it is built and trained, and on which copy of the images."""

    label: str
    model: str  # SmartCash model YAML (repository path) or a stock Ultralytics model name
    cfg: str  # training cfg whose Ultralytics settings every model of a comparison shares
    smartcash: bool  # SmartCashTrainer on the arrays; else Ultralytics' DetectionTrainer on image files
    images: str = "npy"  # which tree it reads: npy, jpeg or png
    changes: dict = field(default_factory=dict)  # to the SmartCash model YAML: backbone, backbone_weights, training

    def model_arg(self, folder: Path | None = None) -> str:
        """Return the ``model=`` argument: a SmartCash YAML's absolute path (with ``changes``, written into
        ``folder``), or the bare name of a stock one."""
        if not self.smartcash:
            return self.model
        return str(model_yaml(self, folder) if self.changes else ROOT / self.model)


RANDOM_INIT = {"backbone_weights": None}  # the bench runs offline: the shipped EfficientNet-B4 YAML asks for timm's
IMAGENET_LITE0 = "imagenet-lite0"  # backbone_weights placeholder: bench/imagenet_lite0.py's real ImageNet weights
LITE0 = {"backbone": "tf_efficientnet_lite0"}
MODELS = {
    "cspdarknet-s": Spec("SmartCash CSPDarknet-s", "cfg/models/smartcash_cspdarknet_yolov5s.yaml", CSP_CFG, True),
    "effb4": Spec("SmartCash EfficientNet-B4", EFF_YAML, EFF_CFG, True, changes=RANDOM_INIT),
    "lite0": Spec("Lite0, random init", EFF_YAML, EFF_CFG, True, changes=LITE0 | RANDOM_INIT),
    "lite0-imagenet": Spec(
        "Lite0, ImageNet", EFF_YAML, EFF_CFG, True, changes=LITE0 | {"backbone_weights": IMAGENET_LITE0}
    ),
    "stock-yolov5s": Spec("stock yolov5s.yaml (JPEG)", "yolov5s.yaml", CSP_CFG, False, "jpeg"),
    "stock-yolov8n": Spec("stock yolov8n.yaml (JPEG)", "yolov8n.yaml", CSP_CFG, False, "jpeg"),
    "stock-yolov5s-png": Spec("stock yolov5s.yaml (PNG)", "yolov5s.yaml", CSP_CFG, False, "png"),
    "cspdarknet-n": Spec("SmartCash CSPDarknet-n", "cfg/models/smartcash_cspdarknet_yolov5n.yaml", CSP_CFG, True),
    "stock-yolov5n": Spec("stock yolov5n.yaml (JPEG)", "yolov5n.yaml", CSP_CFG, False, "jpeg"),
}


def model_yaml(spec: Spec, folder: Path | None) -> Path:
    """Write ``spec``'s model YAML with its ``changes`` into ``folder`` (default ``runs/bench/models``); return it.

    ``backbone`` swaps the timm network, ``backbone_weights`` sets the weights (``IMAGENET_LITE0``: the real ImageNet
    weights of ``bench/imagenet_lite0.py``, written once into the folder), ``training`` merges into
    ``smartcash.training``.
    """
    import yaml
    from imagenet_lite0 import backbone_weights

    folder = (folder or ROOT / "runs/bench/models").resolve()
    d = yaml.safe_load((ROOT / spec.model).read_text())
    changes = dict(spec.changes)
    if "backbone" in changes:
        d["backbone"][0][3][0] = changes.pop("backbone")
    if "backbone_weights" in changes:
        weights = changes.pop("backbone_weights")
        if weights == IMAGENET_LITE0:
            weights = backbone_weights(folder / "tf_efficientnet_lite0_imagenet.safetensors")
        d["smartcash"]["backbone_weights"] = weights
    d["smartcash"]["training"] = {**d["smartcash"].get("training", {}), **changes.pop("training", {})}
    if changes:
        raise ValueError(f"unknown model changes {sorted(changes)}")
    name = next(k for k, v in MODELS.items() if v == spec)
    path = folder / f"{name}.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, yaml.safe_dump(d, sort_keys=False).encode())
    return path


def make_trainer(spec: Spec, trees: dict[str, Path], overrides: dict):
    """Return the trainer that trains ``spec``: SmartCash's on the arrays, Ultralytics' own on the image files.

    Both get the SmartCash training settings and the training cfg ``spec.cfg`` under ``overrides``, so they differ
    only in trainer, model and data (a stock model is given the settings SmartCashTrainer applies by itself).
    """
    from ultralytics.models.yolo.detect import DetectionTrainer

    from smartcash_ultra.engine.trainer import SmartCashTrainer
    from smartcash_ultra.utils.settings import load_train_cfg, smartcash_defaults

    models = trees["npy"].parents[2] / "models"  # beside the data, in the part's working folder
    args = {**overrides, "model": spec.model_arg(models), "data": str(trees[spec.images])}
    if spec.smartcash:
        return SmartCashTrainer(ROOT / spec.cfg, overrides=args)
    return DetectionTrainer(overrides={**smartcash_defaults(), **load_train_cfg(ROOT / spec.cfg), **args})


def sample_trees(workdir: Path, n_train: int, n_valid: int, imgsz: int, formats: tuple[str, ...]) -> dict[str, Path]:
    """Write a fresh sample SmartCash tree under ``workdir/npy`` and its twins as image files; map tree -> data.yaml.

    The tree is rebuilt every time (generation is deterministic and takes seconds), so a tree of another size never
    leaves extra files behind.
    """
    from smartcash_ultra.tools.sample_data import generate_sample_dataset

    shutil.rmtree(workdir / "npy", ignore_errors=True)
    npy = generate_sample_dataset(
        workdir / "npy", n_train=n_train, n_valid=n_valid, n_test=0, imgsz=imgsz, seed=0, overwrite=True
    )
    return {"npy": npy, **{fmt: write_images(npy, workdir / fmt, fmt) for fmt in formats}}


def write_images(data_yaml: Path, dst: Path, fmt: str) -> Path:
    """Write every array of a SmartCash tree as an image file (``jpeg``: OpenCV quality 95, ``png``: lossless).

    Pixels are ``round(x * 255)``, the uint8 values the SmartCash loader makes of the arrays, so a PNG twin holds
    exactly the pixels the plugin trains on and a JPEG twin differs from them only by the compression.
    """
    import cv2
    import numpy as np

    shutil.rmtree(dst, ignore_errors=True)
    suffix, params = (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]) if fmt == "jpeg" else (".png", [])
    for npy in sorted(data_yaml.parent.glob("*/images/*.npy")):
        split = npy.parts[-3]
        for sub in ("images", "labels"):
            (dst / split / sub).mkdir(parents=True, exist_ok=True)
        bgr = cv2.cvtColor((np.load(npy) * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(dst / split / "images" / f"{npy.stem}{suffix}"), bgr, params)
        label = data_yaml.parent / split / "labels" / f"{npy.stem}.txt"
        shutil.copyfile(label, dst / split / "labels" / label.name)
    (dst / "data.yaml").write_text(data_yaml.read_text())
    return dst / "data.yaml"


def machine() -> dict:
    """Describe the machine and the library versions the figures were taken with."""
    import numpy as np
    import timm
    import torch
    import ultralytics

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        cpu = next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if "model name" in ln
            ),
            cpu,
        )
    memory = None
    if Path("/proc/meminfo").exists():
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = round(kb / 2**20, 1)
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gib": memory,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        **{runtime: installed_version(runtime) for runtime in ("onnxruntime", "openvino")},
    }


def installed_version(distribution: str) -> str | None:
    """Return the installed version of an optional package, None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def load_average() -> str:
    """Return the 1/5/15-minute load averages, as ``uptime`` shows them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median(xs: list[float]) -> float:
    """Return the median (the figure every part reports: robust to a round disturbed by another job)."""
    return statistics.median(xs)


def spread(xs: list[float]) -> list[float]:
    """Return [min, max] of per-round figures, rounded, to show how far single rounds strayed."""
    return [round(min(xs), 4), round(max(xs), 4)]


def md_table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    """Return a Markdown table; the first ``left`` columns are left-aligned, the others right-aligned."""
    align = ["---"] * left + ["---:"] * (len(header) - left)
    return [f"| {' | '.join(header)} |", f"|{'|'.join(align)}|", *(f"| {' | '.join(r)} |" for r in rows)]


def write_json(path: Path, document: dict) -> None:
    """Write ``document`` atomically (a reader never sees half a result)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(document, indent=1) + "\n").encode())


def add_output_args(p: argparse.ArgumentParser, part: str) -> None:
    """Add the options every part shares: where it works and where its JSON result and PNG chart go."""
    p.add_argument(
        "--workdir", type=Path, help=f"working folder (default runs/bench/{part}; --quick: runs/bench_quick)"
    )
    p.add_argument("--results-dir", type=Path, help="JSON folder (default bench/results; --quick: runs/bench_quick)")
    p.add_argument("--charts-dir", type=Path, help="PNG folder (default docs/img; --quick: the results folder)")
    p.add_argument("--name", default=part, help=f"file name of the JSON result and PNG chart (default {part})")


def workdir(args: argparse.Namespace, part: str) -> Path:
    """Return the part's working folder: ``--workdir``, else under runs/bench (runs/bench_quick for --quick)."""
    if args.workdir:
        return args.workdir.resolve()  # Ultralytics would put a relative project= under its own runs folder
    return ROOT / ("runs/bench_quick" if args.quick else "runs/bench") / part


def output_paths(name: str, args: argparse.Namespace) -> tuple[Path, Path]:
    """Return (JSON, PNG) paths: the recorded ones by default; under runs/bench_quick for --quick, never over them."""
    results_dir, charts_dir = args.results_dir, args.charts_dir
    if args.quick:
        results_dir = results_dir or ROOT / "runs/bench_quick"
        charts_dir = charts_dir or results_dir
    results_dir = results_dir or ROOT / "bench/results"
    charts_dir = charts_dir or ROOT / "docs/img"
    return results_dir / f"{name}.json", charts_dir / f"{name}.png"


def shown(path: Path) -> str:
    """Return ``path`` relative to the repository when it lies inside it (results do not name the checkout)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def finish(part: str, argv: list[str] | None, args, started: float, load_before: str, title: str, lines, **figures):
    """Write the part's JSON result (command, date, machine, load, settings, figures, chart, tables); print the tables.

    The chart must already be at its path (``output_paths``). Returns the document.
    """
    out_json, out_png = output_paths(args.name, args)
    document = {
        "command": " ".join([f"python bench/{part}.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "load_average_before_after": [load_before, load_average()],
        "wall_s": round(time.perf_counter() - started, 1),
        "settings": {k: shown(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        **figures,
        "chart": shown(out_png),
        "markdown": lines,
    }
    write_json(out_json, document)
    print(f"\n{title}\n\n" + "\n".join(lines))
    print(f"\nload average before/after: {document['load_average_before_after']}; wall {document['wall_s']} s")
    print(f"written {out_json} and {out_png}")
    return document


def pyplot():
    """Return matplotlib's pyplot on the file-only Agg backend (no display on benchmark machines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> None:
    """Lay out, write and close a chart."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
