"""Unit tests of the SmartCash callbacks on a fake trainer that fires Ultralytics' events in its loop's order."""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import Collector, assert_run_files_agree

from smartcash_ultra.callbacks import (
    AdaptiveEarlyStopping,
    MetricsExporter,
    ProgressReporter,
    RunState,
    add_smartcash_callbacks,
    has_smartcash_callbacks,
    registered,
)
from smartcash_ultra.callbacks.early_stopping import STATE_ATTR, STATE_KEY, STATE_NAME, checkpoint_state
from smartcash_ultra.callbacks.epoch_record import results_epochs, trim_results
from smartcash_ultra.utils.classes import NAMES
from smartcash_ultra.utils.settings import is_main_process, resolve

MEAN_KEYS = ["metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP75(B)", "metrics/mAP50-95(B)"]


class StockStopper:
    """Stands in for Ultralytics' ``EarlyStopping``."""

    best_fitness, best_epoch, possible_stop = 0.0, 0, False

    def __call__(self, epoch, fitness):
        return False


class FakeTrainer:
    """The parts of an Ultralytics trainer the callbacks read, with ``run_epoch`` following ``_do_train``'s order."""

    def __init__(self, save_dir: Path, epochs: int = 5, batches: int = 4, val_batches: int = 2, **args):
        self.callbacks = defaultdict(list)
        self.save_dir = save_dir
        self.wdir = save_dir / "weights"
        self.wdir.mkdir(parents=True, exist_ok=True)
        self.best, self.last = self.wdir / "best.pt", self.wdir / "last.pt"
        self.epochs, self.epoch, self.start_epoch = epochs, 0, 0
        defaults = {"patience": 3, "val": True, "resume": False, "model": "m.yaml", "data": "d.yaml"}
        self.args = SimpleNamespace(**{**defaults, **args})
        self.data = {"names": dict(NAMES)}
        self.device = torch.device("cpu")
        self.train_loader, self.test_loader = [None] * batches, [None] * val_batches
        self.validator = SimpleNamespace(metrics=SimpleNamespace(keys=list(MEAN_KEYS)))
        self.model = SimpleNamespace(yaml={"smartcash": {}})
        self.ema = SimpleNamespace(ema=torch.nn.Identity())
        self.metrics = dict.fromkeys(MEAN_KEYS, 0)
        self.fitness, self.tloss, self.lr, self.epoch_time, self.stop = None, None, {}, None, False
        self.best_fitness = None
        self.stopper = StockStopper()
        self.world_size = 1
        self.saved: dict[int, dict] = {}  # epoch -> checkpoint dict, as save_model would write, and the run dir's state
        self.csv = save_dir / "results.csv"
        self.fault = lambda point: None  # called at named points of the loop; a test makes it raise there

    def add_callback(self, event, fn):
        self.callbacks[event].append(fn)

    def run_callbacks(self, event, arg=None):
        for fn in self.callbacks[event]:
            fn(self if arg is None else arg)

    def label_loss_items(self, loss_items=None, prefix="train"):
        return {f"{prefix}/{k}": round(float(v), 5) for k, v in loss_items.items()}

    def setup(self):
        self.run_callbacks("on_pretrain_routine_end")
        self.run_callbacks("on_train_start")

    def run_epoch(self, map50: float | None, validate: bool = True):
        """One epoch; ``map50`` drives every metric (fitness = 0.1 mAP50 + 0.9 mAP50-95, here mAP50-95 = mAP50/2)."""
        self.run_callbacks("on_train_epoch_start")
        for i in range(len(self.train_loader)):
            self.tloss = {"box_loss": torch.tensor(1.0 / (i + 1)), "cls_loss": torch.tensor(2.0)}
            self.fault("batch")
            self.run_callbacks("on_train_batch_end")
            if self.stop:
                break
        self.lr = {"lr/pg0": 0.01 / (self.epoch + 1)}
        self.run_callbacks("on_train_epoch_end")
        validator = SimpleNamespace()
        if validate:
            self.run_callbacks("on_val_start", validator)
            for _ in self.test_loader:
                self.fault("val_batch")
                self.run_callbacks("on_val_batch_end", validator)
            self.run_callbacks("on_val_end", validator)
            values = [0.5, 0.4, map50, map50 * 0.8, map50 / 2]
            self.metrics = {
                **dict(zip(MEAN_KEYS, values, strict=True)),
                "AP50(B)/001": map50,
                "val/box_loss": 1 - map50,
            }
            self.fitness = 0.1 * map50 + 0.9 * map50 / 2
        self.fault("validated")
        self.save_metrics()
        self.fault("results")  # the epoch's results.csv row is written, its checkpoint not yet
        self.stop |= bool(self.stopper(self.epoch + 1, self.fitness))
        state = self.save_dir / STATE_NAME
        self.saved[self.epoch] = {
            "epoch": self.epoch,
            "ema": pickle.loads(pickle.dumps(self.ema.ema)),
            STATE_NAME: json.loads(state.read_text()) if state.exists() else None,
        }
        self.epoch_time = 0.01
        self.run_callbacks("on_fit_epoch_end")
        self.epoch += 1

    def save_metrics(self):
        """Append the epoch's row to results.csv, as Ultralytics does (rank 0) before saving the checkpoint."""
        if not is_main_process():
            return
        header = "" if self.csv.exists() else "epoch,metrics/mAP50(B)\n"
        with open(self.csv, "a") as f:
            f.write(f"{header}{self.epoch + 1},{self.metrics['metrics/mAP50(B)']:.6g}\n")

    def finish(self):
        """Ultralytics' final evaluation of best.pt (a second on_fit_epoch_end), then on_train_end and teardown."""
        self.final_eval()
        self.run_callbacks("on_train_end")
        self.run_callbacks("teardown")

    def final_eval(self):
        self.epoch -= 1
        self.fault("final_eval")
        self.metrics = {**self.metrics, "metrics/mAP50(B)": 0.99}
        self.epoch += 1
        self.run_callbacks("on_fit_epoch_end")
        self.epoch -= 1

    def train(self, map50s):
        """The whole run as Ultralytics' ``train()`` runs it: teardown in a ``finally``, whatever ends it."""
        try:
            self.setup()
            for m in map50s:
                self.run_epoch(m)
                if self.stop:
                    break
            self.final_eval()
            self.run_callbacks("on_train_end")
        finally:
            self.run_callbacks("teardown")


