"""Kill a training run with SIGKILL in the middle of an epoch, resume it, and print the metric history around both.

Trains CSPDarknet-n on the bundled sample with the README settings (8 epochs by default) through the ``yolo``
command, kills it (``kill -9``) during epoch 6, resumes it with ``yolo train resume model=<run>/weights/last.pt``
and prints, before and after: the epoch last.pt holds, each epoch's mAP50, mAP50-95, learning rate and
early-stopping wait/patience from metrics.json, the epochs of results.csv and the run's lifecycle events.

    python bench/kill_and_resume.py
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ultralytics.utils.patches import torch_load

from smartcash_ultra.callbacks.metrics_export import JSON_NAME
from smartcash_ultra.callbacks.progress import EVENTS_NAME
from smartcash_ultra.tools.sample_data import ensure_sample_dataset

ROOT = Path(__file__).resolve().parents[1]


def events(save_dir: Path) -> list[dict]:
    """The run's events.jsonl so far."""
    path = save_dir / EVENTS_NAME
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def history(save_dir: Path, title: str) -> None:
    """Print the epoch last.pt holds and metrics.json's rows."""
    rows = json.loads((save_dir / JSON_NAME).read_text())["epochs"]
    last = torch_load(save_dir / "weights/last.pt", map_location="cpu")
    print(f"\n{title}: last.pt holds epoch {last['epoch'] + 1}; metrics.json:")
    print("| epoch | mAP50 | mAP50-95 | lr/pg0 | early stopping wait/patience |\n|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['epoch']} | {r['metrics/mAP50(B)']:.3f} | {r['metrics/mAP50-95(B)']:.3f} | {r['lr/pg0']:.3g} "
            f"| {r['early_stopping/wait']}/{r['early_stopping/patience']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--kill-epoch", type=int, default=6, help="kill during this epoch (after a few batches)")
    parser.add_argument("--project", type=Path, default=ROOT / "runs/bench_kill_resume")
    args = parser.parse_args()
    data = ensure_sample_dataset(ROOT / "data/sample")
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}
    yolo = str(Path(sys.executable).with_name("yolo"))
    save_dir = args.project / "run"
    train = [
        yolo, "train", "cfg=cfg/smartcash_cspdarknet.yaml", "model=cfg/models/smartcash_cspdarknet_yolov5n.yaml",
        f"data={data}", "imgsz=320", f"epochs={args.epochs}", "batch=16", "workers=2", f"project={args.project}",
        "name=run", "exist_ok=True", "plots=False",
    ]  # fmt: skip
    print("$ yolo", " ".join(train[1:]))
    args.project.mkdir(parents=True, exist_ok=True)
    with open(args.project / "first_session.log", "w") as log:
        child = subprocess.Popen(train, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        prefix = f"epoch {args.kill_epoch}/{args.epochs} batch"
        while not any(e.get("level") == "batch" and e["message"].startswith(prefix) for e in events(save_dir)):
            if child.poll() is not None:
                raise SystemExit(f"training ended before epoch {args.kill_epoch}: see {log.name}")
            time.sleep(0.2)
        time.sleep(5)  # a few batches into the epoch
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    print(f"kill -9 {child.pid} during epoch {args.kill_epoch}")
    history(save_dir, "After kill -9")
    resume = [yolo, "train", "resume", f"model={save_dir / 'weights/last.pt'}"]
    print(f"\n$ yolo {' '.join(resume[1:])}")
    start = time.time()
    done = subprocess.run(resume, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).splitlines()
    print(f"exit {done.returncode} after {time.time() - start:.0f} s")
    print("\n".join(line for line in lines if "Resuming training" in line or "restored from checkpoint" in line))
    history(save_dir, "After resume")
    with open(save_dir / "results.csv") as f:
        print("\nresults.csv epochs:", [line.split(",")[0].strip() for line in f.read().splitlines()[1:]])
    kinds = [e["event"] for e in events(save_dir) if e["event"] in {"started", "error", "completed"}]
    print("events.jsonl lifecycle:", kinds, "status", events(save_dir)[-1].get("status"))


if __name__ == "__main__":
    main()
