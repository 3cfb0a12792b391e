"""Progress reporting for UIs: the UI callbacks of :class:`UICallbacks`, and ``events.jsonl``.

The same events go to ``events.jsonl`` in the run dir, one JSON object per line, so a UI in another process can follow
the run (and under DDP, where callbacks run in the worker processes).
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ultralytics.utils import LOGGER, remove_colorstr

from smartcash_ultra.callbacks.base import Callback, callback_settings, explicit_settings
from smartcash_ultra.callbacks.epoch_record import epoch_record
from smartcash_ultra.callbacks.run_state import RunState
from smartcash_ultra.utils.errors import SmartCashError
from smartcash_ultra.utils.settings import DEFAULTS, is_main_process

EVENTS_NAME = "events.jsonl"


@dataclass(frozen=True)
class UICallbacks:
    """The UI callbacks of a run, each optional; every API that takes them takes these keyword names.

    - ``progress_callback(level, current, total, message)`` has three levels, each counting up to an exact ``total``
      that it always reaches: ``overall``, epochs of the whole run (``current`` = epochs done; the completion event
      brings it to ``total`` also when early stopping ended the run sooner); ``epoch``, batches of the current epoch,
      training then validation; ``batch``, training batches of the current epoch, the message carrying the running
      mean losses. ``epoch`` and ``batch`` events are throttled to one per ``min_interval`` seconds (the first and
      the last of an epoch always pass).
    - ``metrics_callback(record)`` gets the epoch's record (its row of ``metrics.json``) once per epoch.
    - ``error_callback(exc, context)`` gets the exception that ended a failed run; ``context`` holds ``stage``
      (``setup``, ``train``, ``validation``, ``saving`` — results.csv, checkpoints and metric files after an
      epoch's validation —, ``final_eval``), ``epoch``, ``batch`` and ``save_dir``.
    - ``completion_callback(summary)`` gets how every run ended, once, also a failed one (after ``error_callback``)
      or one a second Ctrl-C ended: ``status`` (``completed``, ``stopped_early``, ``stopped`` or ``failed``),
      ``reason``, ``epochs_completed``, ``epochs``, ``final_metrics``, ``best``, ``last`` and ``save_dir``.

    A callback that raises is reported once and skipped: a UI bug must not kill a long run. They are called on rank 0
    only, so under DDP in the worker process: they must pickle (closures and lambdas do).
    """

    progress_callback: Callable[[str, int, int, str], Any] | None = None
    metrics_callback: Callable[[dict], Any] | None = None
    error_callback: Callable[[BaseException, dict], Any] | None = None
    completion_callback: Callable[[dict], Any] | None = None


class ProgressReporter(Callback):
    """Turns Ultralytics' training events into progress, metrics, error and completion events (rank 0 only)."""

    def __init__(self, events_file: bool | None = None, min_interval: float | None = None, **ui):
        """Take the :class:`UICallbacks` by name; ``events_file``, ``min_interval`` None: from the model YAML."""
        self.ui = UICallbacks(**ui)
        given = {"enabled": events_file, "min_interval": min_interval}
        self.explicit = explicit_settings("progress", {k: v for k, v in given.items() if v is not None}, "progress")
        self._configure({**DEFAULTS["callbacks"]["progress"], **self.explicit})  # until the model YAML is read
        self.state: RunState | None = None
        self.events_path: Path | None = None
        self.stage = "setup"
        self.batch = self.val_batch = self.epoch_total = self.train_batches = 0
        self.reported: int | None = None  # the last epoch whose metrics went out
        self._last_emit: dict[str, float] = {}
        self._failed_callbacks: set[str] = set()
        self._file = None

    # ------------------------------------------------------------------------------------------------ events
    def on_pretrain_routine_end(self, trainer) -> None:
        """Read the settings and open the run's event log."""
        self._configure(callback_settings("progress", self.explicit, trainer))
        self.state = RunState.of(trainer)
        self._open(trainer)
        resumed = trainer.start_epoch > 0
        self.event("started", save_dir=str(trainer.save_dir), epochs=trainer.epochs, resumed=resumed)

    def on_train_start(self, trainer) -> None:
        """Overall progress at the start (non-zero on resume)."""
        self.stage = "train"
        start, total = trainer.start_epoch, trainer.epochs
        self.emit("overall", start, total, f"epoch {start + 1}/{total} starting", force=True)

    def on_train_epoch_start(self, trainer) -> None:
        """Open the epoch: its total is the training batches plus the validation batches.

        An epoch that does not validate (``val=False``, a validation interval) skips the validation share: its
        progress goes from the last training batch to the total when it closes.
        """
        self.stage, self.batch, self.val_batch = "train", 0, 0
        self.train_batches = len(trainer.train_loader)
        self.epoch_total = self.train_batches + len(trainer.test_loader or ())
        self.emit("epoch", 0, self.epoch_total, f"epoch {trainer.epoch + 1}/{trainer.epochs}", force=True)

    def on_train_batch_end(self, trainer) -> None:
        """Per training batch: ``batch`` (with running losses) and ``epoch`` progress, throttled."""
        self.batch += 1
        if not self.wants("batch") and not self.wants("epoch") and 1 < self.batch < self.train_batches:
            return  # the common case stays cheap: no formatting, no tensor reads
        edge = self.batch in (1, self.train_batches)  # the first and the last always pass
        losses = " ".join(f"{k} {float(v):.4g}" for k, v in (trainer.tloss or {}).items())
        epoch = f"epoch {trainer.epoch + 1}/{trainer.epochs}"
        message = f"{epoch} batch {self.batch}/{self.train_batches} {losses}"
        self.emit("batch", self.batch, self.train_batches, message, edge)
        self.emit("epoch", min(self.batch, self.epoch_total), self.epoch_total, f"{epoch} training", edge)

    def on_train_epoch_end(self, trainer) -> None:
        """Training is done: what follows is saving, unless a validation starts first (``on_val_start``)."""
        self.stage = "saving"

    def on_val_start(self, validator) -> None:
        if self.state is not None and self.state.in_epoch:  # the final evaluation is not an epoch's
            self.stage = "validation"

    def on_val_batch_end(self, validator) -> None:
        """Per validation batch of an epoch: ``epoch`` progress, throttled (the final evaluation is not an epoch)."""
        if self.state is None or not self.state.in_epoch:
            return
        self.val_batch += 1
        current = min(self.train_batches + self.val_batch, self.epoch_total)
        self.emit("epoch", current, self.epoch_total, f"validation batch {self.val_batch}", current == self.epoch_total)

    def on_val_end(self, validator) -> None:
        """After an epoch's validation: results.csv, checkpoints and metric files are written next."""
        if self.state is not None and self.state.in_epoch:
            self.stage = "saving"

    def on_fit_epoch_end(self, trainer) -> None:
        """Finish the epoch at 100 %, send its metrics, advance the overall progress."""
        if not self.state.end_epoch(trainer):  # the final evaluation of best.pt
            return
        epoch, total = trainer.epoch + 1, trainer.epochs
        self.emit("epoch", self.epoch_total, self.epoch_total, f"epoch {epoch}/{total} done", force=True)
        record = self.report_epoch(trainer)
        figures = ", ".join(
            f"{name} {record[key]:.4g}"
            for name, key in (("mAP50", "metrics/mAP50(B)"), ("mAP50-95", "metrics/mAP50-95(B)"))
            if record.get(key) is not None
        )
        self.emit("overall", epoch, total, f"epoch {epoch}/{total} done" + (f": {figures}" if figures else ""), True)
        self.stage = "final_eval" if trainer.stop or epoch >= total else "train"

    def report_epoch(self, trainer) -> dict[str, Any]:
        """Send the record of the epoch just closed to ``metrics_callback`` and events.jsonl; return it."""
        record = epoch_record(trainer, self.state)
        self.reported = record["epoch"]
        self.call("metrics_callback", record)
        self.event("metrics", metrics=record)
        return record

    def on_train_end(self, trainer) -> None:
        """Completion: overall progress to 100 % and the outcome."""
        self.complete(trainer)

    def complete(self, trainer) -> None:
        """Send how the run ended (the run state decided it): overall progress to 100 %, the completion event."""
        status, reason = self.state.finish(trainer)
        done, total = self.state.done, trainer.epochs
        message = f"{status.replace('_', ' ')} after epoch {done}/{total}" + (f": {reason}" if reason else "")
        self.emit("overall", total, total, message, force=True)
        summary = {
            "status": status,
            "epochs_completed": done,
            "epochs": total,
            "reason": reason,
            "final_metrics": self.state.final_metrics,
            "best": str(trainer.best) if Path(trainer.best).exists() else None,
            "last": str(trainer.last) if Path(trainer.last).exists() else None,
            "save_dir": str(trainer.save_dir),
        }
        self.stage = "done"
        self.call("completion_callback", summary)
        self.event("completed", **summary)

    def teardown(self, trainer) -> None:
        """Report a run an exception ended, then its completion; close the event log.

        The run state decided the outcome (its teardown runs first) and closed an epoch already in results.csv; its
        metrics go out now if they had not. A failure goes to ``error_callback`` and an ``error`` event first; a
        second Ctrl-C is no failure.
        """
        self.state = self.state or RunState.of(trainer)
        exc = self.state.exception
        if exc is not None and self.stage != "done" and is_main_process():
            epoch = getattr(trainer, "epoch", None)  # a stock trainer has none before its loop
            if self._file is None and getattr(trainer, "save_dir", None) and Path(trainer.save_dir).is_dir():
                self._open(trainer)  # ended during setup, before the log was opened
            if self.state.state == "failed":
                context = {
                    "stage": self.stage,
                    "epoch": (epoch or 0) + 1,
                    "batch": self.batch,
                    "save_dir": str(getattr(trainer, "save_dir", "")),
                }
                if not isinstance(exc, SmartCashError):  # a known cause: its one message reaches the user as it is
                    LOGGER.error(f"Training failed during {context['stage']} of epoch {context['epoch']}: {exc!r}")
                self.call("error_callback", exc, context)
                self.event("error", error=type(exc).__name__, message=str(exc), context=context)
            if self.state.closed is not None and self.state.closed == epoch and self.reported != epoch + 1:
                self.report_epoch(trainer)
            self.complete(trainer)
        self.close()

    def _configure(self, settings: dict[str, Any]) -> None:
        self.events_file, self.min_interval = bool(settings["enabled"]), float(settings["min_interval"])

    # ------------------------------------------------------------------------------------------------ output
    def wants(self, level: str) -> bool:
        """Return True when an event of ``level`` would pass the throttle now."""
        return time.monotonic() - self._last_emit.get(level, -math.inf) >= self.min_interval

    def emit(self, level: str, current: int, total: int, message: str, force: bool = False) -> None:
        """Send one progress event unless throttled (``force`` always sends)."""
        if not force and not self.wants(level):
            return
        self._last_emit[level] = time.monotonic()
        self.call("progress_callback", level, int(current), int(total), message)
        self.event("progress", level=level, current=int(current), total=int(total), message=message)

    def call(self, name: str, *args) -> None:
        """Call a user callback on rank 0; one that raises is logged once and skipped from then on."""
        fn = getattr(self.ui, name)
        if fn is None or name in self._failed_callbacks or not is_main_process():
            return
        try:
            fn(*args)
        except Exception as e:
            self._failed_callbacks.add(name)
            LOGGER.warning(f"{name} {fn!r} raised {e!r}; it is not called again in this run")

    def event(self, kind: str, **fields) -> None:
        """Append one JSON line to events.jsonl; text without terminal colours (Ultralytics colours some errors)."""
        if self._file is None:
            return
        line = {"time": round(time.time(), 3), "event": kind, **plain(fields)}
        self._file.write(json.dumps(line, allow_nan=False) + "\n")
        self._file.flush()

    def _open(self, trainer) -> None:
        """Open the run's events.jsonl for appending (a resumed run continues it).

        A last line a kill cut short is dropped first: appended to, it would spoil the next event's line too.
        """
        self.close()
        if self.events_file and is_main_process():
            self.events_path = Path(trainer.save_dir) / EVENTS_NAME
            raw = open(self.events_path, "a+b")  # appends wherever it was read
            if raw.tell():
                raw.seek(-1, io.SEEK_END)
                if raw.read(1) != b"\n":
                    raw.seek(0)
                    raw.truncate(raw.read().rfind(b"\n") + 1)
            self._file = io.TextIOWrapper(raw, encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the open file (DDP launch scripts pickle callbacks); the worker finds its run state again."""
        return {**self.__dict__, "_file": None, "state": None}


def plain(value: Any) -> Any:
    """Return ``value`` with the terminal colour codes taken out of every string in it."""
    if isinstance(value, str):
        return remove_colorstr(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value
