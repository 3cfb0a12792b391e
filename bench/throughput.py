"""Training throughput: images/s of a training step, SmartCash models and stock Ultralytics side by side in one run.

Each model is set up by its own trainer exactly as a training run sets it up (``_setup_train``: model, optimizer,
EMA, gradient scaler, data loaders): SmartCash YAMLs by ``SmartCashTrainer`` on the ``.npy`` arrays, stock
``yolov5s.yaml`` by Ultralytics' ``DetectionTrainer`` on the same images as JPEG, all with the same training cfg.
One batch from each trainer's own training loader is then stepped again and again as the trainer steps it: forward
and loss (under the trainer's autocast), backward, ``optimizer_step`` (unscale, gradient clipping, optimizer step,
zero_grad, EMA update). Data loading is not timed. Models alternate step by step within every round, in an order
that goes there and back (A B C C B A, rotated each round), so all of them see the same machine load and a load
that changes during a round weighs on all alike; a model's figure is the median over rounds of its mean step in
the round, and a ratio is the median of the per-round ratios.

    python bench/throughput.py                   # imgsz 320, batch 16, 5 rounds; CPU
    python bench/throughput.py --device cuda     # the same on a GPU (AMP as in training)
    python bench/throughput.py --quick           # smoke run: imgsz 64, batch 2, 2 rounds
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchlib import (
    MODELS,
    add_output_args,
    finish,
    load_average,
    make_trainer,
    md_table,
    median,
    output_paths,
    pyplot,
    sample_trees,
    save_figure,
    spread,
    workdir,
)

PAIRS = {  # ratio name -> (numerator, denominator, target of images/s ratio or None)
    "cspdarknet-s / stock-yolov5s": ("cspdarknet-s", "stock-yolov5s", 0.98),
    "effb4 / cspdarknet-s": ("effb4", "cspdarknet-s", None),
}


def set_up(name: str, trees: dict[str, Path], args: argparse.Namespace):
    """Return the trainer of ``name`` after the set-up a training run does, and one preprocessed training batch."""
    trainer = make_trainer(
        MODELS[name],
        trees,
        dict(
            imgsz=args.imgsz,
            batch=args.batch,
            workers=0,
            plots=False,
            device=args.device,
            project=str(args.workdir / "runs"),
            name=name,
            exist_ok=True,
        ),
    )
    trainer._setup_train()  # what train() does before its first batch; private, but it is the trainer's own set-up
    trainer.model.train()
    batch = trainer.preprocess_batch(next(iter(trainer.train_loader)))
    return trainer, batch


def step(trainer, batch, sync) -> float:
    """Time one training step as ``BaseTrainer._do_train`` runs it (without the warm-up and logging around it)."""
    from ultralytics.utils.torch_utils import autocast

    start = time.perf_counter()
    with autocast(trainer.amp, device=trainer.device.type):
        loss, _ = trainer.model(batch)
        trainer.loss = loss.sum()
    trainer.scaler.scale(trainer.loss).backward()
    trainer.optimizer_step()
    sync()
    return time.perf_counter() - start


def describe(trainer, batch, imgsz: int) -> dict:
    """Parameters, GFLOPs and layer types of the trainer's model, and what the timed batch holds."""
    from ultralytics.utils.torch_utils import get_flops, get_num_params, unwrap_model

    model = unwrap_model(trainer.model)
    return {
        "params": get_num_params(model),
        "gflops": round(get_flops(model, imgsz), 2),
        "layers": [type(m).__name__ for m in model.model],  # compared below, then replaced by their count
        "trainer": type(trainer).__name__,
        "batch_images": int(batch["img"].shape[0]),
        "batch_instances": int(batch["cls"].shape[0]),
    }


