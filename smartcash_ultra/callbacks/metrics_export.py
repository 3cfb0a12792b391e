"""Metric export: ``metrics.json`` (history and summary) and ``metrics.csv`` (one flat row per epoch) in the run dir.

Both are rewritten atomically after every epoch, so a reader (or a crash) never sees half a file. On resume the
history is cut back to the checkpoint's epoch and continued: an epoch that ran after the last checkpoint and is run
again appears once, and none is lost.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from ultralytics.utils import LOGGER

from smartcash_ultra.callbacks.base import Callback, callback_settings, explicit_settings
from smartcash_ultra.callbacks.epoch_record import epoch_record
from smartcash_ultra.callbacks.run_state import RunState
from smartcash_ultra.utils.files import write_atomic
from smartcash_ultra.utils.settings import is_main_process

JSON_NAME, CSV_NAME = "metrics.json", "metrics.csv"


class MetricsExporter(Callback):
    """Writes every figure of every epoch to ``metrics.json`` and ``metrics.csv`` (rank 0 only)."""

    def __init__(self, enabled: bool | None = None):
        """Take ``enabled`` None from the model YAML's ``smartcash.callbacks.metrics_export`` (on by default)."""
        self.explicit = explicit_settings("metrics_export", enabled, "metrics_export")
        self.enabled = False
        self.state: RunState | None = None
        self.save_dir: Path | None = None
        self.run: dict[str, Any] = {}
        self.epochs: list[dict[str, Any]] = []
        self.status, self.reason = "running", None

    def on_pretrain_routine_end(self, trainer) -> None:
        """Decide whether to export; on resume, load the history up to the checkpoint's epoch."""
        enabled = callback_settings("metrics_export", self.explicit, trainer)["enabled"]
        self.enabled = bool(enabled) and is_main_process()
        if not self.enabled:
            return
        self.state = RunState.of(trainer)
        self.save_dir = Path(trainer.save_dir)
        self.run = {
            "save_dir": str(self.save_dir),
            "model": str(trainer.args.model),
            "data": str(trainer.args.data),
            "epochs": trainer.epochs,
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        self.epochs, self.status, self.reason = [], "running", None
        if trainer.start_epoch > 0:
            self.epochs = self.load_history(up_to_epoch=trainer.start_epoch)

    def load_history(self, up_to_epoch: int) -> list[dict[str, Any]]:
        """Epoch records of a previous session of this run, up to ``up_to_epoch`` (the checkpoint's, 1-based)."""
        path = self.save_dir / JSON_NAME
        if not path.exists():
            return []
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            LOGGER.warning(f"{path}: unreadable ({e}); metric history restarts at this epoch")
            return []
        self.run = {
            **saved.get("run", {}),
            **{k: self.run[k] for k in ("data", "epochs")},
            "resumed": self.run["started"],
        }
        kept = [r for r in saved.get("epochs", []) if r["epoch"] <= up_to_epoch]
        dropped = len(saved.get("epochs", [])) - len(kept)
        if dropped:
            LOGGER.info(f"{path}: {dropped} epoch(s) after the checkpoint's epoch {up_to_epoch} will be run again")
        return kept

    def on_fit_epoch_end(self, trainer) -> None:
        """Append the epoch's record (or, after training, the final validation of best.pt) and write both files."""
        if not self.enabled:
            return
        if self.state.end_epoch(trainer):
            self.add(epoch_record(trainer, self.state))
        self.write(trainer)

    def add(self, record: dict[str, Any]) -> None:
        """Append an epoch's record, replacing any of that epoch or later (run again after a resume)."""
        self.epochs = [r for r in self.epochs if r["epoch"] < record["epoch"]] + [record]

    def on_train_end(self, trainer) -> None:
        """Write the summary with the run's outcome, the final figures and the weight paths."""
        if self.enabled:
            self.status, self.reason = self.state.finish(trainer)
            self.write(trainer)

    def teardown(self, trainer) -> None:
        """Write the outcome of a run an exception ended (``failed``, or ``stopped`` by a second Ctrl-C).

        The run state decided it (its teardown runs first) and closed an epoch Ultralytics had already written to
        results.csv; a closed epoch without its record (the exception came before this handler's turn) gets it now.
        """
        if not self.enabled or self.state.exception is None:
            return
        closed, recorded = self.state.closed, [r["epoch"] for r in self.epochs[-1:]]
        if closed is not None and closed == getattr(trainer, "epoch", None) and recorded != [closed + 1]:
            self.add(epoch_record(trainer, self.state))
        self.status, self.reason = self.state.state, self.state.reason
        self.write(trainer)

    def summary(self, trainer) -> dict[str, Any]:
        """Outcome, best epoch by fitness (the best.pt criterion), its figures, the final validation, the weights."""
        validated = [r for r in self.epochs if r.get("validated") and r.get("fitness") is not None]
        best = max(validated, key=lambda r: r["fitness"], default=None)  # first of equals, as Ultralytics
        weights = {name: str(p) for name, p in (("best", trainer.best), ("last", trainer.last)) if Path(p).exists()}
        stopper = getattr(trainer.stopper, "summary", None)
        return {
            "status": self.status,
            "reason": self.reason,
            "epochs_completed": self.state.done,
            "best_epoch": best["epoch"] if best else None,
            "best": best,
            "final": self.state.final_metrics,
            "weights": weights,
            "early_stopping": stopper() if callable(stopper) else None,
        }

    def write(self, trainer) -> None:
        self.run["epochs"] = trainer.epochs  # time= re-estimates it after every epoch
        document = {"run": self.run, "summary": self.summary(trainer), "epochs": self.epochs}
        write_atomic(self.save_dir / JSON_NAME, json.dumps(document, indent=1, allow_nan=False).encode())
        write_atomic(self.save_dir / CSV_NAME, to_csv(self.epochs).encode())

    def __getstate__(self) -> dict[str, Any]:
        """Pickle settings only (DDP launch scripts pickle callbacks); the worker finds its run state again."""
        return {**self.__dict__, "epochs": [], "state": None}


def to_csv(records: list[dict[str, Any]]) -> str:
    """Flat CSV of ``records``: columns in first-seen order, empty cells for missing figures."""
    columns = list(dict.fromkeys(k for r in records for k in r))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()