def fake_run(tmp_path, map50s, **kwargs) -> tuple[FakeTrainer, list]:
    """Train the fake trainer on a fixed mAP50 sequence until it stops; return it and its progress events."""
    events = Collector()
    settings = {k: kwargs.pop(k) for k in list(kwargs) if k in {"early_stopping", "min_interval"}}
    trainer = FakeTrainer(tmp_path, epochs=len(map50s), **kwargs)
    add_smartcash_callbacks(trainer, progress_callback=events, **settings)
    trainer.train(map50s)
    return trainer, events


# ------------------------------------------------------------------------------------------- early stopping rule
def test_patience_and_min_delta_arithmetic():
    stopper = AdaptiveEarlyStopping(patience=3, min_delta=0.01, adaptive=False)
    assert not stopper.update(1, 0.50)
    assert not stopper.update(2, 0.505)  # +0.005 < min_delta: no improvement
    assert (stopper.best_value, stopper.best_epoch, stopper.wait) == (0.50, 1, 1)
    assert not stopper.update(3, 0.52)  # +0.02: improvement
    assert (stopper.best_value, stopper.best_epoch, stopper.wait) == (0.52, 3, 0)
    assert not stopper.update(4, 0.52)
    assert not stopper.update(5, 0.529)
    assert stopper.possible_stop and not stopper.should_stop
    assert stopper.update(6, 0.50)  # third epoch without improvement
    assert "for 3 validated epochs" in stopper.stop_reason and "best 0.52 at epoch 3" in stopper.stop_reason


def test_status_line_says_nothing_improved_while_fitness_is_still_zero():
    stopper = AdaptiveEarlyStopping(patience=3, min_delta=0.001)
    stopper.update(1, 0.0)
    stopper.update(2, 0.0)
    assert stopper.status_line() == "fitness still 0 at epoch 2 (nothing detected yet): no epoch counts (patience 3)"
    stopper.update(3, 0.25)
    assert stopper.status_line().startswith("fitness improved to 0.25 at epoch 3")


def test_min_mode_for_losses_and_explicit_max():
    loss = AdaptiveEarlyStopping(patience=2, min_delta=0.0, monitor="val/box_loss", adaptive=False)
    assert loss.mode == "min"
    for epoch, value in enumerate([1.0, 0.8, 0.9, 0.85], 1):
        stop = loss.update(epoch, value)
    assert (loss.best_value, loss.best_epoch, stop) == (0.8, 2, True)
    gain = AdaptiveEarlyStopping(patience=2, min_delta=0.0, monitor="mAP50", mode="max", adaptive=False)
    for epoch, value in enumerate([0.1, 0.2, 0.15, 0.19], 1):
        stop = gain.update(epoch, value)
    assert (gain.best_value, gain.best_epoch, stop) == (0.2, 2, True)
    with pytest.raises(ValueError, match="mode"):
        AdaptiveEarlyStopping(mode="up")


def test_adaptive_patience_grows_with_fast_gains_is_bounded_and_shrinks_back():
    stopper = AdaptiveEarlyStopping(patience=3, min_delta=0.001, max_patience=5, window=2)
    for epoch in range(1, 6):  # +0.05 per epoch, far above min_rate
        stopper.update(epoch, 0.05 * epoch)
    assert stopper.improvement_rate == pytest.approx(0.05)
    assert stopper.patience == 5  # 3 -> 4 -> 5, then held at max_patience
    for epoch in range(6, 11):  # creeping: +0.0015 per epoch, rate below min_rate once the window has moved on
        stopper.update(epoch, 0.25 + 0.0015 * (epoch - 5))
    assert stopper.improvement_rate == pytest.approx(0.0015) and stopper.patience == 5
    stopper = AdaptiveEarlyStopping(patience=3, min_delta=0.001, max_patience=5, min_rate=0.01, window=2)
    for epoch, value in enumerate([0.1, 0.2, 0.3, 0.305, 0.31, 0.315], 1):
        stopper.update(epoch, value)
    assert stopper.patience == 3  # grew to 5 with the fast gains, shrank back to the base with the slow ones
    fixed = AdaptiveEarlyStopping(patience=3, adaptive=False)
    for epoch in range(1, 6):
        fixed.update(epoch, 0.05 * epoch)
    assert fixed.patience == 3


def test_adaptive_patience_lets_an_improving_run_survive_a_plateau():
    values = [0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.5]  # fast gains, a 4-epoch plateau, then a new best
    fixed, adaptive = AdaptiveEarlyStopping(patience=3, adaptive=False), AdaptiveEarlyStopping(patience=3)
    stops = {}
    for name, stopper in (("fixed", fixed), ("adaptive", adaptive)):
        for epoch, value in enumerate(values, 1):
            if stopper.update(epoch, value):
                stops[name] = epoch
                break
    assert stops == {"fixed": 7}  # adaptive patience had grown to 6 and reached the 0.5 at epoch 8
    assert adaptive.best_value == 0.5 and adaptive.best_epoch == 8


def test_epochs_before_anything_is_detected_are_not_a_stall():
    stopper = AdaptiveEarlyStopping(patience=2, adaptive=False)
    assert not any(stopper.update(epoch, 0.0) for epoch in range(1, 6))  # a from-scratch run's first epochs
    assert (stopper.best_epoch, stopper.wait) == (5, 0)
    stopper.update(6, 0.2)
    assert not stopper.update(7, 0.2) and stopper.update(8, 0.2)
    loss = AdaptiveEarlyStopping(patience=2, monitor="val_loss", adaptive=False)
    assert [loss.update(epoch, 0.0) for epoch in (1, 2, 3)] == [False, False, True]  # min mode: 0 is a real value


def test_zero_patience_never_stops():
    stopper = AdaptiveEarlyStopping(patience=0)
    assert not any(stopper.update(epoch, 0.5) for epoch in range(1, 50))
    assert not stopper.possible_stop


