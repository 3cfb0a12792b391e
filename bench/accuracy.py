"""Accuracy for an equal budget: both SmartCash detectors and stock Ultralytics YOLOv5s / YOLOv8n, from scratch.

Every model trains from random init for the same epochs on the same images with the same settings:

- data: a fresh sample SmartCash tree (``generate_sample_dataset``, seed 0: ``--n-train`` originals plus one
  ``aug_*`` variant each, ``--n-valid`` validation images, 17 classes, ``--imgsz`` px); the stock models read the
  same images written as JPEG (OpenCV quality 95) and are trained by Ultralytics' own ``DetectionTrainer``;
- settings: the shipped training cfg (the SmartCash spec: Adam, lr0 0.001, cosine to 1e-5, weight decay 5e-4, seed
  0, deterministic) for all models, with what the budget changes: imgsz, epochs, batch, ``nbs`` and warm-up;
- noise: CSPDarknet-s trains a second time with another seed (``cspdarknet-s@1``); the gap between its two runs is
  what chance alone does in this budget, the yardstick for "CSPDarknet-s matches stock YOLOv5s within noise";
- pipeline check, before any training: the SmartCash trainer (arrays) and Ultralytics' trainer (the PNG twin, which
  holds exactly the arrays' uint8 pixels, and the JPEG twin) are set up for CSPDarknet-s / ``yolov5s.yaml``, and
  their initial weights, first training batch and loss on it are compared.

mAP50, mAP75 and mAP50-95 are the validation figures of every epoch (the learning curves) and of the final
validation of ``best.pt``, from each trainer's own validator. Each run trains in its own process; ``--jobs`` of them
at once (longest first). Ultralytics trains on ``cpu_count - 1`` torch threads, one on a 2-core machine, so two
runs at once use both cores; the figures do not depend on it (each run is deterministic), only the wall time does.

    python bench/accuracy.py            # 80+80 train / 40 valid images at 256 px, 10 epochs, batch 8, 5 runs
    python bench/accuracy.py --quick    # smoke run: 4+4 / 2 images at 64 px, 1 epoch
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchlib import (
    MODELS,
    STUDY,
    add_output_args,
    finish,
    load_average,
    make_trainer,
    md_table,
    output_paths,
    pyplot,
    sample_trees,
    save_figure,
    workdir,
)

RUNS = ["effb4", "cspdarknet-s", "stock-yolov5s", "stock-yolov8n", "cspdarknet-s@1"]
"""Default runs, longest first (EfficientNet-B4 alone takes as long as the other four on one core each)."""
KEYS = ("mAP50", "mAP75", "mAP50-95")


def parse_run(run: str) -> tuple[str, int]:
    """Split a run id ``model`` or ``model@seed`` into the model name and the seed (0 when not given)."""
    name, _, seed = run.partition("@")
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r} in run {run!r}; one of {', '.join(MODELS)}")
    return name, int(seed or 0)


def budget(args: argparse.Namespace, seed: int, workers: int) -> dict:
    """Return the overrides every model trains with: the budget's changes to the shipped training cfg."""
    return dict(
        imgsz=args.imgsz,
        epochs=args.epochs,
        batch=args.batch,
        nbs=args.nbs,
        warmup_epochs=args.warmup_epochs,
        workers=workers,
        seed=seed,
        device=args.device,
        plots=False,
        project=str(args.workdir / "runs"),
        exist_ok=True,
    )


