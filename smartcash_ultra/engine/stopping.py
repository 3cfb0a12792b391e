"""Graceful stop on signals: SIGINT or SIGTERM become a stop request, which ends the run at the next safe point.

The request and its safe points (the end of the batch, under DDP of the epoch) are the run state's
(:class:`smartcash_ultra.callbacks.run_state.RunState`). A second SIGINT stops at once, without saving.

A run a signal ended must not look finished to whoever started it: ``SmartCashTrainer.train()`` raises
:class:`StoppedBySignal` once everything is saved (:class:`Interrupted` for SIGINT), so ``yolo train`` exits with
128 + the signal number, 130 and 143, the status a shell reports for a process that signal ended. It is a
``SystemExit``, so the interpreter exits with that status and prints no traceback; :class:`Interrupted` is also a
``KeyboardInterrupt``, what Python code (and a notebook's stop button) expects of Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ultralytics.utils import LOGGER

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StoppedBySignal(SystemExit):
    """A run ended by a signal; ``code`` is 128 + the signal number, ``forced`` says whether it stopped unsaved."""

    def __init__(self, signum: int, message: str, forced: bool = False):
        """Take the signal, the message (``str()`` of the exception) and whether the stop skipped saving."""
        super().__init__(128 + signum)
        self.signum, self.message, self.forced = signum, message, forced
        self.result = None  # SmartCashTrainer.train() sets what it would have returned (not after a forced stop)

    def __str__(self) -> str:
        """Return the message (a ``SystemExit`` would say its exit status)."""
        return self.message


class Interrupted(StoppedBySignal, KeyboardInterrupt):
    """A run ended by SIGINT (Ctrl-C): a :class:`StoppedBySignal` that ``except KeyboardInterrupt`` also catches."""


def stopped_by(signum: int, message: str, forced: bool = False) -> StoppedBySignal:
    """Return the exception that ends a run stopped by ``signum``: :class:`Interrupted` for SIGINT."""
    kind = Interrupted if signum == signal.SIGINT else StoppedBySignal
    return kind(signum, message, forced)


@dataclass
class Signals:
    """What :func:`stop_on_signals` received: the signal whose stop request was granted, if any."""

    signum: int | None = None


@contextmanager
def stop_on_signals(request: Callable[[str], bool]) -> Iterator[Signals]:
    """Turn SIGINT and SIGTERM into ``request(reason)`` calls while the block runs (main thread only).

    ``request`` returns False when a stop was already requested: a second SIGINT then raises :class:`Interrupted`
    (forced), a second SIGTERM is ignored. The :class:`Signals` yielded records the signal whose request was granted.
    The previous handlers are restored after. Data-loader workers forked meanwhile inherit the handler and ignore
    the signals, so a Ctrl-C (sent to the whole process group) does not kill them under the running epoch.
    """
    received = Signals()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    owner = os.getpid()

    def handle(signum: int, frame) -> None:
        if os.getpid() != owner:
            return  # a forked data-loader worker: the training process decides
        name = signal.Signals(signum).name
        if not request(f"{name} received"):
            if signum == signal.SIGINT:
                message = f"second {name}: stopping now, without saving"
                LOGGER.warning(f"{message}; weights/last.pt holds the last epoch saved")
                raise stopped_by(signum, message, forced=True)
            return
        received.signum = signum
        LOGGER.warning(
            f"{name} received: stopping at the end of this epoch, once its batches have run (validation, last.pt and "
            "metric files are saved); press Ctrl-C again to stop at once, without saving it (a resume reruns it)"
        )

    previous = {s: signal.signal(s, handle) for s in STOP_SIGNALS}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
