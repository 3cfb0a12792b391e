"""Inference latency of both SmartCash detectors on several backends, measured side by side in one run.

For each backend a model is built (random init: speed does not depend on the weights), saved as an Ultralytics
checkpoint and, for the exported backends, exported with Ultralytics' exporter as ``yolo export format=onnx
dynamic=True`` (or ``format=openvino``) would export a trained ``best.pt``. Timed is the network's forward pass on a
ready input tensor (no image decoding, letterbox or NMS), each backend set up as a user's ``yolo predict`` or
``yolo val`` sets it up:

- ``pytorch``: the model in Ultralytics' ``AutoBackend``, as its predictor and validator hold it: fused
  (``model.fuse()``, Conv+BN folded, the timm backbone's BatchNorm included), eval and inference mode, fp32
  (``--half``: fp16 on a GPU), and in channels-last memory where ``AutoBackend`` puts it (on an x86 CPU with
  oneDNN, Linux or Windows);
- ``onnxruntime``: the exported ONNX graph on the CPU execution provider (on a GPU the CUDA provider, when installed);
- ``openvino``: the exported OpenVINO model on the CPU, compiled as Ultralytics' OpenVINO backend compiles it
  (``PERFORMANCE_HINT`` LATENCY) in the precision OpenVINO picks for the CPU: bf16 where the CPU has AMX (the
  tables and results name it), CPU only.

Optional, for comparison (``--backends``): ``openvino-f32`` (``INFERENCE_PRECISION_HINT`` f32: full precision on
any CPU), ``pytorch-contiguous`` (``channels_last=False``: the memory format before ``AutoBackend`` chose
channels-last), ``pytorch-compile`` (``compile=True``: ``torch.compile`` of the ``AutoBackend`` as Ultralytics'
predictor does it, compiled lazily in the untimed warm-up round, whose time the results record; the Detect head breaks
the graph, so every layer compiles on its own, and dynamo's recompile limit is raised from 8 to 64 so that all of them
do) and ``pytorch-unfused-timm`` (Ultralytics' own ``fuse()`` only: the timm backbone's BatchNorm left unfolded).

Batch 1 gives ms/image (median of ``--repeats`` calls per round), batch ``--batch`` (16) gives images/s (one call per
round). Both models and all backends alternate within every round, in an order rotated each round, after one
untimed warm-up round; figures are medians over rounds and each EfficientNet-B4 / CSPDarknet ratio is the median of
the per-round ratios, set next to the SmartCash study's 5.4× (37.8 vs 7 ms per image on a GPU). Every backend runs
on ``--threads`` threads.

    python bench/latency.py                       # CPU, imgsz 640, batch 1 and 16, 3 rounds
    python bench/latency.py --device cuda --half  # the same on a GPU in fp16 (no OpenVINO)
    python bench/latency.py --quick               # smoke run: imgsz 64, batch 1 and 2, 1 round
"""

from __future__ import annotations

import argparse
import textwrap
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

UNFUSED = "pytorch-unfused-timm"
PYTORCH = {  # backend: how AutoBackend gets the model (keyword arguments; the unfused one was fused by Ultralytics)
    "pytorch": {},
    "pytorch-contiguous": {"channels_last": False},
    "pytorch-compile": {},
    UNFUSED: {"fuse": False},
}
EXPORTS = {"onnxruntime": "onnx", "openvino": "openvino", "openvino-f32": "openvino"}  # backend: export format
OPENVINO = {  # backend: compile config, Ultralytics' OpenVINO backend's hint and this run's threads added
    "openvino": {},
    "openvino-f32": {"INFERENCE_PRECISION_HINT": "f32"},  # OpenVINO's default on AMX CPUs is bf16
}
BACKENDS = ("pytorch", "onnxruntime", "openvino")  # the default: each as a user runs it
BACKEND_LABELS = {
    "pytorch": "PyTorch",
    "pytorch-contiguous": "PyTorch contiguous",
    "pytorch-compile": "PyTorch compiled",
    UNFUSED: "PyTorch (timm BN unfused)",
    "onnxruntime": "ONNX Runtime",
    "openvino": "OpenVINO",
    "openvino-f32": "OpenVINO (f32 hint)",
}


