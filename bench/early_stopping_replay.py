"""Replay a finished run's metric history through the early-stopping rule under other settings.

Training here is deterministic (``deterministic: true``, fixed seed), so a run with other early-stopping settings
follows the same history up to the epoch it stops at: the replay tells where fixed and adaptive patience would each
have stopped and with which best figures, without training again.

    python bench/early_stopping_replay.py runs/sample/cspdarknet/metrics.json --patience 3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

from smartcash_ultra.callbacks.early_stopping import AdaptiveEarlyStopping, monitored_value

FIGURES = ("metrics/mAP50(B)", "metrics/mAP75(B)", "metrics/mAP50-95(B)")


def replay(rows: list[dict], stopper: AdaptiveEarlyStopping) -> dict:
    """Feed the validated epochs of ``rows`` to ``stopper``; return where it stops and the best epoch's figures."""
    stopped_at, peak = None, stopper.patience
    for row in rows:
        if row.get("validated") and row.get("fitness") is not None:  # the row holds the epoch's validation figures
            validated = SimpleNamespace(fitness=row["fitness"], metrics=row)  # what the callback reads from the trainer
            stop = stopper.update(row["epoch"], monitored_value(stopper.monitor, validated))
            peak = max(peak, stopper.patience)
            if stop:
                stopped_at = row["epoch"]
                break
    by_epoch = {r["epoch"]: r for r in rows}
    best = by_epoch.get(stopper.best_epoch, {})  # none when no epoch counted (a max metric still 0)
    return {
        "adaptive": stopper.adaptive,
        "stops_after_epoch": stopped_at,
        "best_epoch": stopper.best_epoch,
        stopper.monitor: stopper.best_value,
        **{k: best.get(k) for k in FIGURES},
        "peak_patience": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics_json", type=Path)
    parser.add_argument("--patience", type=int, default=15)
    parser.add_argument("--min-delta", type=float, default=0.001)
    parser.add_argument("--monitor", default="fitness")
    args = parser.parse_args()
    rows = json.loads(args.metrics_json.read_text())["epochs"]
    print(f"{len(rows)} epochs in {args.metrics_json}; patience {args.patience}, min_delta {args.min_delta}\n")
    print("| patience | stops after epoch | best epoch | best " + args.monitor + " | mAP50 | mAP75 | mAP50-95 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for adaptive in (False, True):
        stopper = AdaptiveEarlyStopping(args.patience, args.min_delta, args.monitor, adaptive=adaptive)
        r = replay(rows, stopper)
        kind = f"adaptive (peak {r['peak_patience']})" if adaptive else "fixed"
        stops = r["stops_after_epoch"] or f"never (ran {rows[-1]['epoch']})"
        figures = " | ".join(f"{r[k]:.3f}" if r[k] is not None else "-" for k in FIGURES)
        print(f"| {kind} | {stops} | {r['best_epoch']} | {r[args.monitor]:.4f} | {figures} |")


if __name__ == "__main__":
    main()