def test_non_finite_values_and_epochs_out_of_order_are_errors():
    stopper = AdaptiveEarlyStopping()
    with pytest.raises(ValueError, match="non-finite"):
        stopper.update(1, float("nan"))
    stopper.update(2, 0.5)
    with pytest.raises(ValueError, match="epoch 2 after epoch 2"):
        stopper.update(2, 0.6)


def test_state_round_trips_through_a_checkpoint_dict(tmp_path):
    stopper = AdaptiveEarlyStopping(patience=3, max_patience=6)
    for epoch, value in enumerate([0.1, 0.3, 0.5, 0.5, 0.51], 1):
        stopper.update(epoch, value)
    model = torch.nn.Identity()  # a checkpoint written before the state file carried the state on its EMA model
    setattr(model, STATE_ATTR, {STATE_KEY: stopper.state_dict()})
    torch.save({"epoch": 4, "ema": model}, tmp_path / "last.pt")
    restored = AdaptiveEarlyStopping(patience=3, max_patience=6)
    restored.load_state_dict(checkpoint_state(str(tmp_path / "last.pt")))
    assert restored.summary() == stopper.summary() and restored.history == stopper.history
    partial = AdaptiveEarlyStopping(patience=3, max_patience=6)
    partial.load_state_dict(stopper.state_dict(), up_to_epoch=3)  # a checkpoint older than the state
    assert partial.history == stopper.history[:3] and partial.wait == 0
    other = AdaptiveEarlyStopping(monitor="mAP50")
    other.load_state_dict(stopper.state_dict())  # different monitor: starts afresh instead of mixing figures
    assert other.history == []


def test_stopper_replaces_ultralytics_one_records_before_the_checkpoint_and_decides_in_its_call(tmp_path):
    stops_seen_at_fit_epoch_end = []
    trainer = FakeTrainer(tmp_path, epochs=8)
    add_smartcash_callbacks(trainer, early_stopping={"adaptive": False})
    trainer.add_callback("on_fit_epoch_end", lambda t: stops_seen_at_fit_epoch_end.append(t.stop))
    trainer.train([0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4])
    assert isinstance(trainer.stopper, AdaptiveEarlyStopping)
    assert trainer.epoch + 1 == 5 and trainer.stopper.stop_reason  # 3 epochs without improvement after epoch 2
    assert stops_seen_at_fit_epoch_end[:5] == [False] * 4 + [True]  # the stopper slot's answer stopped it
    fitness = [0.55 * m for m in (0.2, 0.4, 0.4, 0.4, 0.4)]
    assert trainer.stopper.history == [(e, pytest.approx(f)) for e, f in enumerate(fitness, 1)]
    saved = trainer.saved[4][STATE_NAME]  # the state file, when the checkpoint of epoch 5 is written, holds epoch 5
    assert [e for e, _ in saved["history"]] == [1, 2, 3, 4, 5] and saved["history"][-1][1] == pytest.approx(0.22)


def test_unvalidated_epochs_are_not_counted(tmp_path):
    trainer = FakeTrainer(tmp_path, epochs=6)
    add_smartcash_callbacks(trainer, early_stopping={"adaptive": False})
    trainer.setup()
    trainer.run_epoch(0.3)
    for _ in range(4):
        trainer.run_epoch(None, validate=False)  # Ultralytics passes the stale fitness on these epochs
    assert trainer.stopper.history == [(1, pytest.approx(0.165))] and not trainer.stop


def test_a_nan_epoch_is_not_counted_and_does_not_end_the_run(tmp_path):
    trainer = FakeTrainer(tmp_path, epochs=3)
    add_smartcash_callbacks(trainer)
    trainer.setup()
    trainer.run_epoch(float("nan"))  # Ultralytics cannot recover a NaN first epoch and trains on
    trainer.run_epoch(0.2)
    assert trainer.stopper.history == [(2, pytest.approx(0.11))] and not trainer.stop


def test_monitor_must_exist_before_training(tmp_path):
    trainer = FakeTrainer(tmp_path)
    add_smartcash_callbacks(trainer, early_stopping={"monitor": "mAP90"})
    with pytest.raises(ValueError, match="mAP90.*mAP50"):
        trainer.setup()


def test_resume_restores_the_stopper_up_to_the_checkpoint(tmp_path):
    first, _ = fake_run(tmp_path, [0.1, 0.3, 0.5, 0.5])  # the state file holds 4 epochs; resumed from epoch 3's
    resumed = FakeTrainer(tmp_path, epochs=6, resume=str(tmp_path / "weights/last.pt"))
    resumed.start_epoch = 3
    add_smartcash_callbacks(resumed)
    resumed.setup()
    assert resumed.stopper.history == first.stopper.history[:3]
    assert resumed.stopper.patience == 5  # grown 3 -> 5 by the two fast gains, as in the first session
    resumed.epoch = 3
    for m in (0.5, 0.5, 0.5):
        resumed.run_epoch(m)
    again = FakeTrainer(tmp_path / "again", epochs=6)  # the same six epochs in one session decide the same
    add_smartcash_callbacks(again)
    again.train([0.1, 0.3, 0.5, 0.5, 0.5, 0.5])
    assert resumed.stopper.summary() == again.stopper.summary() and resumed.stop == again.stop


def test_resume_from_a_checkpoint_written_before_the_state_file_restores_its_state(tmp_path):
    first, _ = fake_run(tmp_path / "a", [0.1, 0.3, 0.5, 0.5])
    model = torch.nn.Identity()
    setattr(model, STATE_ATTR, {STATE_KEY: first.saved[2][STATE_NAME]})  # where such checkpoints carried it
    torch.save({"epoch": 2, "ema": model}, tmp_path / "last.pt")
    resumed = FakeTrainer(tmp_path / "b", epochs=6, resume=str(tmp_path / "last.pt"))
    resumed.start_epoch = 3
    add_smartcash_callbacks(resumed)
    resumed.setup()
    assert resumed.stopper.history == first.stopper.history[:3] and resumed.stopper.patience == 5