def build(name: str, folder: Path, args: argparse.Namespace, backends: list[str]) -> tuple[dict, dict]:
    """Build ``name`` (17 classes), save it as a checkpoint, export it; return each backend's model, and the info.

    A PyTorch backend's model is an ``AutoBackend`` (compiled for ``pytorch-compile``), ONNX Runtime's the exported
    file, OpenVINO's the compiled model.
    """
    import copy

    import torch
    from ultralytics import YOLO
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import attempt_compile, get_flops, get_num_params, init_seeds

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
    exported = {}
    for fmt in dict.fromkeys(EXPORTS[b] for b in backends if b in EXPORTS):
        start = time.perf_counter()
        exported[fmt] = YOLO(ckpt).export(
            format=fmt,
            imgsz=args.imgsz,
            dynamic=True,  # one graph for batch 1 and batch 16
            **({"simplify": not args.quick} if fmt == "onnx" else {}),  # onnxslim: slow, ONNX only
            batch=1,
            quantize=16 if args.half else None,
            device="0" if args.device == "cuda" else "cpu",
            verbose=False,
        )
        info[f"{fmt}_export_s"] = round(time.perf_counter() - start, 1)
    models = {}
    for backend in backends:
        if backend == "onnxruntime":
            models[backend] = exported["onnx"]
            continue
        if backend in OPENVINO:
            import openvino as ov

            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": args.threads, **OPENVINO[backend]}
            xml = next(Path(exported["openvino"]).glob("*.xml"))
            models[backend] = ov.Core().compile_model(str(xml), "CPU", config)
            hint = models[backend].get_property("INFERENCE_PRECISION_HINT").get_type_name()  # f32, bf16, f16
            info[f"{backend}_precision"] = {"f32": "fp32", "f16": "fp16"}.get(hint, hint)
            continue
        copied = copy.deepcopy(model)
        if backend == UNFUSED:
            DetectionModel.fuse(copied, verbose=False)  # Ultralytics' fuse, without the SmartCash override
        wrapped = AutoBackend(
            copied, device=torch.device(device(args)), fp16=args.half, verbose=False, **PYTORCH[backend]
        )
        if backend == "pytorch":
            conv = next(p for p in wrapped.model.parameters() if p.ndim == 4)
            info["pytorch_channels_last"] = conv.is_contiguous(memory_format=torch.channels_last)
        wrapped.eval()
        if backend == "pytorch-compile":
            # The Detect head's make_anchors breaks the graph, so dynamo compiles each layer's forward on its own,
            # once per channel count and batch size: both models at two batch sizes need up to 19 variants of one
            # forward, and past its default limit of 8 dynamo runs the rest uncompiled (a half-compiled model).
            torch._dynamo.config.recompile_limit = 64
            wrapped = attempt_compile(wrapped, device=torch.device(device(args)), mode=True)
        models[backend] = wrapped
    return models, info


def device(args: argparse.Namespace) -> str:
    """Return the torch device string of ``--device``."""
    return "cuda:0" if args.device == "cuda" else "cpu"


