"""The run's state in one object: where the run stands, how it ended, the epoch clock with the ETA, the stop request.

``get_training_status()``, the metric files (each row's ``eta``, the summary's ``status``) and ``events.jsonl`` (the
same rows, the completion event's ``status``) all read it, so they agree. States: ``idle`` (built, not started),
``running``, ``stopping`` (a stop was requested; the run is finishing its batch, validating and saving), then one of
:data:`OUTCOMES`: ``completed`` (all planned epochs), ``stopped_early`` (early stopping), ``stopped`` (a stop request:
``stop_training()``, SIGINT, SIGTERM) or ``failed`` (an exception ended it).

A stop may be requested from any thread. It takes effect at the end of the current epoch, once its batches have all
run and it is validated and saved (``last.pt``, the metric files; then the final evaluation): an epoch is recorded as
done only when it ran whole, so a resume starts at the next one and never skips the rest of a half-trained epoch.
Under DDP it is decided on rank 0 and broadcast by Ultralytics. A second Ctrl-C stops at once, without saving.

It is a callback object like the others, registered by ``add_smartcash_callbacks`` before them, so a stock model with
the SmartCash callbacks has one too; the trainer, the exporter and the reporter find it with :func:`registered`. It
alone decides the outcome and closes each epoch; the exporter and the reporter read what it decided.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from ultralytics.utils import remove_colorstr

from smartcash_ultra.callbacks.base import Callback
from smartcash_ultra.callbacks.epoch_record import clean, clean_metrics, results_epochs
from smartcash_ultra.utils.settings import is_main_process

OUTCOMES = ("completed", "stopped_early", "stopped", "failed")


def registered(callbacks: dict[str, list], kinds: type | tuple[type, ...]):
    """Return the first object of type ``kinds`` whose bound methods are among ``callbacks`` (None if none is)."""
    owners = (getattr(fn, "__self__", None) for fns in callbacks.values() for fn in fns)
    return next((owner for owner in owners if isinstance(owner, kinds)), None)


class RunState(Callback):
    """Where a run stands; ``snapshot()`` may be called from any thread while Ultralytics' events update it."""

    def __init__(self):
        self._lock = threading.Lock()
        self.state, self.reason = "idle", None
        self.stop_reason: str | None = None
        self.started: float | None = None
        self.elapsed = 0.0
        self.epoch = self.epochs = self.batch = self.batches = 0  # epoch: the current or last one, 1-based
        self.done = 0  # epochs completed (closed), a resumed run's earlier ones included
        self.best_fitness: float | None = None
        self.best_epoch: int | None = None
        self.last_metrics: dict[str, Any] = {}
        self.final_metrics: dict[str, Any] | None = None  # Ultralytics' final evaluation of best.pt
        self.exception: BaseException | None = None  # the exception that ended the run
        self.in_epoch = self.validated = False  # in_epoch: False outside the loop, e.g. in the final evaluation
        self.closed: int | None = None  # trainer.epoch of the last epoch closed
        self.epoch_start = self.val_start = self.train_time = self.val_time = 0.0
        self.epoch_times: list[float] = []

    @classmethod
    def of(cls, target) -> RunState:
        """Return the RunState registered on ``target`` (a trainer or a ``YOLO`` model), registering one if none is."""
        state = registered(getattr(target, "callbacks", {}), cls)
        if state is None:
            state = cls()
            for event, fn in state.callbacks.items():
                target.add_callback(event, fn)
        return state

    # ------------------------------------------------------------------------------------------- state machine
    def start(self) -> None:
        """Enter ``running``, or ``stopping`` when a stop was asked for before the start; no-op once under way."""
        with self._lock:
            if self.state in {"running", "stopping"}:
                return
            if self.started is None:
                self.started = time.perf_counter()
            self.state = "running" if self.stop_reason is None else "stopping"
            self.reason, self.exception = self.stop_reason or self.reason, None

    def request_stop(self, reason: str = "stop requested") -> bool:
        """Ask the run to stop at the next safe point; False when a stop was already requested (its reason is kept)."""
        with self._lock:
            if self.stop_reason is not None:
                return False
            self.stop_reason = reason
            if self.state == "running":
                self.state, self.reason = "stopping", reason
            return True

    def finish(self, trainer) -> tuple[str, str | None]:
        """Decide how a run that ended without an exception ended, once; return the outcome and why.

        ``stopped`` on a stop request, else ``completed`` when the planned epochs ran, else ``stopped_early``; the
        reason is the stop request's or the early stopper's.
        """
        with self._lock:
            if self.state not in OUTCOMES:
                if self.stop_reason is not None:
                    self._end("stopped", self.stop_reason)
                else:
                    done = trainer.epoch + 1 >= trainer.epochs
                    reason = getattr(getattr(trainer, "stopper", None), "stop_reason", None)
                    self._end("completed" if done else "stopped_early", reason)
            return self.state, self.reason

    def fail(self, exc: BaseException) -> None:
        """End ``failed`` because of ``exc``, or ``stopped`` when it is a second Ctrl-C while stopping.

        The reason is the exception's name and message, without the terminal colours Ultralytics puts in some.
        """
        with self._lock:
            forced = isinstance(exc, KeyboardInterrupt) and self.stop_reason is not None
            self.exception = exc
            self._end("stopped" if forced else "failed", remove_colorstr(f"{type(exc).__name__}: {exc}"))

    def _end(self, outcome: str, reason: str | None) -> None:
        if self.started is not None:
            self.elapsed = time.perf_counter() - self.started
        self.state, self.reason = outcome, reason

    def snapshot(self) -> dict[str, Any]:
        """Return a copy of the status, with elapsed time and ETA computed now."""
        with self._lock:
            active = self.state in {"running", "stopping"} and self.started is not None
            ended = self.state in OUTCOMES and self.started is not None
            return {
                "state": self.state,
                "epoch": self.epoch,
                "epochs": self.epochs,
                "batch": self.batch,
                "batches": self.batches,
                "best_fitness": self.best_fitness,
                "best_epoch": self.best_epoch,
                "last_metrics": dict(self.last_metrics),
                "elapsed": time.perf_counter() - self.started if active else self.elapsed,
                "eta": self.eta() if active else (0.0 if ended else None),
                "reason": self.reason,
            }

    def eta(self) -> float | None:
        """Return the seconds left (lock held), from this session's mean epoch time.

        The epochs still to run count whole, the current one by the part of its training batches not done yet.
        """
        if not self.epoch_times:
            return None
        left = self.epochs - self.epoch
        if self.in_epoch:
            left += 1 - (self.batch / self.batches if self.batches else 0.0)
        return max(sum(self.epoch_times) / len(self.epoch_times) * left, 0.0)

    def timing(self) -> dict[str, float | None]:
        """Return the last closed epoch's times and the ETA after it, for its record."""
        with self._lock:
            return {
                "epoch_time": self.epoch_times[-1] if self.epoch_times else None,
                "train_time": self.train_time,
                "val_time": self.val_time if self.validated else None,
                "eta": self.eta(),
            }

    # -------------------------------------------------------------------------------------- Ultralytics events
    def on_pretrain_routine_end(self, trainer) -> None:
        """Count the epochs a resumed run had completed (Ultralytics has just read them from the checkpoint)."""
        self.done = trainer.start_epoch

    def on_train_start(self, trainer) -> None:
        """Start the run of a stock trainer (``SmartCashTrainer.train()`` starts it before the setup)."""
        self.start()

    def on_train_epoch_start(self, trainer) -> None:
        """Open an epoch: its number, the total and its batch count."""
        with self._lock:
            self.in_epoch, self.validated = True, False
            self.epoch_start, self.val_time = time.perf_counter(), 0.0
            self.epoch, self.epochs, self.batch = trainer.epoch + 1, trainer.epochs, 0
            self.batches = len(trainer.train_loader)
        if trainer.device.type == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats(trainer.device)  # per-epoch peak in the record

    def on_train_batch_end(self, trainer) -> None:
        with self._lock:
            self.batch += 1

    def on_train_epoch_end(self, trainer) -> None:
        self.train_time = time.perf_counter() - self.epoch_start

    def on_val_start(self, validator) -> None:
        self.val_start = time.perf_counter()

    def on_val_end(self, validator) -> None:
        """Stop timing validation; within an epoch this marks it as validated."""
        self.val_time += time.perf_counter() - self.val_start
        self.validated = self.validated or self.in_epoch

    def on_fit_epoch_end(self, trainer) -> None:
        """Close the epoch; a requested stop takes effect now that it ran whole (DDP: rank 0 decides, broadcast)."""
        if self.stop_reason is not None and is_main_process():
            trainer.stop = True
        self.end_epoch(trainer)

    def end_epoch(self, trainer) -> bool:
        """Close the epoch at ``on_fit_epoch_end``, for whichever handler asks first; False for the final evaluation.

        Ultralytics' ``final_eval`` validates best.pt after the loop and reports it with a second ``on_fit_epoch_end``
        (outside any epoch, ``trainer.epoch`` one past the last): its figures become :attr:`final_metrics`.
        """
        with self._lock:
            if self.in_epoch:
                self._close(trainer, trainer.epoch_time or time.perf_counter() - self.epoch_start)
            elif self.closed != trainer.epoch:
                self.final_metrics = clean_metrics(trainer.metrics)
            return self.closed == trainer.epoch

    def _close(self, trainer, epoch_time: float) -> None:
        self.in_epoch, self.closed, self.done = False, trainer.epoch, trainer.epoch + 1
        self.epoch_times.append(float(epoch_time))
        self.epochs = trainer.epochs  # time= mode re-estimates it every epoch
        self.last_metrics = clean_metrics(trainer.metrics)
        if trainer.fitness is not None and trainer.best_fitness == trainer.fitness:
            self.best_fitness, self.best_epoch = clean(trainer.fitness), trainer.epoch + 1

    def on_train_end(self, trainer) -> None:
        """Decide the outcome (rank 0; ``SmartCashTrainer.train()`` decides it on the other ranks)."""
        self.finish(trainer)

    def teardown(self, trainer) -> None:
        """End a run an exception is ending: ``failed``, or ``stopped`` (forced); the others' teardown reads it.

        Ultralytics runs ``teardown`` in the ``finally`` of ``BaseTrainer.train``, the one place a callback sees the
        exception in flight (``sys.exc_info()``). An epoch whose row Ultralytics already appended to results.csv is
        closed first (the exception came while it saved its checkpoints or reported it), so that the metric files and
        events that follow record it too.
        """
        exc = sys.exc_info()[1]
        if exc is None or self.state in OUTCOMES:
            return
        with self._lock:
            if self.in_epoch and trainer.epoch + 1 in results_epochs(getattr(trainer, "csv", None)):
                self._close(trainer, time.perf_counter() - self.epoch_start)
        self.fail(exc)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the lock (DDP launch scripts pickle the trainer's callbacks)."""
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
