"""Cost of the SmartCash callbacks relative to a training step, measured inside one real training run.

Every handler SmartCashTrainer registers (the three callbacks and the run state: epoch clock, live status, stop flag)
is wrapped with a timer, and the training step (forward, backward, optimizer: from ``on_train_batch_start`` to
``on_train_batch_end``, data loading excluded, which makes the ratio conservative) is timed alongside. Reported:
callback time per training batch and its share of a step, the per-epoch work (metric files, event log) spread over
the epoch's batches, and the same with throttling off (``min_interval: 0``: a progress event and an events.jsonl line
on every batch) as the worst case.

    python bench/callback_overhead.py                      # CSPDarknet-n, imgsz 320, batch 16, as the README run
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import yaml
from benchlib import ROOT, machine, write_json  # sets the offline guards before Ultralytics is imported

from smartcash_ultra.callbacks import EarlyStoppingInstaller, MetricsExporter, ProgressReporter, RunState
from smartcash_ultra.engine.trainer import SmartCashTrainer
from smartcash_ultra.tools.sample_data import generate_sample_dataset

OURS = (EarlyStoppingInstaller, MetricsExporter, ProgressReporter, RunState)
"""Every handler SmartCashTrainer adds: the three callbacks and the run state (epoch clock, live status, stop flag)."""
PER_BATCH = {"on_train_batch_start", "on_train_batch_end"}


class Timers:
    """Accumulates seconds per event for the SmartCash callbacks, and the training step times."""

    def __init__(self):
        self.callback = defaultdict(float)
        self.steps: list[float] = []
        self._step_start = 0.0

    def wrap(self, event: str, fn):
        def timed(arg):
            t = time.perf_counter()
            try:
                fn(arg)
            finally:
                self.callback[event] += time.perf_counter() - t

        timed.__self__ = fn.__self__  # the callbacks find their RunState by the owners of the handlers
        return timed

    def step_start(self, trainer):
        self._step_start = time.perf_counter()

    def step_end(self, trainer):
        self.steps.append(time.perf_counter() - self._step_start)


def measure(data: Path, project: Path, args: argparse.Namespace, min_interval: float) -> dict:
    """Train ``args.epochs`` epochs with timed callbacks; return the figures."""
    model = yaml.safe_load((ROOT / "cfg/models/smartcash_cspdarknet_yolov5.yaml").read_text())
    model["smartcash"]["callbacks"] = {"progress": {"min_interval": min_interval}}
    model_path = project / f"interval_{min_interval}" / "smartcash_cspdarknet_yolov5n.yaml"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_text(yaml.safe_dump(model, sort_keys=False))
    received = []
    trainer = SmartCashTrainer(
        ROOT / "cfg/smartcash_cspdarknet.yaml",
        overrides=dict(
            model=str(model_path),
            data=str(data),
            epochs=args.epochs,
            imgsz=args.imgsz,
            batch=args.batch,
            workers=args.workers,
            project=str(project),
            name=f"interval_{min_interval}",
            exist_ok=True,
            plots=False,
        ),
        progress_callback=lambda *event: received.append(event),  # a UI that only stores events
        metrics_callback=lambda m: received.append(m),
    )
    timers = Timers()
    for event, fns in trainer.callbacks.items():
        fns[:] = [timers.wrap(event, f) if isinstance(getattr(f, "__self__", None), OURS) else f for f in fns]
    trainer.callbacks["on_train_batch_start"].insert(0, timers.step_start)
    trainer.callbacks["on_train_batch_end"].insert(0, timers.step_end)  # before ours: the step alone
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    batches = len(timers.steps)
    per_batch = sum(v for k, v in timers.callback.items() if k in PER_BATCH) / batches
    total = sum(timers.callback.values())
    step = sum(timers.steps) / batches
    return {
        "min_interval_s": min_interval,
        "batches": batches,
        "step_ms": step * 1e3,
        "per_batch_callbacks_us": per_batch * 1e6,
        "per_batch_overhead_pct": 100 * per_batch / step,
        "all_callbacks_per_batch_us": total / batches * 1e6,
        "all_callbacks_overhead_pct": 100 * total / sum(timers.steps),
        "callback_seconds_by_event": dict(timers.callback),
        "events_received": len(received),
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=96, help="original train images (each also gets one aug_)")
    parser.add_argument("--project", type=Path, default=ROOT / "runs/bench_callbacks")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/callback_overhead.json")
    args = parser.parse_args()

    data = generate_sample_dataset(
        args.project / "data", n_train=args.n_train, n_valid=16, n_test=0, imgsz=args.imgsz, overwrite=True
    )
    results = [measure(data, args.project, args, interval) for interval in (0.5, 0.0)]
    print(
        "\n| min_interval | training step | SmartCash callbacks per batch | share of a step | all callbacks "
        "(incl. per-epoch files) per batch | share |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['min_interval_s']:g} s | {r['step_ms']:.0f} ms | {r['per_batch_callbacks_us']:.1f} µs | "
            f"{r['per_batch_overhead_pct']:.4f} % | {r['all_callbacks_per_batch_us']:.0f} µs | "
            f"{r['all_callbacks_overhead_pct']:.3f} % |"
        )
    document = {
        "command": "python bench/callback_overhead.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k in {"epochs", "imgsz", "batch"}),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    write_json(args.out, document)
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