def runner(backend: str, model, args: argparse.Namespace):
    """Return ``run(batch_size)`` that times one forward pass of that batch size on the backend, in seconds."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    inputs = {b: rng.random((b, 3, args.imgsz, args.imgsz), dtype=np.float32) for b in (1, args.batch)}
    cuda = args.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if backend in PYTORCH:
        dtype = torch.float16 if args.half else torch.float32
        tensors = {b: torch.from_numpy(x).to(device(args), dtype) for b, x in inputs.items()}

        def call(b: int) -> None:
            with torch.inference_mode():
                model(tensors[b])
            sync()

    elif backend == "onnxruntime":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
        providers = ["CUDAExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(model), options, providers=providers)
        name = session.get_inputs()[0].name
        feeds = {b: x.astype(np.float16) if args.half else x for b, x in inputs.items()}

        def call(b: int) -> None:
            session.run(None, {name: feeds[b]})

    else:

        def call(b: int) -> None:
            model(inputs[b])

    def run(b: int) -> float:
        sync()
        start = time.perf_counter()
        call(b)
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
            f"batch {b}: EffB4/CSP-s (study {STUDY['effb4_vs_cspdarknet_gpu_latency']}×)\n"
            + textwrap.fill(", ".join(f"{k} {ratios[k][key]:.2f}×" for k in results["backends"]), 70),
            fontsize=8,
        )
        ax.set_yscale("log")
        top = max(top, max(values) * 1.5)  # room for the highest bar's label
        ax.tick_params(axis="x", labelsize=7, labelrotation=90 if len(values) > 6 else 0)
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
    p.add_argument("--half", action="store_true", help="fp16 model and exported graph (GPU only)")
    p.add_argument("--threads", type=int, default=0, help="threads of every backend; 0: as Ultralytics on CPU")
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKEND_LABELS))
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
    backends = list(dict.fromkeys(args.backends))
    if args.device == "cuda":
        if any(be in OPENVINO for be in backends):
            print("OpenVINO is timed on the CPU only: left out on --device cuda")
            backends = [be for be in backends if be not in OPENVINO]
        if "onnxruntime" in backends:
            import onnxruntime as ort

            if "CUDAExecutionProvider" not in ort.get_available_providers():
                print("ONNX Runtime has no CUDA provider here (onnxruntime-gpu not installed): left out")
                backends.remove("onnxruntime")
    info, runs = {}, {}
    for name in args.models:
        models, info[name] = build(name, workdir(args, "latency"), args, backends)
        torch.set_num_threads(args.threads)  # the exporter's select_device may have reset it
        for backend in backends:
            runs[(name, backend)] = runner(backend, models[backend], args)
    configs = list(runs)
    b1: dict[tuple, list[float]] = {c: [] for c in configs}
    bn: dict[tuple, list[float]] = {c: [] for c in configs}
    warmup_s = {}
    for r in range(args.rounds + 1):  # round 0 warms every configuration up (compiles) and is not kept
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        for c in order:
            start = time.perf_counter()
            one = median([runs[c](1) for _ in range(args.repeats)])
            many = runs[c](args.batch)
            if r:
                b1[c].append(one * 1e3)
                bn[c].append(args.batch / many)
            else:
                warmup_s[c] = round(time.perf_counter() - start, 1)
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
                    "warmup_s": warmup_s[(name, be)],
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
    speedups = {  # time of PyTorch as a user runs it / time of the backend
        be: {
            name: {
                "b1": round(models[name]["pytorch"]["b1_ms"] / models[name][be]["b1_ms"], 3),
                "batch": round(
                    models[name][be]["batch_images_per_s"] / models[name]["pytorch"]["batch_images_per_s"], 3
                ),
            }
            for name in args.models
        }
        for be in backends
        if be != "pytorch" and "pytorch" in backends
    }

    dev = torch.cuda.get_device_name(0) if args.device == "cuda" else f"CPU, {args.threads} thread(s)"
    precision = "fp16" if args.half else "fp32"
    memory = "channels-last" if info[csp].get("pytorch_channels_last") else "contiguous"  # as AutoBackend chose
    labels = {**BACKEND_LABELS, "pytorch": f"PyTorch {memory}"}
    precisions = {be: info[csp].get(f"{be}_precision", precision) for be in backends}  # OpenVINO's own choice
    rows = []
    for be in backends:
        for name in args.models:
            r = models[name][be]
            rows.append(
                [
                    models[name]["label"],
                    f"{labels[be]} {precisions[be]}",
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
                f"{labels[be]} {precisions[be]}, {dev}",
                f"{ratios[be]['b1_time_ratio']:.2f}× "
                f"({ratios[be]['b1_rounds'][0]:.2f}–{ratios[be]['b1_rounds'][1]:.2f})",
                f"{ratios[be]['batch_time_ratio']:.2f}× "
                f"({ratios[be]['batch_rounds'][0]:.2f}–{ratios[be]['batch_rounds'][1]:.2f})",
                f"{STUDY['effb4_vs_cspdarknet_gpu_latency']}× (37.8 vs 7 ms)",
            ]
            for be in backends
        ],
    )
    if speedups:
        lines += [""] + md_table(
            [
                "speed-up over PyTorch as a user runs it",
                *(f"{info[n]['label']} batch {b}" for n in args.models for b in (1, args.batch)),
            ],
            [
                [labels[be], *(f"{speedups[be][n][k]:.2f}×" for n in args.models for k in ("b1", "batch"))]
                for be in speedups
            ],
        )
    title = f"forward pass, imgsz {args.imgsz}, {precision}, {dev}"
    results = {"models": models, "backends": backends}
    chart(results, ratios, output_paths(args.name, args)[1], title, args.batch)
    figures = {"device": dev, "precision": precision, "models": models, "ratios": ratios, "speedups": speedups}
    figures["study_gpu_ratio"] = STUDY["effb4_vs_cspdarknet_gpu_latency"]
    finish("latency", argv, args, started, load_before, title, lines, **figures)


if __name__ == "__main__":
    main()
