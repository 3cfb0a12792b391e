"""One flat record of a training epoch, shared by the metric files and ``metrics_callback``.

Figures are taken from where Ultralytics keeps them (``tloss`` rounded as for results.csv, ``lr``, ``metrics``,
``fitness``, ``epoch_time``), so they equal results.csv wherever both report them. Added: per-layer means of the
17-class scheme, train and validation time, ETA, early-stopping state, on CUDA GPU memory and utilisation, and the
keys SmartCash's UI cards read (``loss``, ``map50``, ``map75``, ``lr``, ``gpu_memory``).
With Ultralytics' own validator (a stock model), per-class AP comes from its ``DetMetrics``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from smartcash_ultra.utils.classes import LAYERS, is_full_scheme
from smartcash_ultra.utils.files import write_atomic
from smartcash_ultra.utils.metrics import class_ap


def epoch_record(trainer, state) -> dict[str, Any]:
    """Return every figure of the epoch the :class:`RunState` ``state`` just closed; NaN becomes None."""
    record: dict[str, Any] = {"epoch": trainer.epoch + 1, "epochs": trainer.epochs, "validated": state.validated}
    record.update(trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss else {})
    record.update(getattr(trainer, "lr", None) or {})
    metrics = dict(trainer.metrics or {})
    if state.validated:
        record.update(metrics)
        record["fitness"] = trainer.fitness
        if not any(k.startswith("AP50(B)/") for k in metrics):  # Ultralytics' validator: per-class AP from its stats
            record.update(per_class_ap(getattr(trainer.validator, "metrics", None), trainer.data["names"]))
        record.update(layer_means(record, trainer.data["names"]))
    else:  # Ultralytics repeats the last validation in results.csv; these columns stay empty instead
        record.update(dict.fromkeys([*metrics, "fitness"]))
    record.update(state.timing())
    summary = getattr(trainer.stopper, "summary", None)
    if callable(summary):
        stopper = summary()
        record.update({f"early_stopping/{k}": stopper[k] for k in ("wait", "patience", "best", "improvement_rate")})
    record.update(gpu_stats(trainer.device))
    record.update(ui_cards(record))
    return {k: clean(v) for k, v in record.items()}


def ui_cards(record: dict[str, Any]) -> dict[str, float | None]:
    """Return the figures SmartCash's UI cards read, under the names its ``metrics_callback`` used.

    ``loss`` is the sum of the training losses, ``lr`` the weights' group (``lr/pg0``), ``gpu_memory`` the epoch's
    peak in MB (``gpu/mem_peak_gb`` × 1000). None where the epoch has no such figure (no validation, no CUDA), so
    every record carries all five keys.
    """
    losses = [float(v) for k, v in record.items() if k.startswith("train/") and v is not None]
    peak = record.get("gpu/mem_peak_gb")
    return {
        "loss": round(sum(losses), 5) if losses else None,
        "map50": record.get("metrics/mAP50(B)"),
        "map75": record.get("metrics/mAP75(B)"),
        "lr": record.get("lr/pg0"),
        "gpu_memory": peak * 1000 if peak is not None else None,
    }


def per_class_ap(metrics, names: dict[int, str]) -> dict[str, float]:
    """Return ``AP50(B)/<class>`` and ``AP50-95(B)/<class>`` from Ultralytics' ``DetMetrics`` (NaN: class absent)."""
    box = getattr(metrics, "box", None)
    if box is None or not len(getattr(box, "ap_class_index", ())):
        return {}
    return class_ap(box, names)


def layer_means(metrics: dict[str, float], names: dict[int, str]) -> dict[str, float]:
    """Mean AP50 and AP50-95 of each layer of the 17-class scheme, over the classes the split contains."""
    if not is_full_scheme(names) or not any(k.startswith("AP50(B)/") for k in metrics):
        return {}  # another scheme, or a validator without per-class AP (Ultralytics' own)
    out = {}
    for layer, ids in LAYERS.items():
        for figure in ("AP50", "AP50-95"):
            values = [metrics.get(f"{figure}(B)/{names[i]}") for i in ids]
            values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
            out[f"{layer}/m{figure}(B)"] = sum(values) / len(values) if values else math.nan
    return out


def gpu_stats(device) -> dict[str, float | None]:
    """GPU memory (GB: allocated now, reserved now, peak this epoch) and utilisation (%, needs pynvml) on CUDA."""
    if getattr(device, "type", None) != "cuda":
        return {}
    import torch

    try:
        utilization = float(torch.cuda.utilization(device))
    except Exception:  # pynvml missing or not supported by the driver
        utilization = None
    return {
        "gpu/mem_allocated_gb": torch.cuda.memory_allocated(device) / 1e9,
        "gpu/mem_reserved_gb": torch.cuda.memory_reserved(device) / 1e9,
        "gpu/mem_peak_gb": torch.cuda.max_memory_allocated(device) / 1e9,
        "gpu/utilization": utilization,
    }


def clean(value: Any) -> Any:
    """Plain JSON-able Python numbers: tensors and numpy scalars unwrapped, NaN and inf as None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def clean_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """``trainer.metrics`` as plain JSON-able numbers (see :func:`clean`)."""
    return {k: clean(v) for k, v in (metrics or {}).items()}


def results_epochs(path: str | Path | None) -> list[int]:
    """Return the epoch of each whole row of Ultralytics' ``results.csv`` (none when it is missing)."""
    return [epoch for epoch, _ in results_rows(path)[1]]


def trim_results(path: str | Path, up_to_epoch: int) -> int:
    """Drop the rows of ``results.csv`` after ``up_to_epoch`` (and any cut short), atomically; return how many.

    Ultralytics appends to the file on resume, so epochs run after the checkpoint was saved would appear twice.
    """
    header, rows = results_rows(path)
    if header is None:
        return 0
    kept = [line for epoch, line in rows if epoch <= up_to_epoch]
    dropped = len(Path(path).read_text(errors="replace").splitlines()) - 1 - len(kept)  # after the header
    if dropped:
        write_atomic(path, "".join(f"{line}\n" for line in [header, *kept]).encode())
    return dropped


def results_rows(path: str | Path | None) -> tuple[str | None, list[tuple[int, str]]]:
    """Return the header of ``results.csv`` and its whole rows with their epochs.

    A row cut short by a kill mid-append (fewer columns than the header) is left out.
    """
    if path is None or not Path(path).is_file():
        return None, []
    lines = Path(path).read_text(errors="replace").splitlines()
    if not lines:
        return None, []
    width, rows = lines[0].count(","), []
    for line in lines[1:]:
        try:
            epoch = int(float(line.split(",", 1)[0]))
        except ValueError:
            continue
        if line.count(",") == width:
            rows.append((epoch, line))
    return lines[0], rows
