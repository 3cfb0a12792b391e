"""Evaluate several models over test-set scenarios with Ultralytics' validator, and time them.

Every figure of a model on a scenario is what ``YOLO(model).val(data=..., split=...)`` returns: on ``original`` the
call is the one ``yolo val`` makes, on the source data YAML, so the figures are equal to the last digit; on another
scenario it is the same call on the scenario set's data YAML (:mod:`smartcash_ultra.evaluation.scenarios`).
"""

from __future__ import annotations

import glob
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smartcash_ultra.data.arrays import IMAGE_SUFFIXES
from smartcash_ultra.data.image_dataset import SPLITS, DatasetError, find_image_dataset
from smartcash_ultra.evaluation.report import draw_examples, write_outputs
from smartcash_ultra.evaluation.scenarios import BUILTIN, Scenario, ScenarioSet, build_scenario_set, load_scenarios
from smartcash_ultra.utils.classes import LAYERS, is_full_scheme
from smartcash_ultra.utils.shipped import installed_version

DEFAULT_SCENARIOS = tuple(BUILTIN)
MEANS = ("precision", "recall", "f1", "mAP50", "mAP75", "mAP50-95")
"""The figures of a model on a scenario, from the validator's ``DetMetrics.box``."""
LATENCY_WARMUP, LATENCY_RUNS = 3, 10
"""Untimed calls first, then the timed calls whose median is reported (a third as many at the evaluation batch)."""


@dataclass
class ModelInfo:
    """A model given to :func:`evaluate`: where it is, what it is, how fast it runs; ``status`` ok or failed."""

    label: str
    path: str
    status: str = "ok"
    reason: str | None = None
    backbone: str | None = None
    parameters: int | None = None
    gflops: float | None = None
    latency: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScenarioResult:
    """The validator's figures of one model on one scenario, and where it wrote its plots."""

    model: str
    scenario: str
    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    per_layer: dict[str, dict[str, float]]
    save_dir: str
    seconds: float


@dataclass
class Evaluation:
    """What :func:`evaluate` returns (and writes to ``summary.json``)."""

    save_dir: Path
    data: str
    split: str
    scenarios: list[dict]
    models: list[ModelInfo]
    results: list[ScenarioResult]
    timings: dict[str, float]
    environment: dict[str, Any]
    partial: bool = False

    @property
    def ok(self) -> bool:
        return not self.partial and all(m.status == "ok" for m in self.models)

    def result(self, model: str, scenario: str) -> ScenarioResult | None:
        return next((r for r in self.results if r.model == model and r.scenario == scenario), None)

    def to_dict(self) -> dict:
        return {
            "partial": self.partial,
            "save_dir": str(self.save_dir),
            "data": self.data,
            "split": self.split,
            "scenarios": self.scenarios,
            "models": [asdict(m) for m in self.models],
            "results": [asdict(r) for r in self.results],
            "timings": self.timings,
            "environment": self.environment,
        }


class Events:
    """``events.jsonl`` of an evaluation, and the ``progress_callback(level, current, total, message)`` it feeds."""

    def __init__(self, path: Path, progress_callback: Callable[[str, int, int, str], Any] | None):
        self.path, self.callback, self.failed = path, progress_callback, False

    def event(self, what: str, /, **fields) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"time": round(time.time(), 3), "event": what, **fields}, default=str) + "\n")

    def progress(self, level: str, current: int, total: int, message: str) -> None:
        """Call the UI callback; one that raises is reported once and skipped, as in training."""
        if self.callback is None or self.failed:
            return
        try:
            self.callback(level, current, total, message)
        except Exception as e:
            self.failed = True
            self.event("callback_failed", error=f"{type(e).__name__}: {e}")