def chart(models: dict, ratios: dict, path: Path, title: str) -> None:
    """Bar chart of images/s per model (median, with the range over rounds) and the ratios in the title."""
    plt = pyplot()
    names = list(models)
    med = [models[n]["images_per_s"] for n in names]
    lo = [m - min(models[n]["images_per_s_rounds"]) for m, n in zip(med, names, strict=True)]
    hi = [max(models[n]["images_per_s_rounds"]) - m for m, n in zip(med, names, strict=True)]
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(
        [models[n]["label"] for n in names], med, xerr=[lo, hi], color=["#4c72b0", "#999999", "#dd8452"][: len(names)]
    )
    for i, (m, h) in enumerate(zip(med, hi, strict=True)):
        ax.text(m + h, i, f"  {m:.2f}", va="center")
    ax.set_xlim(right=max(m + h for m, h in zip(med, hi, strict=True)) * 1.15)  # room for the labels
    ax.invert_yaxis()
    ax.set_xlabel("training images/s (median; bars: range over rounds)")
    ax.set_title(title + "\n" + ", ".join(f"{k}: {v['ratio']:.3f}×" for k, v in ratios.items()), fontsize=9)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: imgsz 64, batch 2, 2 rounds")
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5, help="timed rounds; each steps every model 2 x --steps times")
    p.add_argument("--steps", type=int, default=1, help="timed steps per model per visit (two visits a round)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--device", default="cpu", help="cpu or cuda (GPU 0)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads; 0: as Ultralytics trains on CPU")
    p.add_argument("--models", nargs="+", default=["cspdarknet-s", "stock-yolov5s", "effb4"], choices=list(MODELS))
    add_output_args(p, "throughput")
    args = p.parse_args(argv)
    if args.quick:
        args.imgsz, args.batch, args.rounds, args.steps, args.warmup = 64, 2, 2, 1, 1
    args.device = "0" if args.device == "cuda" else args.device
    args.workdir = workdir(args, "throughput")
    started, load_before = time.perf_counter(), load_average()

    import torch

    cuda = args.device not in {"cpu", ""}
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    trees = sample_trees(args.workdir / "data", max(1, args.batch // 2), 2, max(64, args.imgsz), ("jpeg",))
    setups = {name: set_up(name, trees, args) for name in args.models}
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    for trainer, batch in setups.values():
        for _ in range(args.warmup):
            step(trainer, batch, sync)
    times: dict[str, list[float]] = {name: [] for name in args.models}
    for r in range(args.rounds):
        order = args.models[r % len(args.models) :] + args.models[: r % len(args.models)]
        spent = dict.fromkeys(args.models, 0.0)
        for name in order + order[::-1]:  # there and back: a load that rises or falls within the round cancels out
            trainer, batch = setups[name]
            spent[name] += sum(step(trainer, batch, sync) for _ in range(args.steps))
        for name in args.models:
            times[name].append(spent[name] / (2 * args.steps))
        print(
            f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in args.models), flush=True
        )

    models = {}
    for name, ts in times.items():
        trainer, batch = setups[name]
        ips = [len(batch["img"]) / t for t in ts]  # the images the batch holds (an odd --batch gets one fewer)
        models[name] = {
            "label": MODELS[name].label,
            **describe(trainer, batch, args.imgsz),
            "step_s": round(median(ts), 4),
            "step_s_rounds": [round(t, 4) for t in ts],
            "images_per_s": round(median(ips), 3),
            "images_per_s_rounds": [round(x, 3) for x in ips],
        }
    ratios = {}
    for key, (a, b, target) in PAIRS.items():
        if a in times and b in times:
            per_round = [tb / ta for ta, tb in zip(times[a], times[b], strict=True)]  # images/s of a over b
            ratios[key] = {"ratio": round(median(per_round), 4), "rounds": spread(per_round), "target": target}
            if target is not None:
                ratios[key]["met"] = ratios[key]["ratio"] >= target
    if "cspdarknet-s" in models and "stock-yolov5s" in models:
        ours, stock = models["cspdarknet-s"], models["stock-yolov5s"]
        ratios["cspdarknet-s / stock-yolov5s"]["same_layers_and_params"] = (
            ours["layers"] == stock["layers"] and ours["params"] == stock["params"]
        )
    for m in models.values():
        m["layers"] = len(m["layers"])

    device = torch.cuda.get_device_name(0) if cuda else f"CPU, {threads} torch thread(s)"
    lines = md_table(
        ["model", "trainer, data", "params", f"GFLOPs @{args.imgsz}", "s/step", "images/s", "range over rounds"],
        [
            [
                m["label"],
                f"{m['trainer']}, {MODELS[n].images}",
                f"{m['params'] / 1e6:.2f}M",
                f"{m['gflops']:.1f}",
                f"{m['step_s']:.3f}",
                f"{m['images_per_s']:.2f}",
                f"{min(m['images_per_s_rounds']):.2f}–{max(m['images_per_s_rounds']):.2f}",
            ]
            for n, m in models.items()
        ],
        left=2,
    )
    lines += [""] + md_table(
        ["images/s ratio", "median of rounds", "range over rounds", "target"],
        [
            [
                k,
                f"{v['ratio']:.3f}×",
                f"{v['rounds'][0]:.3f}–{v['rounds'][1]:.3f}",
                f"≥ {v['target']}" if v["target"] else "–",
            ]
            for k, v in ratios.items()
        ],
    )
    title = f"training step, batch {args.batch}, imgsz {args.imgsz}, {device}"
    chart(models, ratios, output_paths(args.name, args)[1], title)
    figures = {"device": device, "torch_threads": threads, "models": models, "ratios": ratios}
    finish("throughput", argv, args, started, load_before, title, lines, **figures)


if __name__ == "__main__":
    main()
