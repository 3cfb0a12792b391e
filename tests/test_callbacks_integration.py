"""The SmartCash callbacks on real tiny runs: files and events against results.csv, a real early stop, resume
continuity after an interrupted run, and one-call use on a stock Ultralytics model."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, Collector, csp_n_yaml

from smartcash_ultra.callbacks import add_smartcash_callbacks
from smartcash_ultra.callbacks.early_stopping import STATE_NAME
from smartcash_ultra.engine.trainer import SmartCashTrainer

FAST = {"imgsz": 64, "batch": 4, "workers": 0, "plots": False, "exist_ok": True, "val": True}


def results_rows(save_dir: Path) -> list[dict[str, float]]:
    with open(save_dir / "results.csv", newline="") as f:
        return [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def events(save_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (save_dir / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run(tiny_data, tmp_path_factory):
    """A real 3-epoch SmartCashTrainer run with every UI callback attached."""
    project = tmp_path_factory.mktemp("cb_runs")
    ui = {name: Collector() for name in ("progress", "metrics", "error", "completion")}
    trainer = SmartCashTrainer(
        ROOT / "cfg/smartcash_cspdarknet.yaml",
        overrides={
            "model": str(csp_n_yaml(project)),
            "data": str(tiny_data),
            "epochs": 3,
            **FAST,
            "project": str(project),
            "name": "run",
        },
        progress_callback=ui["progress"],
        metrics_callback=ui["metrics"],
        error_callback=ui["error"],
        completion_callback=ui["completion"],
    )
    result = trainer.train()
    return trainer, result, ui


def test_canary_teardown_runs_in_the_finally_of_train_with_the_exception_in_flight():
    """RunState reads the exception that ends a run in ``teardown`` (``sys.exc_info()``): Ultralytics must run it
    from the ``finally`` of ``BaseTrainer.train``."""
    from ultralytics.engine.trainer import BaseTrainer

    seen = []

    class Trainer:
        ddp = False

        def _do_train(self):
            raise RuntimeError("disk full")

        def run_callbacks(self, event):
            seen.append((event, repr(sys.exc_info()[1])))

    with pytest.raises(RuntimeError, match="disk full"):
        BaseTrainer.train(Trainer())
    assert seen == [("teardown", "RuntimeError('disk full')")]


def test_canary_the_final_evaluation_fires_a_second_fit_epoch_end_one_past_the_last_epoch(tmp_path, monkeypatch):
    """RunState tells the final evaluation of best.pt from an epoch by it: outside any epoch, ``trainer.epoch`` one
    past the last (the tiny-run check: ``summary["final"]`` in ``test_metric_files_equal_ultralytics_results_csv``)."""
    from ultralytics.engine import trainer as engine

    monkeypatch.setattr(engine, "strip_optimizer", lambda *args, **kwargs: {})
    (tmp_path / "best.pt").touch()
    seen = []

    class Validator:
        args = SimpleNamespace()

        def __call__(self, model):
            return {"metrics/mAP50(B)": 0.5, "fitness": 0.4}

    class Trainer:
        best, last, epoch, args = tmp_path / "best.pt", tmp_path / "last.pt", 4, SimpleNamespace(plots=False)
        validator = Validator()

        def run_callbacks(self, event):
            seen.append((event, self.epoch, dict(self.metrics)))

    trainer = Trainer()
    engine.BaseTrainer.final_eval(trainer)
    assert seen == [("on_fit_epoch_end", 5, {"metrics/mAP50(B)": 0.5})] and trainer.epoch == 4


def test_every_handler_is_named_after_an_ultralytics_event():
    """The base derives each ``callbacks`` dict from the methods named after Ultralytics' events: a method named
    ``on_...`` that is no event (a typo, or an event Ultralytics renamed) would silently never run."""
    from ultralytics.utils.callbacks.base import default_callbacks

    from smartcash_ultra.callbacks import Callback, EarlyStoppingInstaller, MetricsExporter, ProgressReporter, RunState

    for kind in (EarlyStoppingInstaller, MetricsExporter, ProgressReporter, RunState):
        assert issubclass(kind, Callback)
        handlers = {name for name in dir(kind) if name.startswith("on_") or name == "teardown"}
        assert handlers and handlers <= set(default_callbacks), kind
        assert set(kind.__new__(kind).callbacks) == handlers


@pytest.mark.slow
def test_metric_files_equal_ultralytics_results_csv(run):
    trainer, result, _ = run
    document = json.loads((result.save_dir / "metrics.json").read_text())
    rows = document["epochs"]
    stock = results_rows(result.save_dir)
    assert [r["epoch"] for r in rows] == [1, 2, 3] == [int(r["epoch"]) for r in stock]
    compared = 0
    for ours, theirs in zip(rows, stock, strict=True):
        for key, value in theirs.items():
            if key in {"epoch", "time"}:
                continue
            expected = None if math.isnan(value) else value  # absent classes: nan in results.csv, null in ours
            assert ours[key] == (None if expected is None else pytest.approx(expected, rel=1e-5, abs=1e-9)), key
            compared += 1
    assert compared == 3 * (len(stock[0]) - 2) > 3 * 40  # losses, lr, means, per-class AP: every shared column
    for key in ("layer_1/mAP50(B)", "epoch_time", "train_time", "val_time", "eta", "early_stopping/patience"):
        assert key in rows[0]
    with open(result.save_dir / "metrics.csv", newline="") as f:
        flat = list(csv.DictReader(f))
    assert [float(r["metrics/mAP50-95(B)"]) for r in flat] == [r["metrics/mAP50-95(B)"] for r in rows]
    summary = document["summary"]
    assert summary["status"] == "completed" and summary["weights"]["best"] == str(result.best)
    assert summary["final"] == pytest.approx({k: (None if math.isnan(v) else v) for k, v in result.metrics.items()})


@pytest.mark.slow
def test_events_follow_the_run_and_end_at_100_percent(run):
    trainer, result, ui = run
    progress = ui["progress"]
    overall = [(c, t) for level, c, t, _ in progress if level == "overall"]
    assert overall == [(0, 3), (1, 3), (2, 3), (3, 3), (3, 3)]
    total = len(trainer.train_loader) + len(trainer.test_loader)
    epoch_events = [(c, t) for level, c, t, _ in progress if level == "epoch"]
    assert {t for _, t in epoch_events} == {total} and epoch_events[-1] == (total, total)
    for level in ("epoch", "batch"):
        currents = [c for lvl, c, _, _ in progress if lvl == level]
        restarts = [i for i, (a, b) in enumerate(zip(currents[:-1], currents[1:], strict=True)) if b < a]
        assert len(restarts) == 2  # monotone within each of the 3 epochs
    assert [m for lvl, _, _, m in progress if lvl == "batch"][0].startswith("epoch 1/3 batch 1/")
    assert "box_loss" in [m for lvl, _, _, m in progress if lvl == "batch"][0]
    log = events(result.save_dir)
    assert log[0]["event"] == "started" and log[-1]["event"] == "completed" and log[-1]["status"] == "completed"
    assert [e["current"] for e in log if e.get("level") == "overall"] == [c for c, _ in overall]
    assert len(ui["metrics"]) == 3 and ui["error"] == [] and ui["completion"][0][0]["status"] == "completed"
    rows = json.loads((result.save_dir / "metrics.json").read_text())["epochs"]
    assert [record for (record,) in ui["metrics"]] == rows  # times and ETA too: one clock
    assert trainer.get_training_status()["state"] == "completed"


@pytest.mark.slow
def test_the_run_dir_carries_the_early_stopping_state_up_to_the_last_checkpoint(run):
    trainer, result, _ = run
    state = json.loads((result.save_dir / STATE_NAME).read_text())
    assert [epoch for epoch, _ in state["history"]] == [1, 2, 3] and state["monitor"] == "fitness"
    assert state["history"][-1][1] == pytest.approx(float(trainer.stopper.history[-1][1]))
    last = torch.load(result.last, map_location="cpu", weights_only=False)  # last.pt is kept whole
    assert (last["epoch"], state["history"][-1][1]) == (2, pytest.approx(last["train_metrics"]["fitness"]))


@pytest.mark.slow
def test_early_stopping_stops_a_real_run_and_says_why(tiny_data, tmp_path):
    done = Collector()
    never_better = {"early_stopping": {"monitor": "val_loss", "min_delta": 1e6}, "metrics_export": False}
    trainer = SmartCashTrainer(
        overrides={
            "model": str(csp_n_yaml(tmp_path, never_better)),
            "data": str(tiny_data),
            "epochs": 6,
            "patience": 2,
            **FAST,
            "project": str(tmp_path),
            "name": "stop",
        },
        completion_callback=done,
    )
    result = trainer.train()
    assert len(results_rows(result.save_dir)) == 3  # epoch 1 sets the best, 2 and 3 do not beat it by 1e6
    summary = done[0][0]
    assert summary["status"] == "stopped_early" and summary["epochs_completed"] == 3
    assert "no improvement in val_loss for 2 validated epochs" in summary["reason"]
    status = trainer.get_training_status()  # the status speaks the completion event's words
    assert (status["state"], status["reason"]) == ("stopped_early", summary["reason"])
    assert not (result.save_dir / "metrics.json").exists()  # switched off in the model YAML


@pytest.mark.slow
def test_interrupted_run_resumes_with_continuous_metric_history(tiny_data, tmp_path):
    class InterruptAtEpoch3(Collector):
        def __call__(self, level, current, total, message):
            if level == "batch" and message.startswith("epoch 3/"):
                raise KeyboardInterrupt  # like a Ctrl-C in epoch 3, after last.pt of epoch 2
            super().__call__(level, current, total, message)

    errors = Collector()
    overrides = {"model": str(csp_n_yaml(tmp_path)), "data": str(tiny_data), "epochs": 4, **FAST}
    trainer = SmartCashTrainer(
        overrides={**overrides, "project": str(tmp_path), "name": "resume"},
        progress_callback=InterruptAtEpoch3(),
        error_callback=errors,
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    save_dir = Path(trainer.save_dir)
    assert errors[0][1]["stage"] == "train" and errors[0][1]["epoch"] == 3
    assert [r["epoch"] for r in json.loads((save_dir / "metrics.json").read_text())["epochs"]] == [1, 2]

    from ultralytics import YOLO

    YOLO(str(save_dir / "weights/last.pt")).train(resume=True)
    rows = json.loads((save_dir / "metrics.json").read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    stock = results_rows(save_dir)
    assert [int(r["epoch"]) for r in stock] == [1, 2, 3, 4]
    for ours, theirs in zip(rows, stock, strict=True):
        assert ours["metrics/mAP50-95(B)"] == pytest.approx(theirs["metrics/mAP50-95(B)"], rel=1e-5, abs=1e-9)
    log = events(save_dir)
    assert [(e["event"], e.get("status")) for e in log if e["event"] in {"started", "error", "completed"}] == [
        ("started", None),
        ("error", None),
        ("completed", "failed"),  # every session ends with its completion event
        ("started", None),
        ("completed", "completed"),
    ]
    assert log[-1]["status"] == "completed" and log[-1]["epochs_completed"] == 4
    history = json.loads((save_dir / STATE_NAME).read_text())["history"]
    assert [e for e, _ in history] == [1, 2, 3, 4]  # replayed up to the checkpoint of epoch 2, then continued
    last = torch.load(save_dir / "weights/last.pt", map_location="cpu", weights_only=False)
    assert (last["epoch"], history[-1][1]) == (3, pytest.approx(last["train_metrics"]["fitness"]))


@pytest.mark.slow
def test_one_call_adds_them_to_a_stock_ultralytics_model(tiny_jpeg_data, tmp_path):
    from ultralytics import YOLO

    progress = Collector()
    model = add_smartcash_callbacks(YOLO("yolov8n.yaml"), progress_callback=progress)
    model.train(data=str(tiny_jpeg_data), epochs=2, project=str(tmp_path), name="stock", **FAST)
    save_dir = tmp_path / "stock"
    rows = json.loads((save_dir / "metrics.json").read_text())["epochs"]
    stock = results_rows(save_dir)
    assert [r["epoch"] for r in rows] == [1, 2]
    for ours, theirs in zip(rows, stock, strict=True):
        for key in ("train/box_loss", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "lr/pg0"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-9)
    assert "metrics/mAP75(B)" not in rows[0]  # Ultralytics' validator has no mAP75; per-class AP from its stats:
    assert len([k for k in rows[-1] if k.startswith("AP50-95(B)/")]) == 17 and "layer_3/mAP50(B)" in rows[-1]
    assert type(model.trainer.stopper).__name__ == "AdaptiveEarlyStopping"
    assert ("overall", 2, 2) in [p[:3] for p in progress] and (save_dir / "events.jsonl").exists()

    with pytest.raises(ValueError, match="mAP75"):
        add_smartcash_callbacks(YOLO("yolov8n.yaml"), early_stopping={"monitor": "mAP75"}).train(
            data=str(tiny_jpeg_data), epochs=1, project=str(tmp_path), name="bad", **FAST
        )