def resolve_models(specs: list[str | Path]) -> list[ModelInfo]:
    """Turn each MODEL (a checkpoint, an export, a run folder, a glob) into :class:`ModelInfo`; unresolved: failed."""
    found: list[ModelInfo] = []
    for spec in specs:
        text = str(spec)
        if any(c in text for c in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                found.append(ModelInfo(text, text, "failed", "the pattern matches no file"))
            paths = [Path(m) for m in matches]
        else:
            paths = [Path(text)]
        for path in paths:
            if path.is_dir() and not path.name.endswith("_model"):  # a run folder (exports such as *_openvino_model
                best = path / "weights/best.pt"  # are folders Ultralytics reads themselves)
                if not best.is_file():
                    found.append(ModelInfo(str(path), str(path), "failed", "a folder without weights/best.pt"))
                    continue
                path = best
            info = ModelInfo(_label(path), str(path))
            if not path.exists():
                info.status, info.reason = "failed", "no such file"
            found.append(info)
    seen: dict[str, int] = {}
    for info in found:  # labels name plot folders and table rows: make them unique
        n = seen[info.label] = seen.get(info.label, 0) + 1
        if n > 1:
            info.label = f"{info.label}_{n}"
    return found


def export_format(path: Path) -> str:
    """Return the export format of ``path`` as Ultralytics names its files (``onnx``, ``openvino``), '' for ``.pt``."""
    if path.is_dir():  # best_openvino_model/, best_saved_model/, ...
        return path.name.removesuffix("_model").rpartition("_")[2]
    return "" if path.suffix == ".pt" else path.suffix[1:]


def _label(path: Path) -> str:
    """``<run>`` for a run's ``weights/best.pt``, ``<run>_<stem>`` for its other weights, else the file's stem.

    An export adds its format: ``<run>_onnx`` for ``weights/best.onnx``, ``best_openvino`` for ``best_openvino_model``.
    """
    stem = path.name.rsplit("_", 2)[0] if path.is_dir() else path.stem
    form = f"_{export_format(path)}" if export_format(path) else ""
    if path.parent.name == "weights":
        run = path.parent.parent.name
        return f"{run}{form}" if stem == "best" else f"{run}_{stem}{form}"
    return f"{stem}{form}"


def environment(device: str | None) -> dict[str, Any]:
    """Describe the software and hardware the figures were measured on."""
    import torch
    import ultralytics

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "smartcash_ultra": installed_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "device": device,
        "threads": torch.get_num_threads(),
    }