def test_non_zero_ddp_rank_does_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "1")  # Ultralytics' rule: RANK alone, without DDP, means nothing
    assert fake_run(tmp_path / "single", [0.2, 0.3])[1]  # still reports
    monkeypatch.setenv("WORLD_SIZE", "2")
    rank1 = tmp_path / "rank1"
    trainer, events = fake_run(rank1, [0.2, 0.2, 0.2, 0.2, 0.2, 0.2], early_stopping={"adaptive": False})
    assert not isinstance(trainer.stopper, AdaptiveEarlyStopping) and not trainer.stop
    assert events == [] and sorted(p.name for p in rank1.iterdir()) == ["weights"]


def test_callbacks_pickle_without_the_trainer_and_are_not_registered_twice(tmp_path):
    trainer, _ = fake_run(tmp_path, [0.2, 0.3])
    carried = pickle.dumps(dict(trainer.callbacks))  # what a DDP launch script carries
    assert b"FakeTrainer" not in carried  # the trainer stays behind (a real one does not pickle)
    clone = pickle.loads(carried)
    assert has_smartcash_callbacks(clone)
    owners = {type(fn.__self__).__name__ for fns in clone.values() for fn in fns}
    assert owners == {"EarlyStoppingInstaller", "MetricsExporter", "ProgressReporter", "RunState"}
    with pytest.raises(ValueError, match="already has"):
        add_smartcash_callbacks(trainer)


def test_settings_are_validated():
    assert resolve({"callbacks": {"early_stopping": False}})["callbacks"]["early_stopping"]["enabled"] is False
    assert resolve(None)["callbacks"]["progress"]["min_interval"] == 0.5
    assert resolve({"backbone_weights": None})["training"]["val_interval"] == 1  # the model's own keys pass
    with pytest.raises(ValueError, match="unknown callback 'early_stop'"):
        resolve({"callbacks": {"early_stop": {}}})
    with pytest.raises(
        ValueError, match=r"m.yaml: smartcash.callbacks.early_stopping: unknown setting\(s\) \['patients'\]"
    ):
        resolve({"callbacks": {"early_stopping": {"patients": 3}}}, "m.yaml: smartcash")
    with pytest.raises(ValueError, match=r"m.yaml: smartcash.training.val_interval must be an integer >= 1, got 0"):
        resolve({"training": {"val_interval": 0}}, "m.yaml: smartcash")
    with pytest.raises(ValueError, match=r"early_stopping=...\).callbacks.early_stopping: unknown setting"):
        add_smartcash_callbacks(SimpleNamespace(), early_stopping={"patients": 3})


def test_an_explicit_setting_wins_over_the_model_yaml_which_wins_over_the_defaults(tmp_path):
    trainer = FakeTrainer(tmp_path)
    section = {"early_stopping": {"monitor": "mAP50", "min_delta": 0.01}, "progress": {"min_interval": 7}}
    trainer.model.yaml = {"smartcash": {"callbacks": {**section, "metrics_export": False}}}
    add_smartcash_callbacks(trainer, early_stopping={"min_delta": 0.05}, metrics_export=True, min_interval=0)
    trainer.setup()
    stopper, reporter = trainer.stopper, registered(trainer.callbacks, ProgressReporter)
    assert (stopper.monitor, stopper.min_delta, stopper.window) == ("mAP50", 0.05, 5)  # YAML, explicit, default
    assert reporter.min_interval == 0 and reporter.events_file  # explicit, default
    assert registered(trainer.callbacks, MetricsExporter).enabled  # explicit over the YAML's false


def test_disabled_early_stopping_keeps_ultralytics_stopper(tmp_path):
    trainer = FakeTrainer(tmp_path)
    trainer.model.yaml = {"smartcash": {"callbacks": {"early_stopping": False, "metrics_export": False}}}
    stock = trainer.stopper
    add_smartcash_callbacks(trainer)
    trainer.setup()
    assert trainer.stopper is stock and not isinstance(trainer.stopper, AdaptiveEarlyStopping)
    trainer.run_epoch(0.3)
    assert not (tmp_path / "metrics.json").exists() and (tmp_path / "events.jsonl").exists()


# -------------------------------------------------------------------------------------------------- metric export
def test_metric_files_hold_every_epoch_and_the_summary(tmp_path):
    trainer, _ = fake_run(tmp_path, [0.2, 0.4, 0.3])
    document = json.loads((tmp_path / "metrics.json").read_text())
    rows = document["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[1]["metrics/mAP50(B)"] == 0.4 and rows[1]["train/box_loss"] == 0.25 and rows[1]["lr/pg0"] == 0.005
    assert rows[1]["layer_1/mAP50(B)"] == 0.4 and rows[1]["layer_2/mAP50(B)"] is None  # 001 is the only AP given
    assert rows[1]["early_stopping/best"] == pytest.approx(0.22) and rows[2]["early_stopping/wait"] == 1
    assert rows[0]["val_time"] >= 0 and rows[0]["eta"] == pytest.approx(0.02)
    summary = document["summary"]
    assert summary["status"] == "completed" and summary["best_epoch"] == 2 and summary["best"] == rows[1]
    assert summary["final"]["metrics/mAP50(B)"] == 0.99 and summary["early_stopping"]["best_epoch"] == 2
    csv_lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith("epoch,epochs,validated,train/box_loss")


def test_unvalidated_epoch_rows_leave_validation_figures_empty(tmp_path):
    trainer = FakeTrainer(tmp_path, epochs=3)
    add_smartcash_callbacks(trainer)
    trainer.setup()
    trainer.run_epoch(0.3)
    trainer.run_epoch(None, validate=False)
    row = json.loads((tmp_path / "metrics.json").read_text())["epochs"][1]
    assert row["validated"] is False and row["metrics/mAP50(B)"] is None and row["val_time"] is None
    assert row["train/box_loss"] == 0.25


def test_a_crash_mid_write_leaves_the_previous_files_intact(tmp_path, monkeypatch):
    trainer = FakeTrainer(tmp_path, epochs=3)
    add_smartcash_callbacks(trainer)
    trainer.setup()
    trainer.run_epoch(0.3)
    before = {name: (tmp_path / name).read_bytes() for name in ("metrics.json", "metrics.csv", STATE_NAME)}

    def crash(fd):
        raise OSError("disk gone")

    monkeypatch.setattr("smartcash_ultra.utils.files.os.fsync", crash)  # after the temp file is written, before rename
    with pytest.raises(OSError, match="disk gone"):
        trainer.run_epoch(0.4)
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        STATE_NAME,
        "events.jsonl",
        "metrics.csv",
        "metrics.json",
        "results.csv",  # the fake trainer's, as Ultralytics writes it
        "weights",
    ]