# Child: one training run in its own process ---------------------------------------------------------------------------
def train_one(run: str, trees: dict[str, Path], args: argparse.Namespace) -> dict:
    """Train one run and return its per-epoch and final figures."""
    from ultralytics.utils.torch_utils import get_flops, get_num_params, unwrap_model

    name, seed = parse_run(run)
    trainer = make_trainer(MODELS[name], trees, {**budget(args, seed, args.workers), "name": run})
    epochs: list[dict] = []

    def record(tr) -> None:
        box = tr.validator.metrics.box
        row = {"epoch": tr.epoch + 1, **dict(zip(KEYS, (box.map50, box.map75, box.map), strict=True))}
        epochs.append(
            {k: v if k == "epoch" else round(float(v), 5) for k, v in row.items()}
            | {"epoch_s": round(tr.epoch_time or 0, 1)}
        )

    trainer.add_callback("on_fit_epoch_end", record)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    model = unwrap_model(trainer.model)
    # Ultralytics' final validation of best.pt (when there is one) fires one more on_fit_epoch_end, early stop or not
    final = epochs.pop() if Path(trainer.best).exists() else epochs[-1]
    return {
        "run": run,
        "model": name,
        "seed": seed,
        "label": MODELS[name].label + (f", seed {seed}" if seed else ""),
        "trainer": type(trainer).__name__,
        "images": MODELS[name].images,
        "params": get_num_params(model),
        "gflops": round(get_flops(model, args.imgsz), 2),
        "wall_s": round(wall, 1),
        "seconds_per_epoch": round(sum(e["epoch_s"] for e in epochs) / max(len(epochs), 1), 1),
        "final": {k: final[k] for k in KEYS},
        "epochs": epochs,
        "save_dir": str(trainer.save_dir),
    }