def evaluate(
    models: list[str | Path] | str | Path,
    data: str | Path,
    split: str = "test",
    scenarios: list[str | Path] | str = DEFAULT_SCENARIOS,
    imgsz: int = 640,
    batch: int = 16,
    device: str | None = None,
    project: str | Path = "runs/evaluate",
    name: str = "eval",
    progress_callback: Callable[[str, int, int, str], Any] | None = None,
    cache: str | Path | None = None,
    examples: int = 2,
    latency: bool = True,
) -> Evaluation:
    """Evaluate every model on every scenario of ``data``'s ``split``; write the summary, report and plots.

    Args:
        models: checkpoints, exports Ultralytics validates, run folders (their ``weights/best.pt``) or globs.
        data: the data YAML (or dataset folder) of the source split; scenarios are built from it.
        split: the split evaluated (``test``, ``val`` or ``train``).
        imgsz: image size, as in ``yolo val``.
        batch: validation batch, as in ``yolo val``; latency is also timed at this batch.
        device: as in ``yolo val`` (default: Ultralytics' choice).
        scenarios: built-in names (``original``, ``lighting``, ``position``) or scenario YAML files, or one
            comma-separated string of them.
        project: the outputs go to ``project/name``.
        name: a name in use gets ``name2``, ``name3``... as in Ultralytics.
        progress_callback: ``(level, current, total, message)``; levels ``overall`` (model x scenario evaluations),
            ``scenario`` (images of the scenario set being built) and ``batch`` (validation batches).
        cache: folder of the scenario sets (default ``project/scenarios``), outside the source.
        examples: images per scenario drawn with each model's predictions side by side (0: none).
        latency: time each PyTorch or exported model at batch 1 and at ``batch``.

    A model that does not load, whose class names differ from the data's, or whose validation or timing fails is
    marked failed with the reason, and the others go on. Ctrl-C writes what is done, marked ``partial``, then raises
    ``KeyboardInterrupt``.

    Raises:
        DatasetError: before any work, for a dataset or split that cannot be used or an impossible scenario.
    """
    from ultralytics.utils.files import increment_path

    if split not in SPLITS:
        raise DatasetError(str(data), f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    dataset = find_image_dataset(data, IMAGE_SUFFIXES)
    if dataset.yaml_file is None:
        raise DatasetError(dataset.root, "holds no data.yaml: the validator reads one (names, splits, declarations)")
    images = dataset.splits.get(SPLITS[split], [])
    if not images:
        raise DatasetError(dataset.yaml_file or dataset.root, f"the {split} split holds no image to evaluate")
    chosen = load_scenarios(list(scenarios) if not isinstance(scenarios, str) else scenarios)
    infos = resolve_models([models] if isinstance(models, (str, Path)) else list(models))
    # absolute, as the validator's project below must be: Ultralytics puts a relative one under runs_dir/<task>
    save_dir = increment_path(Path(project).resolve() / name, exist_ok=False, mkdir=True)
    events = Events(save_dir / "events.jsonl", progress_callback)
    source_yaml = str(dataset.yaml_file)
    run = Evaluation(save_dir, source_yaml, split, [s.definition() for s in chosen], infos, [], {}, environment(device))
    events.event("started", data=source_yaml, split=split, models=[m.path for m in infos], scenarios=run.scenarios)
    clock = {"scenarios": 0.0, "validation": 0.0, "latency": 0.0, "examples": 0.0}
    try:
        t0 = time.perf_counter()
        sets = _build_sets(dataset, SPLITS[split], chosen, Path(cache or Path(project).resolve() / "scenarios"), events)
        clock["scenarios"] = time.perf_counter() - t0
        loaded = {m.label: _load(m, dataset.names) for m in infos if m.status == "ok"}
        loaded = {label: model for label, model in loaded.items() if model is not None}
        for m in infos:
            if m.status == "failed":
                events.event("model_failed", model=m.label, path=m.path, reason=m.reason)
        total, done = len(loaded) * len(chosen), 0
        events.progress("overall", 0, total, f"{len(loaded)} models x {len(chosen)} scenarios")
        for info in infos:
            if info.label not in loaded:
                continue
            stage = "validation"
            try:
                for scenario in chosen:
                    stage = f"validation on {scenario.name}"
                    t0 = time.perf_counter()
                    result = _validate(
                        info, loaded[info.label], sets[scenario.name], split, imgsz, batch, device, save_dir, events
                    )
                    clock["validation"] += time.perf_counter() - t0
                    run.results.append(result)
                    done += 1
                    events.event("evaluated", model=info.label, scenario=scenario.name, metrics=result.metrics)
                    message = f"{info.label} on {scenario.name}: mAP50 {result.metrics['mAP50']:.3f}"
                    events.progress("overall", done, total, message)
                if latency:
                    stage = "timing"
                    t0 = time.perf_counter()
                    info.latency = measure_latency(loaded[info.label], imgsz, batch, device)
                    clock["latency"] += time.perf_counter() - t0
                    events.event("timed", model=info.label, latency=info.latency)
            except Exception as e:  # this model fails; the others go on
                info.status, info.reason = "failed", f"{stage} failed ({type(e).__name__}: {_first_line(e)})"
                run.results = [r for r in run.results if r.model != info.label]
                del loaded[info.label]
                done, total = len(run.results), total - len(chosen)
                events.event("model_failed", model=info.label, path=info.path, reason=info.reason)
        if examples:
            t0 = time.perf_counter()
            draw_examples(save_dir / "examples", sets, loaded, split, imgsz, examples)
            clock["examples"] = time.perf_counter() - t0
    except KeyboardInterrupt:
        run.partial = True
        run.environment = environment(device)
        run.timings = {k: round(v, 3) for k, v in clock.items()}
        write_outputs(run)
        events.event("stopped", reason="interrupted", results=len(run.results))
        raise
    run.timings = {k: round(v, 3) for k, v in clock.items()}
    run.environment = environment(device)  # again: Ultralytics' select_device sets torch's threads on CPU
    write_outputs(run)
    events.event("finished", ok=run.ok, results=len(run.results))
    return run


def _build_sets(dataset, split: str, scenarios: list[Scenario], cache: Path, events: Events) -> dict[str, ScenarioSet]:
    """Build or reuse the set of every scenario (``original`` is the source itself)."""
    sets = {}
    for scenario in scenarios:
        if scenario.is_original:
            sets[scenario.name] = ScenarioSet(scenario, dataset.yaml_file, dataset.root, False)
            continue

        def progress(current: int, total: int, message: str) -> None:
            events.progress("scenario", current, total, message)

        t0 = time.perf_counter()
        sets[scenario.name] = built = build_scenario_set(dataset, split, scenario, cache, progress)
        events.event(
            "scenario",
            name=scenario.name,
            root=str(built.root),
            built=built.built,
            seconds=round(time.perf_counter() - t0, 3),
        )
    return sets


def _load(info: ModelInfo, names: dict[int, str]):
    """Load a model as ``YOLO()`` does; on failure mark ``info`` failed with the reason and return None."""
    from ultralytics import YOLO

    try:
        model = YOLO(info.path, task="detect")
    except Exception as e:
        info.status, info.reason = "failed", f"cannot be loaded ({type(e).__name__}: {_first_line(e)})"
        return None
    if dict(model.names) != dict(names):
        info.status, info.reason = (
            "failed",
            (
                f"its {len(model.names)} class names differ from the data's {len(names)} "
                f"(model: {list(model.names.values())[:5]}..., data: {list(names.values())[:5]}...)"
            ),
        )
        return None
    _describe(info, model)
    return model


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0]


def _describe(info: ModelInfo, model) -> None:
    """Fill the backbone, parameter count and GFLOPs of a PyTorch model (exports: backbone from their metadata)."""
    from torch import nn

    module = model.model
    if not isinstance(module, nn.Module):
        info.backbone = f"({export_format(Path(info.path))} export)"
        return
    from ultralytics.utils.torch_utils import get_flops

    from smartcash_ultra.engine.checkpoints import backbone_name
    from smartcash_ultra.nn.model import SmartCashDetectionModel

    if isinstance(module, SmartCashDetectionModel):
        info.backbone = backbone_name(module)
    else:
        info.backbone = Path(str(getattr(module, "yaml", {}).get("yaml_file", "ultralytics"))).stem
    info.parameters = int(sum(p.numel() for p in module.parameters()))
    info.gflops = round(float(get_flops(module, 640)), 3)