def test_resume_continues_the_files_without_duplicated_or_lost_epochs(tmp_path):
    first, _ = fake_run(tmp_path, [0.1, 0.2, 0.3, 0.4])  # epochs 1-4 written; say the checkpoint is of epoch 2
    resumed = FakeTrainer(tmp_path, epochs=5)
    resumed.start_epoch = resumed.epoch = 2
    add_smartcash_callbacks(resumed)
    resumed.setup()
    for m in (0.35, 0.45, 0.5):
        resumed.run_epoch(m)
    rows = json.loads((tmp_path / "metrics.json").read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["metrics/mAP50(B)"] for r in rows] == [0.1, 0.2, 0.35, 0.45, 0.5]
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 6
    fresh = FakeTrainer(tmp_path, epochs=2)  # a new run into the same dir starts a new history
    add_smartcash_callbacks(fresh)
    fresh.setup()
    fresh.run_epoch(0.1)
    assert [r["epoch"] for r in json.loads((tmp_path / "metrics.json").read_text())["epochs"]] == [1]


def test_a_row_cut_short_by_a_kill_and_rows_after_the_checkpoint_are_dropped_atomically(tmp_path, monkeypatch):
    path = tmp_path / "results.csv"
    whole = "epoch,time,metrics/mAP50(B)\n1,2.5,0.1\n2,5.1,0.2\n3,7.6,0.3\n"
    path.write_text(whole + "4,10.")  # a kill -9 mid-append
    assert results_epochs(path) == [1, 2, 3]

    def crash(fd):
        raise OSError("killed mid-write")

    with monkeypatch.context() as m:
        m.setattr("os.fsync", crash)
        with pytest.raises(OSError):
            trim_results(path, 2)
    assert path.read_text() == whole + "4,10." and sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]
    assert trim_results(path, 2) == 2 and path.read_text() == "epoch,time,metrics/mAP50(B)\n1,2.5,0.1\n2,5.1,0.2\n"
    assert trim_results(path, 2) == 0 and trim_results(tmp_path / "missing.csv", 2) == 0


# ------------------------------------------------------------------------------------------------------- progress
def test_a_line_cut_short_by_a_kill_does_not_break_the_event_log_a_resume_continues(tmp_path):
    (tmp_path / "events.jsonl").write_text('{"event": "started"}\n{"event": "progress", "lev')  # kill -9 mid-write
    fake_run(tmp_path, [0.1, 0.2])
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events[0] == {"event": "started"} and events[1]["event"] == "started" and events[-1]["event"] == "completed"


def test_progress_sequences_are_monotone_with_exact_totals_ending_at_100_percent(tmp_path):
    trainer, events = fake_run(tmp_path, [0.1, 0.2, 0.3], batches=5, val_batches=3, min_interval=0)
    by_level = {level: [(c, t) for lvl, c, t, _ in events if lvl == level] for level in ("overall", "epoch", "batch")}
    assert by_level["overall"] == [(0, 3), (1, 3), (2, 3), (3, 3), (3, 3)]
    epoch_events = by_level["epoch"]
    assert all(t == 8 for _, t in epoch_events)  # 5 training + 3 validation batches
    per_epoch = [epoch_events[i * 10 : (i + 1) * 10] for i in range(3)]
    for seq in per_epoch:
        assert [c for c, _ in seq] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 8]
    assert by_level["batch"] == [(i, 5) for i in range(1, 6)] * 3
    batch_messages = [m for lvl, _, _, m in events if lvl == "batch"]
    assert batch_messages[0] == "epoch 1/3 batch 1/5 box_loss 1 cls_loss 2"


def test_an_epoch_without_validation_skips_its_validation_share_and_still_ends_at_100_percent(tmp_path):
    events, errors = Collector(), Collector()
    trainer = FakeTrainer(tmp_path, epochs=3, batches=5, val_batches=3)
    add_smartcash_callbacks(trainer, progress_callback=events, error_callback=errors, min_interval=0)
    trainer.setup()
    trainer.run_epoch(0.1)
    trainer.run_epoch(None, validate=False)  # a validation interval, or val=False: known only once it happened
    epoch_events = [(c, t) for lvl, c, t, _ in events if lvl == "epoch"]
    assert epoch_events[10:] == [(0, 8), (1, 8), (2, 8), (3, 8), (4, 8), (5, 8), (8, 8)]
    fault = fault_at("results", 3, OSError("disk full"))
    trainer.fault = lambda at: fault(trainer, at)
    with pytest.raises(OSError):
        try:
            trainer.run_epoch(None, validate=False)  # fails while saving an epoch that did not validate
        finally:
            trainer.run_callbacks("teardown")  # as Ultralytics' train() does
    assert [context["stage"] for _, context in errors] == ["saving"]


def test_progress_is_throttled_but_first_and_last_always_pass(tmp_path):
    _, events = fake_run(tmp_path, [0.1, 0.2], batches=50, min_interval=3600)
    batch = [(c, t) for lvl, c, t, _ in events if lvl == "batch"]
    assert batch == [(1, 50), (50, 50)] * 2
    epoch = [c for lvl, c, t, _ in events if lvl == "epoch" and t == 52]
    assert epoch == [0, 1, 50, 52, 52] * 2  # start, first and last training batch, last validation batch, done


def test_metrics_callback_gets_the_metrics_json_rows_and_events_file_mirrors_everything(tmp_path):
    records, done = [], []
    trainer = FakeTrainer(tmp_path, epochs=2)
    add_smartcash_callbacks(trainer, metrics_callback=records.append, completion_callback=done.append)
    trainer.setup()
    trainer.run_epoch(0.1)
    trainer.run_epoch(0.2)
    trainer.finish()
    rows = json.loads((tmp_path / "metrics.json").read_text())["epochs"]
    assert records == rows  # times and ETA too: one clock
    assert done[0]["status"] == "completed" and done[0]["final_metrics"]["metrics/mAP50(B)"] == 0.99
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in lines]
    assert kinds[0] == "started" and kinds[-1] == "completed" and kinds.count("metrics") == 2
    assert lines[-1]["status"] == "completed"


