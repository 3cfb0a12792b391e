"""Learnability and cost of the SmartCash detectors on the bundled sample, measured side by side in one run.

For each model: parameters and GFLOPs at --imgsz, CPU seconds per epoch (train + validation, from results.csv),
and mAP50 / mAP75 / mAP50-95 after every epoch, trained from scratch with the shipped cfgs. Prints a Markdown table
(pasted into docs/benchmarks.md) and writes the figures to --out as JSON.

    python bench/sample_training.py --epochs 10
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

import torch  # noqa: E402

from smartcash_ultra.engine.trainer import SmartCashTrainer  # noqa: E402
from smartcash_ultra.nn.model import SmartCashDetectionModel  # noqa: E402
from smartcash_ultra.tools.sample_data import ensure_sample_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = {  # name -> (training cfg, model YAML)
    "cspdarknet-n": ("cfg/smartcash_cspdarknet.yaml", "cfg/models/smartcash_cspdarknet_yolov5n.yaml"),
    "cspdarknet-s": ("cfg/smartcash_cspdarknet.yaml", "cfg/models/smartcash_cspdarknet_yolov5s.yaml"),
    "effb4": ("cfg/smartcash_effb4.yaml", "cfg/models/smartcash_effb4.yaml"),
}


def run(name: str, data: Path, args: argparse.Namespace) -> dict:
    """Train one model and return its figures."""
    cfg, model_yaml = MODELS[name]
    model = SmartCashDetectionModel(ROOT / model_yaml, nc=17, verbose=False)
    _, params, _, gflops = model.info(imgsz=args.imgsz, verbose=True)
    overrides = dict(
        model=str(ROOT / model_yaml),
        data=str(data),
        epochs=args.epochs,
        imgsz=args.imgsz,
        batch=args.batch,
        workers=args.workers,
        project=str(args.project),
        name=name,
        exist_ok=True,
        plots=False,
        warmup_epochs=min(3, args.epochs - 1),
    )
    start = time.perf_counter()
    result = SmartCashTrainer(ROOT / cfg, overrides=overrides).train()
    wall = time.perf_counter() - start
    with open(result.save_dir / "results.csv", newline="") as f:
        rows = [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    times = [rows[0]["time"]] + [b["time"] - a["time"] for a, b in zip(rows, rows[1:], strict=False)]
    return {
        "params": params,
        "gflops": round(gflops, 2),
        "seconds_per_epoch": round(sum(times) / len(times), 1),
        "wall_seconds": round(wall, 1),
        "mAP50_per_epoch": [round(r["metrics/mAP50(B)"], 4) for r in rows],
        "final": {k: round(result.metrics[f"metrics/{k}(B)"], 4) for k in ("mAP50", "mAP75", "mAP50-95")},
    }


def main() -> None:
    """Run the models named by --models in turn and report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data", type=Path, default=ROOT / "data/sample")
    p.add_argument("--project", type=Path, default=ROOT / "runs/bench")
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/sample_training.json")
    args = p.parse_args()
    data = ensure_sample_dataset(args.data)
    results = {name: run(name, data, args) for name in args.models}
    report = {
        "command": f"python bench/sample_training.py --epochs {args.epochs} --imgsz {args.imgsz} --models "
        + " ".join(args.models),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, torch "
        f"{torch.__version__}, {torch.get_num_threads()} intra-op threads",
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"\n{report['command']}  ({report['date']}, {report['machine']})\n")
    print(f"| model | params | GFLOPs @{args.imgsz} | CPU s/epoch | mAP50 | mAP75 | mAP50-95 | mAP50 by epoch |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, r in results.items():
        f = r["final"]
        curve = " ".join(f"{x:.2f}" for x in r["mAP50_per_epoch"])
        print(
            f"| {name} | {r['params'] / 1e6:.2f}M | {r['gflops']} | {r['seconds_per_epoch']} | {f['mAP50']:.3f} "
            f"| {f['mAP75']:.3f} | {f['mAP50-95']:.3f} | {curve} |"
        )


if __name__ == "__main__":
    main()