def _validate(info, model, scenario_set: ScenarioSet, split, imgsz, batch, device, save_dir, events) -> ScenarioResult:
    """Run Ultralytics' validator of ``model`` on the scenario set; read its figures."""
    name = scenario_set.scenario.name
    counter = {"n": 0}

    def on_val_start(validator) -> None:
        counter["n"] = 0

    def on_val_batch_end(validator) -> None:
        counter["n"] += 1
        events.progress("batch", counter["n"], len(validator.dataloader), f"{info.label} on {name}")

    model.add_callback("on_val_start", on_val_start)
    model.add_callback("on_val_batch_end", on_val_batch_end)
    t0 = time.perf_counter()
    try:
        metrics = model.val(
            data=str(scenario_set.data_yaml),
            split=split,
            imgsz=imgsz,
            batch=batch,
            device=device,
            project=str(save_dir / "val"),
            name=f"{info.label}-{name}",
            exist_ok=True,
            plots=True,
            verbose=False,
        )
    finally:
        model.callbacks["on_val_start"].remove(on_val_start)
        model.callbacks["on_val_batch_end"].remove(on_val_batch_end)
    seconds = time.perf_counter() - t0
    return ScenarioResult(info.label, name, *figures(metrics), str(metrics.save_dir), round(seconds, 3))


def figures(metrics) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Means, per-class and per-layer figures of a validator's ``DetMetrics`` (NaN for a class without instances)."""
    box, names = metrics.box, metrics.names
    f1 = np.asarray(box.f1, dtype=float)
    means = dict(
        zip(MEANS, (box.mp, box.mr, float(f1.mean()) if f1.size else 0.0, box.map50, box.map75, box.map), strict=True)
    )
    per_class = {
        n: {"AP50": math.nan, "AP50-95": math.nan, "P": math.nan, "R": math.nan, "instances": 0} for n in names.values()
    }
    nt = getattr(metrics, "nt_per_class", None)
    for i, c in enumerate(box.ap_class_index):
        p, r, ap50, ap = box.class_result(i)
        per_class[names[int(c)]] = {
            "AP50": float(ap50),
            "AP50-95": float(ap),
            "P": float(p),
            "R": float(r),
            "instances": int(nt[c]) if nt is not None else 0,
        }
    per_layer = {}
    if is_full_scheme(names):
        for layer, ids in LAYERS.items():
            rows = [per_class[names[i]] for i in ids if per_class[names[i]]["instances"]]
            per_layer[layer] = {
                k: float(np.mean([r[k] for r in rows])) if rows else math.nan for k in ("AP50", "AP50-95", "P", "R")
            }
    return {k: float(v) for k, v in means.items()}, per_class, per_layer


def measure_latency(model, imgsz: int, batch: int, device: str | None) -> dict[str, Any]:
    """Time the model's forward pass as ``predict`` runs it, at batch 1 and at ``batch``; milliseconds per image.

    The model runs in Ultralytics' ``AutoBackend``, fused, channels-last on x86 CPUs, as ``predict`` and ``val`` run
    it: a few calls to warm up, then the median of repeated calls.
    Preprocessing and NMS are not included: this is the network, the part backbones differ in.
    """
    import torch
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.utils.torch_utils import select_device

    dev = select_device(device or "", verbose=False)
    backend = AutoBackend(
        model.model if isinstance(model.model, torch.nn.Module) else model.ckpt_path or model.model,
        device=dev,
        fuse=True,
        verbose=False,
    )
    backend.eval()
    # an export runs in its own runtime (ONNX Runtime, OpenVINO), with that runtime's threads: all cores by default
    threads = torch.get_num_threads() if backend.format == "pt" else f"{backend.format} default, {os.cpu_count()} cores"
    out = {"device": str(dev), "threads": threads, "imgsz": imgsz, "warmup": LATENCY_WARMUP}
    for b in sorted({1, batch}):
        runs = LATENCY_RUNS if b == 1 else max(3, LATENCY_RUNS // 3)
        x = torch.zeros(b, 3, imgsz, imgsz, device=dev, dtype=torch.half if backend.fp16 else torch.float)
        times = []
        with torch.inference_mode():
            for i in range(LATENCY_WARMUP + runs):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                backend(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                if i >= LATENCY_WARMUP:
                    times.append(time.perf_counter() - t0)
        ms = statistics.median(times) * 1000 / b
        out[f"batch{b}"] = {"ms_per_image": round(ms, 3), "fps": round(1000 / ms, 2), "runs": runs}
        out.setdefault("batches", []).append(b)
    return out