def test_error_callback_gets_the_exception_and_its_context(tmp_path):
    errors = []
    trainer = FakeTrainer(tmp_path, epochs=3)
    add_smartcash_callbacks(trainer, error_callback=lambda e, c: errors.append((e, c)))
    trainer.setup()
    trainer.run_epoch(0.1)
    with pytest.raises(RuntimeError, match="CUDA error"):
        try:
            trainer.run_callbacks("on_train_epoch_start")
            raise RuntimeError("CUDA error: device-side assert")
        finally:
            trainer.run_callbacks("teardown")  # Ultralytics' train() runs it in a finally
    ((exc, context),) = errors
    assert str(exc).startswith("CUDA error") and context["stage"] == "train" and context["epoch"] == 2
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    (error,) = [e for e in events if e["event"] == "error"]
    assert error["error"] == "RuntimeError" and error["context"]["epoch"] == 2
    last = events[-1]  # the completion event follows, always the last line
    assert (last["event"], last["status"], last["reason"]) == ("completed", "failed", f"RuntimeError: {exc}")


def test_error_during_setup_is_reported_in_the_events_file(tmp_path):
    errors = []
    trainer = FakeTrainer(tmp_path)
    add_smartcash_callbacks(trainer, error_callback=lambda e, c: errors.append(c))
    try:
        raise FileNotFoundError("data.yaml")
    except FileNotFoundError:
        trainer.run_callbacks("teardown")
    assert errors[0]["stage"] == "setup"
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e.get("status")) for e in events] == [
        ("error", None),
        ("progress", None),
        ("completed", "failed"),
    ]


def test_a_raising_ui_callback_is_reported_once_and_training_goes_on(tmp_path, log_lines):
    calls = []

    def broken(*args):
        calls.append(args)
        raise ZeroDivisionError("ui bug")

    trainer = FakeTrainer(tmp_path, epochs=2)
    add_smartcash_callbacks(trainer, progress_callback=broken, min_interval=0)
    trainer.setup()
    trainer.run_epoch(0.1)
    trainer.run_epoch(0.2)
    assert len(calls) == 1 and trainer.epoch == 2
    assert len(json.loads((tmp_path / "metrics.json").read_text())["epochs"]) == 2
    reports = [line for line in log_lines if "progress_callback" in line]
    assert len(reports) == 1 and "ZeroDivisionError('ui bug')" in reports[0] and "not called again" in reports[0]


def test_teardown_without_an_exception_reports_nothing(tmp_path):
    errors = []
    trainer = FakeTrainer(tmp_path, epochs=1)
    add_smartcash_callbacks(trainer, error_callback=lambda e, c: errors.append(e))
    trainer.setup()
    trainer.run_epoch(0.1)
    trainer.finish()
    assert errors == []
    assert "error" not in (tmp_path / "events.jsonl").read_text()


def test_exporter_and_reporter_alone(tmp_path):
    trainer = FakeTrainer(tmp_path, epochs=1)
    exporter, reporter = MetricsExporter(), ProgressReporter(events_file=False)
    for handler in (exporter, reporter):
        for event, fn in handler.callbacks.items():
            trainer.add_callback(event, fn)
    trainer.setup()
    trainer.run_epoch(0.1)
    assert (tmp_path / "metrics.json").exists() and not (tmp_path / "events.jsonl").exists()


def test_cuda_runs_record_gpu_memory_and_utilisation(tmp_path, monkeypatch):
    for name, value in (("memory_allocated", 2e9), ("memory_reserved", 3e9), ("max_memory_allocated", 2.5e9)):
        monkeypatch.setattr(torch.cuda, name, lambda device=None, v=value: v)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "utilization", lambda device=None: 87)
    trainer = FakeTrainer(tmp_path, epochs=1)
    trainer.device = SimpleNamespace(type="cuda")
    add_smartcash_callbacks(trainer)
    trainer.setup()
    trainer.run_epoch(0.1)
    row = json.loads((tmp_path / "metrics.json").read_text())["epochs"][0]
    assert (row["gpu/mem_allocated_gb"], row["gpu/mem_reserved_gb"], row["gpu/mem_peak_gb"]) == (2.0, 3.0, 2.5)
    assert row["gpu/utilization"] == 87.0
    monkeypatch.setattr(torch.cuda, "utilization", lambda device=None: (_ for _ in ()).throw(ModuleNotFoundError))
    trainer.run_epoch(0.2)  # no pynvml: utilisation unknown, the rest still recorded
    row = json.loads((tmp_path / "metrics.json").read_text())["epochs"][1]
    assert row["gpu/utilization"] is None and row["gpu/mem_peak_gb"] == 2.5


# ------------------------------------------------------------------------------------------------------ run state
def test_an_early_stop_is_stopped_early_alike_in_the_status_the_metric_files_and_the_events(tmp_path):
    done = Collector()
    trainer = FakeTrainer(tmp_path, epochs=8)
    add_smartcash_callbacks(trainer, completion_callback=done, early_stopping={"adaptive": False})
    trainer.setup()
    for m in [0.2, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]:
        trainer.run_epoch(m)
        if trainer.stop:
            break
    trainer.finish()
    reason = trainer.stopper.stop_reason
    assert trainer.epoch + 1 == 5 and "no improvement in fitness for 3 validated epochs" in reason
    status = registered(trainer.callbacks, RunState).snapshot()
    assert (status["state"], status["reason"], status["eta"]) == ("stopped_early", reason, 0.0)
    summary = json.loads((tmp_path / "metrics.json").read_text())["summary"]
    assert (summary["status"], summary["reason"]) == ("stopped_early", reason)
    completed = json.loads((tmp_path / "events.jsonl").read_text().splitlines()[-1])
    assert (completed["event"], completed["status"], completed["reason"]) == ("completed", "stopped_early", reason)
    assert done[0][0]["status"] == "stopped_early"


