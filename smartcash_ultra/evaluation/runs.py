"""The checkpoints under a folder, described from what each file records, for choosing which to evaluate.

Each ``.pt`` file is read as Ultralytics reads it (:func:`smartcash_ultra.nn.safe_load.read_checkpoint`:
``ULTRALYTICS_SAFE_LOAD`` decides); the model is unpickled, never built from its YAML nor run. A run folder's
``metrics.json`` (the plugin's metric file) gives the best epoch when the checkpoint's own history does not.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from smartcash_ultra.engine.checkpoints import backbone_name
from smartcash_ultra.nn.model import SmartCashDetectionModel
from smartcash_ultra.nn.safe_load import read_checkpoint


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file says about itself; ``problem`` is set (and the rest unknown) when it cannot be read."""

    path: str
    backbone: str | None = None
    epochs_trained: int | None = None
    epochs_planned: int | None = None
    best_epoch: int | None = None
    map50: float | None = None
    """mAP50 of the weights this file holds (the validation of the epoch they were saved at)."""
    map50_95: float | None = None
    date: str | None = None
    size_mb: float = 0.0
    problem: str | None = None


def describe_checkpoint(path: Path) -> CheckpointInfo:
    """Describe one checkpoint file; a file that cannot be read gets its ``problem``."""
    size = round(path.stat().st_size / 1e6, 2)
    try:
        ckpt = read_checkpoint(path)
    except Exception as e:
        return CheckpointInfo(str(path), size_mb=size, problem=f"cannot be read ({type(e).__name__})")
    model = (ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")) if isinstance(ckpt, dict) else None
    if model is None or not hasattr(model, "yaml"):
        return CheckpointInfo(str(path), size_mb=size, problem="holds no Ultralytics model")
    if isinstance(model, SmartCashDetectionModel):
        backbone = backbone_name(model)
    else:
        backbone = Path(str(model.yaml.get("yaml_file", "ultralytics"))).stem
    args, metrics = ckpt.get("train_args") or {}, ckpt.get("train_metrics") or {}
    history = ckpt.get("train_results") or {}
    epochs = history.get("epoch") or []
    trained = len(epochs) or (ckpt.get("epoch", -1) + 1) or None
    best = _best_epoch(path, history)
    return CheckpointInfo(
        str(path),
        backbone,
        trained,
        args.get("epochs"),
        best,
        _number(metrics.get("metrics/mAP50(B)")),
        _number(metrics.get("metrics/mAP50-95(B)")),
        ckpt.get("date"),
        size,
    )


def _best_epoch(path: Path, history: dict) -> int | None:
    """Return the run's best epoch (1-based): from its ``metrics.json``, else the highest mAP50-95 of the history."""
    metrics_json = path.parent.parent / "metrics.json" if path.parent.name == "weights" else None
    if metrics_json and metrics_json.is_file():
        try:
            best = json.loads(metrics_json.read_text()).get("summary", {}).get("best_epoch")
            if isinstance(best, int):
                return best
        except (OSError, ValueError):
            pass
    scores = history.get("metrics/mAP50-95(B)") or []
    if not scores:
        return None
    return int(history["epoch"][max(range(len(scores)), key=lambda i: scores[i])])


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def list_checkpoints(folder: str | Path) -> list[CheckpointInfo]:
    """Describe every ``.pt`` file under ``folder`` (recursively), sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    return [describe_checkpoint(p) for p in sorted(folder.rglob("*.pt")) if p.is_file()]


def best_per_backbone(checkpoints: list[CheckpointInfo]) -> dict[str, CheckpointInfo]:
    """Return the checkpoint with the highest mAP50-95 (then mAP50) of each backbone; ties go to ``best.pt``."""
    chosen: dict[str, CheckpointInfo] = {}
    for info in checkpoints:
        if info.problem or info.backbone is None or info.map50_95 is None:
            continue
        key = (info.map50_95, info.map50 or 0.0, Path(info.path).name == "best.pt")
        held = chosen.get(info.backbone)
        if held is None or key > (held.map50_95, held.map50 or 0.0, Path(held.path).name == "best.pt"):
            chosen[info.backbone] = info
    return chosen


def format_table(checkpoints: list[CheckpointInfo]) -> str:
    """Format checkpoints as a fixed-width table, one line each (the path column as wide as the longest path)."""
    width = max([len("checkpoint"), *(len(c.path) for c in checkpoints)])
    head = (
        f"{'checkpoint':{width}} {'backbone':16} {'epochs':>7} {'best':>5} {'mAP50':>6} {'mAP50-95':>8} {'date':19} MB"
    )
    lines = [head]
    for c in checkpoints:
        if c.problem:
            lines.append(f"{c.path:{width}} {c.problem}")
            continue
        epochs = f"{c.epochs_trained}/{c.epochs_planned}" if c.epochs_planned else str(c.epochs_trained)
        lines.append(
            f"{c.path:{width}} {c.backbone or '?':16} {epochs:>7} {c.best_epoch or '–':>5} "
            f"{_fmt(c.map50):>6} {_fmt(c.map50_95):>8} {(c.date or '')[:19]:19} {c.size_mb:.1f}"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def as_dicts(checkpoints: list[CheckpointInfo]) -> list[dict]:
    return [asdict(c) for c in checkpoints]