def train(run: str, trees: dict[str, Path], args: argparse.Namespace) -> dict:
    """Train ``run`` in a fresh interpreter (log in the workdir; ``--jobs 0``: in this one) and return its figures."""
    start = time.perf_counter()
    figures = train_one(run, trees, args) if args.jobs == 0 else train_in_child(run, trees, args)
    f = figures["final"]
    print(
        f"{run}: mAP50 {f['mAP50']:.3f} mAP75 {f['mAP75']:.3f} mAP50-95 {f['mAP50-95']:.3f} "
        f"({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    return figures


def train_in_child(run: str, trees: dict[str, Path], args: argparse.Namespace) -> dict:
    """Train ``run`` in a fresh interpreter, its output in ``<workdir>/logs/<run>.log``; return its figures."""
    logs = args.workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    result = logs / f"{run}.json"
    result.unlink(missing_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    cfg = {"run": run, "trees": {k: str(v) for k, v in trees.items()}, "args": settings, "result": str(result)}
    with open(logs / f"{run}.log", "w") as log:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    if proc.returncode != 0 or not result.exists():
        tail = (logs / f"{run}.log").read_text()[-3000:]
        raise RuntimeError(f"run {run} failed (exit {proc.returncode}); end of {logs / f'{run}.log'}:\n{tail}")
    return json.loads(result.read_text())


# Pipeline check: SmartCash arrays vs stock PNG / JPEG, before any training ----------------------------------------
def pipeline_check(trees: dict[str, Path], args: argparse.Namespace) -> dict:
    """Compare initial weights, first training batch and its loss: SmartCash on arrays vs stock on PNG and on JPEG."""
    import torch

    setups = {}
    for key, name in (("npy", "cspdarknet-s"), ("png", "stock-yolov5s-png"), ("jpeg", "stock-yolov5s")):
        trainer = make_trainer(MODELS[name], trees, {**budget(args, 0, 0), "name": f"check_{key}"})
        trainer._setup_train()  # the trainer's own set-up (private, but what train() runs): seeded model, loaders
        batch = next(iter(trainer.train_loader))
        model = trainer.model.train()
        state = {k: v.clone() for k, v in model.state_dict().items()}  # before the forward moves BN running stats
        with torch.no_grad():
            loss, _ = model(
                trainer.preprocess_batch({k: v.clone() if hasattr(v, "clone") else v for k, v in batch.items()})
            )
        setups[key] = (state, batch, float(loss.sum()))
    ref_state, ref_batch, ref_loss = setups["npy"]
    out = {
        "first_batch_images": int(ref_batch["img"].shape[0]),
        "first_batch_instances": int(ref_batch["cls"].shape[0]),
    }
    for key in ("png", "jpeg"):
        state, batch, loss = setups[key]
        diff = (ref_batch["img"].int() - batch["img"].int()).abs()
        mse = float((diff.float() ** 2).mean())
        out[key] = {
            "same_initial_weights": list(state) == list(ref_state)
            and all(torch.equal(state[k], ref_state[k]) for k in ref_state),
            "same_files_in_batch": [Path(f).stem for f in batch["im_file"]]
            == [Path(f).stem for f in ref_batch["im_file"]],
            "same_labels": all(torch.equal(batch[k], ref_batch[k]) for k in ("cls", "bboxes", "batch_idx")),
            "pixels_differing_pct": round(100 * float((diff > 0).float().mean()), 3),
            "pixel_mean_abs_diff": round(float(diff.float().mean()), 4),
            "pixel_max_abs_diff": int(diff.max()),
            "psnr_db": round(10 * math.log10(255**2 / mse), 2) if mse else None,
            "first_batch_loss": round(loss, 6),
            "smartcash_first_batch_loss": round(ref_loss, 6),
        }
    return out


def chart(runs: dict[str, dict], path: Path, title: str, colours: dict[str, str] | None = None) -> None:
    """Learning curves: validation mAP50 and mAP50-95 per epoch of every run, in one figure.

    ``colours`` maps run ids to colours (default: one colour per model); other seeds and the PNG twin are dashed.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharex=True)
    styles = {"cspdarknet-s": "#4c72b0", "effb4": "#dd8452", "stock-yolov5s": "#555555", "stock-yolov8n": "#55a868"}
    for r in runs.values():
        xs = [e["epoch"] for e in r["epochs"]]
        dashed = r["seed"] != 0 or r["images"] == "png"
        for ax, key in zip(axes, ("mAP50", "mAP50-95"), strict=True):
            ax.plot(
                xs,
                [e[key] for e in r["epochs"]],
                marker="o",
                ms=3,
                ls="--" if dashed else "-",
                color=(colours or {}).get(r["run"]) or styles.get(r["model"], "#8172b3"),
                label=r["label"],
            )
    for ax, key in zip(axes, ("mAP50", "mAP50-95"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"validation {key}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def comparisons(runs: dict[str, dict]) -> dict[str, dict]:
    """Differences of the final figures that the issue asks about (first minus second)."""
    pairs = {
        "SmartCash CSPDarknet-s − stock yolov5s (JPEG)": ("cspdarknet-s", "stock-yolov5s"),
        "seed noise: CSPDarknet-s seed 1 − seed 0": ("cspdarknet-s@1", "cspdarknet-s"),
        "SmartCash CSPDarknet-s − stock yolov5s (PNG)": ("cspdarknet-s", "stock-yolov5s-png"),
        "EfficientNet-B4 − CSPDarknet-s": ("effb4", "cspdarknet-s"),
        "stock yolov8n − stock yolov5s": ("stock-yolov8n", "stock-yolov5s"),
    }
    return {
        label: {k: round(runs[a]["final"][k] - runs[b]["final"][k], 4) for k in KEYS}
        for label, (a, b) in pairs.items()
        if a in runs and b in runs
    }


def add_budget_args(p: argparse.ArgumentParser, imgsz: int, n_train: int, batch: int = 8) -> None:
    """Add the options of a training budget (shared with ``bench/pretrained.py``), with these defaults."""
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--imgsz", type=int, default=imgsz)
    p.add_argument("--batch", type=int, default=batch, help="small enough for 200+ batches: BatchNorm statistics")
    p.add_argument("--nbs", type=int, default=16, help="nominal batch: gradients accumulate over nbs/batch batches")
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--n-train", type=int, default=n_train, help="original training images; each gets one aug_* variant")
    p.add_argument("--n-valid", type=int, default=40)
    p.add_argument("--workers", type=int, default=2, help="data loader workers per run")
    p.add_argument("--jobs", type=int, default=2, help="runs training at once, each in its own process; 0: in this one")
    p.add_argument("--device", default="cpu", help="cpu, cuda or a CUDA device index such as 0")


def settle_budget(args: argparse.Namespace, part: str) -> None:
    """Apply ``--quick`` (4+4 / 2 images at 64 px, 1 epoch, batch 4, in this process), check the runs, set workdir."""
    if args.quick:
        args.epochs, args.imgsz, args.batch, args.nbs, args.n_train, args.n_valid = 1, 64, 4, 4, 4, 2
        args.workers, args.warmup_epochs, args.jobs = 0, 0.0, 0
    args.device = "0" if args.device == "cuda" else args.device
    for run in args.runs:
        parse_run(run)
    args.workdir = workdir(args, part)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 4+4 / 2 images at 64 px, 1 epoch, batch 4")
    p.add_argument(
        "--runs", nargs="+", default=RUNS, help="model or model@seed, longest first; models: " + ", ".join(MODELS)
    )
    add_budget_args(p, imgsz=256, n_train=80)
    p.add_argument("--no-check", action="store_true", help="skip the pipeline check")
    p.add_argument("--child", help=argparse.SUPPRESS)
    add_output_args(p, "accuracy")
    args = p.parse_args(argv)
    if args.child:
        cfg = json.loads(args.child)
        settings = argparse.Namespace(**{**cfg["args"], "workdir": Path(cfg["args"]["workdir"])})
        figures = train_one(cfg["run"], {k: Path(v) for k, v in cfg["trees"].items()}, settings)
        Path(cfg["result"]).write_text(json.dumps(figures))
        return
    settle_budget(args, "accuracy")
    started, load_before = time.perf_counter(), load_average()

    trees = sample_trees(args.workdir / "data", args.n_train, args.n_valid, args.imgsz, ("jpeg", "png"))
    check = None if args.no_check else pipeline_check(trees, args)
    if check:
        print("pipeline check:", json.dumps(check), flush=True)
    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        results = list(pool.map(lambda run: train(run, trees, args), args.runs))
    runs = {r["run"]: r for r in results}

    rows = []
    for r in runs.values():
        f = r["final"]
        rows.append(
            [
                r["label"],
                f"{r['trainer']}, {r['images']}",
                f"{r['params'] / 1e6:.2f}M",
                f"{r['gflops']:.1f}",
                f"{r['seconds_per_epoch']:.1f}",
                *(f"{f[k]:.3f}" for k in KEYS),
                " ".join(f"{e['mAP50']:.2f}" for e in r["epochs"]),
            ]
        )
    lines = md_table(
        ["model", "trainer, data", "params", f"GFLOPs @{args.imgsz}", "wall s/epoch", *KEYS, "mAP50 by epoch"],
        rows,
        left=2,
    )
    lines[1] = lines[1].rsplit("|", 2)[0] + "|---|"  # the curve column reads better left-aligned
    diffs = comparisons(runs)
    study = {"EfficientNet-B4 − CSPDarknet-s": STUDY}
    lines += [""] + md_table(
        ["difference of final figures", "ΔmAP50", "ΔmAP75", "ΔmAP50-95", "SmartCash study"],
        [
            [
                label,
                *(f"{d[k]:+.3f}" for k in KEYS),
                f"{study[label]['mAP50_delta']:+.3f} / – / {study[label]['mAP50-95_delta']:+.3f} (pretrained)"
                if label in study
                else "–",
            ]
            for label, d in diffs.items()
        ],
    )
    title = (
        f"from scratch, {args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}, "
        f"{2 * args.n_train} train / {args.n_valid} valid sample images"
    )
    chart(runs, output_paths(args.name, args)[1], title)
    figures = {"pipeline_check": check, "runs": runs, "differences": diffs, "study": STUDY}
    finish("accuracy", argv, args, started, load_before, title, lines, **figures)


if __name__ == "__main__":
    main()