def test_one_eta_the_status_says_what_the_metric_row_says_at_the_epoch_end(tmp_path):
    seen = []
    trainer = FakeTrainer(tmp_path, epochs=4, batches=4)
    add_smartcash_callbacks(trainer, metrics_callback=lambda row: seen.append((row["eta"], state.snapshot()["eta"])))
    state = registered(trainer.callbacks, RunState)
    trainer.setup()
    for m in (0.1, 0.2, 0.3):
        trainer.run_epoch(m)  # each epoch takes trainer.epoch_time = 0.01 s
    assert [row for row, _ in seen] == [status for _, status in seen] == pytest.approx([0.03, 0.02, 0.01])
    assert [r["eta"] for r in json.loads((tmp_path / "metrics.json").read_text())["epochs"]] == [r for r, _ in seen]
    trainer.run_callbacks("on_train_epoch_start")
    trainer.run_callbacks("on_train_batch_end")
    assert state.snapshot()["eta"] == pytest.approx(0.0075)  # the last epoch, 1 of its 4 batches done


def test_stop_requests_end_a_single_process_run_at_the_epoch_end_once_its_batches_ran(tmp_path):
    trainer = FakeTrainer(tmp_path, epochs=3)
    add_smartcash_callbacks(trainer)
    state = registered(trainer.callbacks, RunState)
    assert state.snapshot()["state"] == "idle"
    trainer.setup()
    trainer.run_epoch(0.1)
    assert state.snapshot()["state"] == "running" and not trainer.stop
    assert state.request_stop("stop button") and not state.request_stop("again")  # the first reason is kept
    assert (state.snapshot()["state"], state.snapshot()["reason"]) == ("stopping", "stop button")
    trainer.run_callbacks("on_train_epoch_start")
    trainer.run_callbacks("on_train_batch_end")
    assert not trainer.stop  # a half-trained epoch is never recorded as done
    trainer.run_epoch(0.2)
    assert trainer.stop and state.snapshot()["batch"] == state.snapshot()["batches"] == len(trainer.train_loader)
    trainer.finish()
    assert (state.snapshot()["state"], state.snapshot()["reason"]) == ("stopped", "stop button")
    summary = json.loads((tmp_path / "metrics.json").read_text())["summary"]
    assert (summary["status"], summary["reason"]) == ("stopped", "stop button")


class SecondCtrlC(KeyboardInterrupt):
    """What the signal handler raises on a second Ctrl-C (a KeyboardInterrupt)."""


def fault_at(point: str, epoch: int, exc: BaseException, request_stop: bool = False):
    """Return a fault for ``FakeTrainer.fault``: raise ``exc`` at ``point`` of ``epoch`` (1-based).

    ``final_eval`` of an epoch is the final evaluation after it; with ``request_stop``, a stop is requested first, at
    that epoch's first batch.
    """

    def fault(trainer, at):
        if request_stop and at == "batch" and trainer.epoch + 1 == epoch:
            registered(trainer.callbacks, RunState).request_stop("SIGINT received")
        if at == point and trainer.epoch + 1 == epoch:
            raise exc

    return fault


def faulty_run(tmp_path, fault, epochs=3, **ui):
    """Train the fake trainer for ``epochs`` with ``fault`` injected; return it (the exception has propagated)."""
    trainer = FakeTrainer(tmp_path, epochs=epochs, batches=3)
    trainer.fault = lambda at: fault(trainer, at)
    add_smartcash_callbacks(trainer, min_interval=0, **ui)
    with pytest.raises(BaseException) as raised:
        trainer.train([0.1 * (i + 1) for i in range(epochs)])
    assert raised.type is not pytest.fail.Exception
    return trainer


# A second Ctrl-C (the stop was requested at epoch 2's first batch) at each point of the run: the rows all files hold.
SECOND_CTRL_C = {
    "batch": [1],
    "val_batch": [1],
    "validated": [1],
    "results": [1, 2],  # results.csv has epoch 2, its checkpoint is not written: the files record it too
    "final_eval": [1, 2],
}


@pytest.mark.parametrize("point", list(SECOND_CTRL_C))
def test_a_second_ctrl_c_anywhere_ends_stopped_and_leaves_the_files_agreeing(tmp_path, point):
    errors, done = Collector(), Collector()
    fault = fault_at(point, 2, SecondCtrlC("second SIGINT"), request_stop=True)  # final_eval: after epoch 2
    trainer = faulty_run(tmp_path, fault, error_callback=errors, completion_callback=done)
    summary = assert_run_files_agree(tmp_path, "stopped", SECOND_CTRL_C[point])
    assert summary["reason"] == "SecondCtrlC: second SIGINT" and errors == []  # a stop, not a failure
    assert done[0][0]["status"] == "stopped" and registered(trainer.callbacks, RunState).state == "stopped"
    assert "error" not in [json.loads(line)["event"] for line in (tmp_path / "events.jsonl").read_text().splitlines()]


def test_a_second_ctrl_c_while_the_epoch_is_reported_still_reports_it(tmp_path):
    def progress(level, current, total, message):
        if message.startswith("epoch 2/3 done"):  # in the reporter's epoch end, after metrics.json has epoch 2
            raise SecondCtrlC("second SIGINT")

    fault = fault_at("none", 2, SecondCtrlC(), request_stop=True)
    faulty_run(tmp_path, fault, progress_callback=progress)
    assert_run_files_agree(tmp_path, "stopped", [1, 2])


FAILURE_STAGES = {"batch": "train", "val_batch": "validation", "validated": "saving", "results": "saving"}


@pytest.mark.parametrize("point", [*FAILURE_STAGES, "final_eval"])
def test_a_failure_anywhere_ends_failed_names_its_stage_and_leaves_the_files_agreeing(tmp_path, point):
    errors, done = Collector(), Collector()
    epoch = 3 if point == "final_eval" else 2  # the final evaluation after the last epoch, 3
    message = "\x1b[34m\x1b[1mtrain: \x1b[0mdisk full"  # Ultralytics colours some of its messages
    trainer = faulty_run(
        tmp_path, fault_at(point, epoch, OSError(message)), error_callback=errors, completion_callback=done
    )
    epochs = {**SECOND_CTRL_C, "final_eval": [1, 2, 3]}[point]  # the same rows as for a second Ctrl-C there
    summary = assert_run_files_agree(tmp_path, "failed", epochs)
    assert summary["reason"] == "OSError: train: disk full" == registered(trainer.callbacks, RunState).reason
    ((exc, context),) = errors
    assert context["stage"] == FAILURE_STAGES.get(point, "final_eval") and str(exc) == message
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    (error,) = [e for e in events if e["event"] == "error"]
    assert (error["message"], error["context"]) == ("train: disk full", context)
    assert done[0][0]["status"] == "failed"


