"""Live training status for UIs: a thread-safe snapshot of where a run stands, kept current by trainer events.

States: ``idle`` (built, not started), ``running``, ``stopping`` (a stop was requested; the run is finishing its
batch, validating and saving), ``stopped`` (ended by a stop request), ``completed`` (all epochs, or early stopping),
``failed`` (an exception ended it).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from smartcash_ultra.callbacks.epoch_record import clean

STATES = ("idle", "running", "stopping", "stopped", "completed", "failed")


class TrainingStatus:
    """Where a run stands; ``snapshot()`` may be called from any thread while the trainer updates it."""

    def __init__(self):
        """Start idle."""
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {
            "state": "idle",
            "epoch": 0,
            "epochs": 0,
            "batch": 0,
            "batches": 0,
            "best_fitness": None,
            "best_epoch": None,
            "last_metrics": {},
            "elapsed": 0.0,
            "eta": None,
            "reason": None,
        }
        self._started = None
        self._epoch_times: list[float] = []
        self._epoch_start = 0.0

    def snapshot(self) -> dict[str, Any]:
        """Return a copy of the status, with elapsed time and ETA computed now."""
        with self._lock:
            status = dict(self._status)
            status["last_metrics"] = dict(status["last_metrics"])
            if self._started is not None and status["state"] in {"running", "stopping"}:
                status["elapsed"] = time.monotonic() - self._started
                status["eta"] = self._eta()
        return status

    def set_state(self, state: str, reason: str | None = None) -> None:
        """Move to ``state`` (one of :data:`STATES`), recording why when given."""
        if state not in STATES:
            raise ValueError(f"unknown training state {state!r}; states: {STATES}")
        with self._lock:
            if state == "running" and self._started is None:
                self._started = time.monotonic()
            if state in {"stopped", "completed", "failed"} and self._started is not None:
                self._status["elapsed"], self._status["eta"] = time.monotonic() - self._started, 0.0
            self._status["state"] = state
            if reason is not None:
                self._status["reason"] = reason

    @property
    def state(self) -> str:
        """The current state."""
        with self._lock:
            return self._status["state"]

    # Ultralytics events -----------------------------------------------------------------------------------------
    @property
    def callbacks(self) -> dict[str, Any]:
        """Ultralytics events this object follows, for ``add_callback``."""
        return {
            "on_train_epoch_start": self.on_train_epoch_start,
            "on_train_batch_end": self.on_train_batch_end,
            "on_fit_epoch_end": self.on_fit_epoch_end,
        }

    def on_train_epoch_start(self, trainer) -> None:
        """Record the new epoch's number, the total and its batch count."""
        with self._lock:
            self._epoch_start = time.monotonic()
            self._status.update(
                epoch=trainer.epoch + 1, epochs=trainer.epochs, batch=0, batches=len(trainer.train_loader)
            )

    def on_train_batch_end(self, trainer) -> None:
        """Count one more batch."""
        with self._lock:
            self._status["batch"] += 1

    def on_fit_epoch_end(self, trainer) -> None:
        """Epoch done: its metrics and the best fitness so far (the final evaluation of best.pt is no epoch)."""
        with self._lock:
            if self._status["epoch"] != trainer.epoch + 1:
                return
            self._epoch_times.append(time.monotonic() - self._epoch_start)
            self._status["last_metrics"] = {k: clean(v) for k, v in (trainer.metrics or {}).items()}
            if trainer.fitness is not None and trainer.best_fitness == trainer.fitness:
                self._status.update(best_fitness=clean(trainer.fitness), best_epoch=trainer.epoch + 1)

    def _eta(self) -> float | None:
        """Seconds left: mean epoch time times the epochs left, minus the done part of this epoch (lock held)."""
        if not self._epoch_times:
            return None
        mean = sum(self._epoch_times) / len(self._epoch_times)
        s = self._status
        done = s["batch"] / s["batches"] if s["batches"] else 0.0
        return max(mean * (s["epochs"] - s["epoch"] + 1 - done), 0.0)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the lock (DDP launch scripts pickle the trainer's callbacks)."""
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Recreate the lock."""
        self.__dict__.update(state)
        self._lock = threading.Lock()
