"""Inference latency of both SmartCash detectors, PyTorch and ONNX Runtime, measured side by side in one run.

For each backbone a model is built (random init: speed does not depend on the weights), saved as an Ultralytics
checkpoint and exported with Ultralytics' exporter as ``yolo export format=onnx dynamic=True`` would export a trained
``best.pt``. Timed is the network's forward pass on a ready input tensor (no image decoding, letterbox or NMS):

- PyTorch: the fused model (``model.fuse()``, Conv+BN folded, as Ultralytics predicts), eval mode, inference mode,
  fp32 (``--half``: fp16 on a GPU), in the memory format Ultralytics' ``AutoBackend`` gives it when ``predict`` or
  ``val`` runs it: channels-last on x86 CPUs with oneDNN and on GPUs (backend ``pytorch-contiguous``: the same model
  left contiguous, as this script timed it before);
- ONNX Runtime: the exported graph on the CPU execution provider (on a GPU the CUDA provider, when installed).

Batch 1 gives ms/image (median of ``--repeats`` calls per round), batch ``--batch`` (16) gives images/s (one call per
round). Both models and both backends alternate within every round, in an order rotated each round, after one
untimed warm-up round; figures are medians over rounds and each EfficientNet-B4 / CSPDarknet ratio is the median of
the per-round ratios, set next to the SmartCash study's 5.4× (37.8 vs 7 ms per image on a GPU).

    python bench/latency.py                       # CPU, imgsz 640, batch 1 and 16, 3 rounds
    python bench/latency.py --device cuda --half  # the same on a GPU in fp16
    python bench/latency.py --quick               # smoke run: imgsz 64, batch 1 and 2, 1 round
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchlib import (
    MODELS,
    STUDY,
    add_output_args,
    finish,
    load_average,
    md_table,
    median,
    output_paths,
    pyplot,
    save_figure,
    spread,
    workdir,
)

BACKENDS = ("pytorch", "onnxruntime")
UNFUSED = "pytorch-unfused-timm"
"""PyTorch with Ultralytics' own fuse only: the timm backbone's BatchNorm as it was before the plugin fused it."""
CONTIGUOUS = "pytorch-contiguous"
"""The fused PyTorch model left in contiguous (NCHW) memory, where ``AutoBackend`` would make it channels-last."""
BACKEND_LABELS = {
    "pytorch": "PyTorch (fused)",
    "onnxruntime": "ONNX Runtime",
    UNFUSED: "PyTorch (timm BN unfused)",
    CONTIGUOUS: "PyTorch (fused, contiguous)",
}


def build(name: str, folder: Path, args: argparse.Namespace, onnx: bool) -> tuple[dict, Path | None, dict]:
    """Build ``name`` (17 classes), save it as a checkpoint, export ONNX; return the PyTorch models, ONNX path, info.

    The PyTorch models: ``pytorch``, fused by the model's ``fuse()`` as Ultralytics predicts (the timm backbone's
    BatchNorm included), and ``pytorch-unfused-timm``, fused by Ultralytics' own ``fuse()`` alone.
    """
    import copy

    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import get_flops, get_num_params, init_seeds

    from smartcash_ultra.nn.model import SmartCashDetectionModel
    from smartcash_ultra.utils.classes import NAMES

    init_seeds(0)
    model = SmartCashDetectionModel(MODELS[name].model_arg(folder / "models"), nc=len(NAMES), verbose=False)
    model.names = dict(enumerate(NAMES))
    info = {
        "label": MODELS[name].label,
        "params": get_num_params(model),
        "gflops": round(get_flops(model, args.imgsz), 2),
    }
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / f"{name}.pt"
    torch.save({"model": model, "train_args": {"task": "detect", "imgsz": args.imgsz}}, ckpt)
    if onnx:
        start = time.perf_counter()
        onnx = YOLO(ckpt).export(
            format="onnx",
            imgsz=args.imgsz,
            dynamic=True,  # one graph for batch 1 and batch 16
            simplify=not args.quick,
            batch=1,
            half=args.half,
            device="0" if args.device == "cuda" else "cpu",
            verbose=False,
        )
        info["export_s"] = round(time.perf_counter() - start, 1)
    unfused = copy.deepcopy(model)
    DetectionModel.fuse(unfused, verbose=False)  # Ultralytics' fuse, without the SmartCash override
    fused = model.fuse(verbose=False)
    models = {"pytorch": fused, UNFUSED: unfused, CONTIGUOUS: copy.deepcopy(fused)}
    models = {k: m.eval().to(device(args)) for k, m in models.items()}
    from ultralytics.nn.autobackend import AutoBackend

    for name in ("pytorch", UNFUSED):  # AutoBackend sets the memory format in place, as predict and val run them
        AutoBackend(models[name], device=torch.device(device(args)), fuse=False, verbose=False)
    conv = next(p for p in models["pytorch"].parameters() if p.dim() == 4 and p.shape[-1] > 1)  # not 1x1: both
    info["channels_last"] = conv.is_contiguous(memory_format=torch.channels_last)  # formats are contiguous there
    return {k: m.half() if args.half else m for k, m in models.items()}, Path(onnx) if onnx else None, info


def device(args: argparse.Namespace) -> str:
    """Return the torch device string of ``--device``."""
    return "cuda:0" if args.device == "cuda" else "cpu"


def runner(backend: str, model, onnx: Path, args: argparse.Namespace):
    """Return ``run(batch_size)`` that times one forward pass of that batch size on the backend, in seconds."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    inputs = {b: rng.random((b, 3, args.imgsz, args.imgsz), dtype=np.float32) for b in (1, args.batch)}
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if backend.startswith("pytorch"):
        model = model[backend]
        dtype = torch.float16 if args.half else torch.float32
        tensors = {b: torch.from_numpy(x).to(device(args), dtype) for b, x in inputs.items()}

        def run(b: int) -> float:
            with torch.inference_mode():
                sync()
                start = time.perf_counter()
                model(tensors[b])
                sync()
                return time.perf_counter() - start

        return run
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    providers = ["CUDAExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(onnx), options, providers=providers)
    name = session.get_inputs()[0].name
    feeds = {b: x.astype(np.float16) if args.half else x for b, x in inputs.items()}

    def run(b: int) -> float:
        start = time.perf_counter()
        session.run(None, {name: feeds[b]})
        return time.perf_counter() - start

    return run


def chart(results: dict, ratios: dict, path: Path, title: str, batch: int) -> None:
    """Grouped bars: ms/image at batch 1 and at batch ``batch`` per model and backend (log scale), ratios in titles."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    top = 0.0
    for ax, b in zip(axes, (1, batch), strict=True):
        labels, values, colours = [], [], []
        for backend in results["backends"]:
            for name in results["models"]:
                r = results["models"][name][backend]
                labels.append(f"{'EffB4' if name == 'effb4' else 'CSP-s'}\n{backend}")
                values.append(r["b1_ms"] if b == 1 else 1e3 / r["batch_images_per_s"])
                colours.append("#dd8452" if name == "effb4" else "#4c72b0")
        ax.bar(labels, values, color=colours)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
        key = "b1_time_ratio" if b == 1 else "batch_time_ratio"
        ax.set_title(
            f"batch {b}: EffB4/CSP-s "
            + ", ".join(f"{k} {ratios[k][key]:.2f}×" for k in results["backends"])
            + f" (study {STUDY['effb4_vs_cspdarknet_gpu_latency']}×)",
            fontsize=8,
        )
        ax.set_yscale("log")
        top = max(top, max(values) * 1.5)  # room for the highest bar's label
        ax.tick_params(axis="x", labelsize=7)
    axes[0].set_ylim(top=top)
    axes[0].set_ylabel("ms per image (median)")
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: imgsz 64, batch 1 and 2, 1 round, no onnxslim")
    p.add_argument("--imgsz", type=int, default=640, help="the SmartCash arrays' size")
    p.add_argument("--batch", type=int, default=16, help="the throughput batch (ms/image is always at batch 1 too)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds after one untimed warm-up round")
    p.add_argument("--repeats", type=int, default=3, help="batch-1 calls per configuration per round")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--half", action="store_true", help="fp16 model and ONNX graph (GPU only)")
    p.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads; 0: as Ultralytics on CPU")
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=[*BACKENDS, UNFUSED, CONTIGUOUS])
    p.add_argument("--models", nargs=2, default=["cspdarknet-s", "effb4"], metavar=("CSPDARKNET", "EFFB4"))
    add_output_args(p, "latency")
    args = p.parse_args(argv)
    if args.half and args.device != "cuda":
        p.error("--half needs --device cuda (fp16 convolutions on a CPU are not what anyone deploys)")
    if args.quick:
        args.imgsz, args.batch, args.rounds, args.repeats = 64, 2, 1, 1
    started, load_before = time.perf_counter(), load_average()

    import torch
    from ultralytics.utils import NUM_THREADS

    args.threads = args.threads or NUM_THREADS
    torch.set_num_threads(args.threads)
    backends = list(args.backends)
    if args.device == "cuda" and "onnxruntime" in backends:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            print("ONNX Runtime has no CUDA provider here (onnxruntime-gpu not installed): PyTorch only")
            backends = [b for b in backends if b != "onnxruntime"]
    info, runs = {}, {}
    for name in args.models:
        models, onnx, info[name] = build(name, workdir(args, "latency"), args, "onnxruntime" in backends)
        for backend in backends:
            runs[(name, backend)] = runner(backend, models, onnx, args)
    torch.set_num_threads(args.threads)  # the exporter's select_device may have reset it
    configs = list(runs)
    b1: dict[tuple, list[float]] = {c: [] for c in configs}
    bn: dict[tuple, list[float]] = {c: [] for c in configs}
    for r in range(args.rounds + 1):  # round 0 warms every configuration up and is not kept
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        for c in order:
            one = median([runs[c](1) for _ in range(args.repeats)])
            many = runs[c](args.batch)
            if r:
                b1[c].append(one * 1e3)
                bn[c].append(args.batch / many)
        if r:
            print(
                f"round {r}/{args.rounds}: "
                + ", ".join(f"{n} {be}: {b1[(n, be)][-1]:.1f} ms, {bn[(n, be)][-1]:.2f} img/s" for n, be in configs),
                flush=True,
            )

    csp, eff = args.models
    models = {
        name: {
            **info[name],
            **{
                be: {
                    "b1_ms": round(median(b1[(name, be)]), 2),
                    "b1_ms_rounds": [round(x, 2) for x in b1[(name, be)]],
                    "batch_images_per_s": round(median(bn[(name, be)]), 3),
                    "batch_images_per_s_rounds": [round(x, 3) for x in bn[(name, be)]],
                }
                for be in backends
            },
        }
        for name in args.models
    }
    ratios = {}
    for be in backends:
        t1 = [e / c for e, c in zip(b1[(eff, be)], b1[(csp, be)], strict=True)]
        tn = [c / e for e, c in zip(bn[(eff, be)], bn[(csp, be)], strict=True)]  # time ratio = inverse images/s
        ratios[be] = {
            "b1_time_ratio": round(median(t1), 3),
            "b1_rounds": spread(t1),
            "batch_time_ratio": round(median(tn), 3),
            "batch_rounds": spread(tn),
        }
    if "onnxruntime" in backends:
        ratios["onnxruntime_speedup_over_pytorch"] = {
            name: {
                "b1": round(models[name]["pytorch"]["b1_ms"] / models[name]["onnxruntime"]["b1_ms"], 3),
                "batch": round(
                    models[name]["onnxruntime"]["batch_images_per_s"] / models[name]["pytorch"]["batch_images_per_s"], 3
                ),
            }
            for name in args.models
        }

    dev = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    precision = "fp16" if args.half else "fp32"
    rows = []
    for be in backends:
        for name in args.models:
            r = models[name][be]
            rows.append(
                [
                    models[name]["label"],
                    f"{BACKEND_LABELS[be]} {precision}",
                    f"{r['b1_ms']:.1f}",
                    f"{min(r['b1_ms_rounds']):.1f}–{max(r['b1_ms_rounds']):.1f}",
                    f"{r['batch_images_per_s']:.2f}",
                    f"{1e3 / r['batch_images_per_s']:.1f}",
                ]
            )
    lines = md_table(
        [
            "model",
            "backend",
            "batch 1 ms/image",
            "range",
            f"batch {args.batch} images/s",
            f"batch {args.batch} ms/image",
        ],
        rows,
        left=2,
    )
    lines += [""] + md_table(
        ["EfficientNet-B4 / CSPDarknet-s time per image", "batch 1", f"batch {args.batch}", "SmartCash study (GPU)"],
        [
            [
                f"{BACKEND_LABELS[be]} {precision}, {dev}",
                f"{ratios[be]['b1_time_ratio']:.2f}× "
                f"({ratios[be]['b1_rounds'][0]:.2f}–{ratios[be]['b1_rounds'][1]:.2f})",
                f"{ratios[be]['batch_time_ratio']:.2f}× "
                f"({ratios[be]['batch_rounds'][0]:.2f}–{ratios[be]['batch_rounds'][1]:.2f})",
                f"{STUDY['effb4_vs_cspdarknet_gpu_latency']}× (37.8 vs 7 ms)",
            ]
            for be in backends
        ],
    )
    memory = "channels-last" if info[csp]["channels_last"] else "contiguous"
    title = f"forward pass, imgsz {args.imgsz}, {precision}, {dev}, PyTorch (fused) {memory}"
    results = {"models": models, "backends": backends}
    chart(results, ratios, output_paths(args.name, args)[1], title, args.batch)
    figures = {"device": dev, "precision": precision, "models": models, "ratios": ratios}
    figures["study_gpu_ratio"] = STUDY["effb4_vs_cspdarknet_gpu_latency"]
    finish("latency", argv, args, started, load_before, title, lines, **figures)


if __name__ == "__main__":
    main()