def test_a_resumed_run_that_fails_before_an_epoch_closes_keeps_its_history(tmp_path):
    faulty_run(tmp_path, fault_at("batch", 3, RuntimeError("CUDA error")))  # epochs 1 and 2 saved
    resumed = FakeTrainer(tmp_path, epochs=3, batches=3)
    resumed.start_epoch = resumed.epoch = 2
    resumed.fault = lambda at: fault_at("setup", 3, RuntimeError("CUDA error"))(resumed, at)
    add_smartcash_callbacks(resumed)
    resumed.add_callback("on_pretrain_routine_end", lambda trainer: trainer.fault("setup"))  # after the handlers
    with pytest.raises(RuntimeError):
        resumed.train([0.3])
    assert_run_files_agree(tmp_path, "failed", [1, 2], session=[])


@pytest.mark.parametrize("ending", ["completed", "stopped_early", "stopped"])
def test_every_other_ending_leaves_the_files_agreeing(tmp_path, ending):
    trainer = FakeTrainer(tmp_path, epochs=6, batches=3, patience=2)
    add_smartcash_callbacks(trainer, early_stopping={"adaptive": False})
    if ending == "stopped":
        trainer.fault = lambda at: trainer.epoch == 2 and registered(trainer.callbacks, RunState).request_stop("button")
    trainer.train([0.1, 0.2, 0.3, 0.4, 0.5, 0.6] if ending != "stopped_early" else [0.2, 0.4, 0.4, 0.4, 0.4, 0.4])
    epochs = {"completed": 6, "stopped_early": 4, "stopped": 3}[ending]
    assert_run_files_agree(tmp_path, ending, list(range(1, epochs + 1)))


def test_stop_requests_under_ddp_take_effect_at_the_epoch_end_on_rank_0(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, stops in (("0", True), ("1", False)):
        monkeypatch.setenv("RANK", rank)
        trainer = SimpleNamespace(world_size=2, stop=False, epoch=0, epochs=3, train_loader=[None] * 4)
        trainer.device, trainer.metrics, trainer.epoch_time = torch.device("cpu"), {}, 0.01
        trainer.fitness = trainer.best_fitness = None
        state = RunState()
        state.request_stop("SIGTERM received")
        state.on_train_epoch_start(trainer)
        state.on_train_batch_end(trainer)
        assert not trainer.stop  # a per-batch stop is not shared between ranks and would hang them
        state.on_fit_epoch_end(trainer)
        assert trainer.stop is stops  # rank 0 decides, Ultralytics broadcasts


def test_run_state_pickles_without_its_lock_and_fails_with_the_exception(tmp_path):
    state = pickle.loads(pickle.dumps(RunState()))
    state.start()
    assert state.snapshot()["state"] == "running"
    try:
        raise RuntimeError("CUDA error")
    except RuntimeError as e:
        state.fail(e)
    assert (state.snapshot()["state"], state.snapshot()["reason"]) == ("failed", "RuntimeError: CUDA error")
    forced = RunState()
    forced.start()
    forced.request_stop("SIGINT received")
    forced.fail(KeyboardInterrupt("second SIGINT"))  # a second Ctrl-C while stopping
    assert (forced.snapshot()["state"], forced.snapshot()["reason"]) == ("stopped", "KeyboardInterrupt: second SIGINT")


def test_an_unknown_ui_callback_keyword_is_a_type_error_naming_it(tmp_path):
    with pytest.raises(TypeError, match="progres_callback"):
        add_smartcash_callbacks(FakeTrainer(tmp_path), progres_callback=print)
    from smartcash_ultra.engine.trainer import SmartCashTrainer

    with pytest.raises(TypeError, match="completion_calback"):
        SmartCashTrainer(overrides={"project": str(tmp_path)}, completion_calback=print)


def test_metrics_callback_records_carry_the_smartcash_ui_card_keys(tmp_path):
    records = []
    trainer = FakeTrainer(tmp_path, epochs=2, val_interval=2)
    add_smartcash_callbacks(trainer, metrics_callback=records.append)
    trainer.setup()
    trainer.run_epoch(None, validate=False)
    trainer.run_epoch(0.5)
    trainer.finish()
    cards = [{k: r[k] for k in ("loss", "map50", "map75", "lr", "gpu_memory")} for r in records]
    assert cards == [  # losses of the last batch (box 1/4, cls 2); no validation: no mAP; on CPU: no GPU memory
        {"loss": 2.25, "map50": None, "map75": None, "lr": 0.01, "gpu_memory": None},
        {"loss": 2.25, "map50": 0.5, "map75": 0.4, "lr": 0.005, "gpu_memory": None},
    ]
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == records


def test_metrics_json_plans_the_epochs_a_time_limit_re_estimated(tmp_path):
    trainer = FakeTrainer(tmp_path, epochs=100)  # time=: Ultralytics re-estimates epochs after each one
    add_smartcash_callbacks(trainer)
    trainer.setup()
    trainer.run_epoch(0.1)
    trainer.epochs = 2
    trainer.run_epoch(0.2)
    trainer.finish()
    document = json.loads((tmp_path / "metrics.json").read_text())
    assert document["run"]["epochs"] == 2
    assert [r["epochs"] for r in document["epochs"]] == [100, 2]


def test_ui_card_gpu_memory_is_the_epochs_cuda_peak_in_mb():
    from smartcash_ultra.callbacks.epoch_record import ui_cards

    record = {"train/box_loss": 1.5, "train/cls_loss": 0.25, "train/dfl_loss": 1.0, "lr/pg0": 0.001}
    assert ui_cards({**record, "gpu/mem_peak_gb": 1.2345})["gpu_memory"] == pytest.approx(1234.5)
    assert ui_cards(record) == {"loss": 2.75, "map50": None, "map75": None, "lr": 0.001, "gpu_memory": None}
