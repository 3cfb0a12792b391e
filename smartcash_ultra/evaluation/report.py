"""The files of an evaluation: ``summary.csv``, ``summary.json``, ``report.md``, comparison plots, example images.

Ultralytics' own PR curves and confusion matrices are written by its validator into ``val/<model>-<scenario>/``.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np

from smartcash_ultra.utils.files import atomic_target, write_atomic

MEAN_COLUMNS = ("mAP50", "mAP75", "mAP50-95", "precision", "recall", "f1")


def write_outputs(run) -> None:
    """Write the summary files, the report and the plots of ``run`` (an :class:`Evaluation`, partial or whole)."""
    rows = summary_rows(run)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    write_atomic(run.save_dir / "summary.csv", text.getvalue().encode())
    write_json(run.save_dir / "summary.json", run.to_dict())
    plots = plot_comparison(run, rows)
    write_atomic(run.save_dir / "report.md", report_markdown(run, rows, plots).encode())


def _cell(value):
    return f"{value:.5g}" if isinstance(value, float) else value


def _f(value, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def report_markdown(run, rows: list[dict], plots: list[str]) -> str:
    """Write the comparison table, robustness, per-layer and per-class tables, timings, and where everything is."""
    env = run.environment
    lines = [
        f"# Evaluation {run.save_dir.name}" + (" (PARTIAL: stopped before the end)" if run.partial else ""),
        "",
        f"Data `{run.data}`, split `{run.split}`; Ultralytics {env['ultralytics']}, torch {env['torch']}, "
        f"smartcash-ultra {env['smartcash_ultra']}; {env['cpu']}"
        + (f", {env['cuda']}" if env.get("cuda") else "")
        + f", {env['threads']} threads.",
        "",
        "Scenarios: "
        + "; ".join(
            f"`{s['name']}` (seed {s['seed']}"
            + "".join(f", {k} {v[0]:g}..{v[1]:g}" for k, v in s["transforms"].items())
            + ")"
            for s in run.scenarios
        ),
        "",
        "## Comparison",
        "",
        "Robustness is the scenario's mAP divided by the model's mAP on `original`.",
        "",
        "| model | scenario | mAP50 | mAP75 | mAP50-95 | P | R | F1 | robustness mAP50 | robustness mAP50-95 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["status"] != "ok":
            lines.append(f"| {row['model']} | FAILED: {row['reason']} |" + " |" * 8)
            continue
        figures = " | ".join(_f(row[k]) for k in MEAN_COLUMNS)
        robust = f"{_f(row['robustness_mAP50'])} | {_f(row['robustness_mAP50-95'])}"
        lines.append(f"| {row['model']} | {row['scenario']} | {figures} | {robust} |")
    layered = [r for r in run.results if r.per_layer]
    if layered:
        lines += ["", "## Per layer (mean AP50 / AP50-95 over the classes present)", ""]
        layers = list(layered[0].per_layer)
        lines += ["| model | scenario | " + " | ".join(layers) + " |", "|---|---|" + "---|" * len(layers)]
        for r in layered:
            cells = " | ".join(f"{_f(v['AP50'])} / {_f(v['AP50-95'])}" for v in r.per_layer.values())
            lines.append(f"| {r.model} | {r.scenario} | {cells} |")
    if run.results:
        lines += ["", "## Per class AP50 (instances in the scenario set)", ""]
        heads = [f"{r.model} {r.scenario}" for r in run.results]
        lines += ["| class | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
        for cls in run.results[0].per_class:
            cells = " | ".join(f"{_f(r.per_class[cls]['AP50'])} ({r.per_class[cls]['instances']})" for r in run.results)
            lines.append(f"| {cls} | {cells} |")
    lines += ["", "## Models and timings", ""]
    lines += [
        "Forward pass per image (Ultralytics' AutoBackend, fused; no pre-processing or NMS): "
        "median of repeated calls after a warm-up.",
        "",
        "| model | backbone | parameters | GFLOPs (640) | device | threads | ms/image batch 1 | ms/image eval batch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in run.models:
        if m.status != "ok":
            lines.append(f"| {m.label} | failed: {m.reason} |" + " |" * 6)
            continue
        lat = m.latency
        b = lat.get("batches", [])
        batch1 = _f(lat["batch1"]["ms_per_image"], 1) if "batch1" in lat else "–"
        batchn = f"{_f(lat[f'batch{b[-1]}']['ms_per_image'], 1)} (batch {b[-1]})" if b else "–"
        params = f"{m.parameters / 1e6:.2f} M" if m.parameters else "–"
        lines.append(
            f"| {m.label} | {m.backbone} | {params} | {_f(m.gflops, 1)} | {lat.get('device', '–')} | "
            f"{lat.get('threads', '–')} | {batch1} | {batchn} |"
        )
    t = run.timings
    lines += [
        "",
        f"Wall time: building scenarios {t.get('scenarios', 0):.1f} s, validation {t.get('validation', 0):.1f} s, "
        f"timing {t.get('latency', 0):.1f} s, examples {t.get('examples', 0):.1f} s.",
        "",
        "## Files",
        "",
        "- `summary.csv` (a row per model x scenario), `summary.json` (everything, with the environment), "
        "`events.jsonl`",
        "- `val/<model>-<scenario>/`: Ultralytics' PR curves, confusion matrices and batch images",
    ]
    lines += [f"- `{p}`" for p in plots]
    if (run.save_dir / "examples").is_dir():
        lines.append("- `examples/<scenario>.jpg`: example images, each model's predictions side by side")
    return "\n".join(lines) + "\n"


def plot_comparison(run, rows: list[dict]) -> list[str]:
    """Plot mAP50 and mAP50-95 per scenario per model as grouped bars, and the robustness; return the file names."""
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in ok))
    scenarios = [s["name"] for s in run.scenarios]
    width = 0.8 / len(models)
    written = []
    for file, keys, ylabel in (
        ("map_by_scenario.png", ("mAP50", "mAP50-95"), "{}"),
        ("robustness.png", ("robustness_mAP50", "robustness_mAP50-95"), "{} (scenario / original)"),
    ):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), tight_layout=True)
        for ax, key in zip(axes, keys, strict=True):
            for i, model in enumerate(models):
                values = [
                    next((r[key] for r in ok if r["model"] == model and r["scenario"] == s), math.nan)
                    for s in scenarios
                ]
                x = np.arange(len(scenarios)) + (i - (len(models) - 1) / 2) * width
                ax.bar(x, values, width, label=model)
            ax.set_xticks(np.arange(len(scenarios)), scenarios)
            ax.set_ylabel(ylabel.format(key.removeprefix("robustness_")))
            if key.startswith("robustness"):
                ax.axhline(1.0, color="grey", lw=0.8)
            ax.legend(fontsize=8)
        with atomic_target(run.save_dir / file) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
        written.append(file)
    return written


def draw_examples(folder: Path, sets: dict, models: dict, split: str, imgsz: int, count: int) -> None:
    """For each scenario, ``count`` images with each model's predictions side by side, one row per image."""
    from smartcash_ultra.data.arrays import IMAGE_SUFFIXES
    from smartcash_ultra.data.image_dataset import SPLITS, find_image_dataset

    folder.mkdir(parents=True, exist_ok=True)
    for name, scenario_set in sets.items():
        images = find_image_dataset(scenario_set.data_yaml, IMAGE_SUFFIXES).splits[SPLITS[split]][:count]
        rows = []
        for image in images:
            tiles = []
            for label, model in models.items():
                if model is None:
                    continue
                result = model.predict(str(image), imgsz=imgsz, data=str(scenario_set.data_yaml), verbose=False)[0]
                tile = result.plot(line_width=1, font_size=8)
                cv2.putText(tile, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
                tiles.append(tile)
            if tiles:
                rows.append(np.hstack(tiles))
        if rows:
            write_atomic(folder / f"{name}.jpg", cv2.imencode(".jpg", _stack(rows))[1].tobytes())


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    """Stack rows of tiles of possibly different widths, padding each to the widest."""
    width = max(r.shape[1] for r in rows)
    return np.vstack([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows])


def summary_rows(run) -> list[dict]:
    """Return a row per model x scenario (a failed model: one row), with robustness against ``original``."""
    rows = []
    for info in run.models:
        if info.status != "ok":
            rows.append({"model": info.label, "scenario": "", "status": info.status, "reason": info.reason})
            continue
        base = run.result(info.label, "original")
        for scenario in run.scenarios:
            result = run.result(info.label, scenario["name"])
            if result is None:
                continue
            row = {"model": info.label, "scenario": result.scenario, "status": "ok", "reason": ""}
            row.update(result.metrics)
            for key in ("mAP50", "mAP50-95"):
                ratio = result.metrics[key] / base.metrics[key] if base and base.metrics[key] else math.nan
                row[f"robustness_{key}"] = ratio
            for layer, values in result.per_layer.items():
                row[f"{layer}_AP50"] = values["AP50"]
            row.update({"backbone": info.backbone, "parameters": info.parameters, "gflops": info.gflops})
            for b in info.latency.get("batches", []):
                row[f"ms_per_image_batch{b}"] = info.latency[f"batch{b}"]["ms_per_image"]
            rows.append(row)
    return rows


def write_json(path: Path, document: dict) -> None:
    write_atomic(path, json.dumps(document, indent=1, default=str, allow_nan=True).encode())
