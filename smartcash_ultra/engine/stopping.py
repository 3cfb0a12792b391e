"""Graceful stop: a request from any thread, SIGINT or SIGTERM ends the run at the next safe point.

The safe point is the end of the current training batch: Ultralytics then validates, writes ``last.pt`` (and best.pt
when it improved), the metric files, runs the final evaluation and ends normally. Under DDP, where a per-batch stop
is not shared between ranks (and would hang them), the request takes effect at the end of the epoch, decided on rank
0 and broadcast by Ultralytics. A second SIGINT stops at once (``KeyboardInterrupt``).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ultralytics.utils import LOGGER

from smartcash_ultra.utils.settings import is_main_process

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A flag any thread may raise; the trainer's batch and epoch events turn it into ``trainer.stop``."""

    def __init__(self):
        """Start with no request."""
        self.reason: str | None = None

    @property
    def requested(self) -> bool:
        """Return True once a stop was asked for."""
        return self.reason is not None

    def request(self, reason: str = "stop requested") -> bool:
        """Ask the run to stop; return False when a stop was already requested (the first reason is kept)."""
        if self.reason is not None:
            return False
        self.reason = reason
        return True

    @property
    def callbacks(self) -> dict[str, Any]:
        """Ultralytics events where a requested stop takes effect, for ``add_callback``."""
        return {"on_train_batch_end": self.on_train_batch_end, "on_fit_epoch_end": self.on_fit_epoch_end}

    def on_train_batch_end(self, trainer) -> None:
        """Single process: stop after this batch."""
        if self.requested and trainer.world_size <= 1:
            trainer.stop = True

    def on_fit_epoch_end(self, trainer) -> None:
        """DDP: stop after this epoch (rank 0 decides; Ultralytics broadcasts ``trainer.stop`` right after)."""
        if self.requested and is_main_process():
            trainer.stop = True


@contextmanager
def stop_on_signals(request: Callable[[str], bool]) -> Iterator[None]:
    """Turn SIGINT and SIGTERM into ``request(reason)`` calls while the block runs (main thread only).

    ``request`` returns False when a stop was already requested: a second SIGINT then raises ``KeyboardInterrupt``.
    The previous handlers are restored after. Data-loader workers forked meanwhile inherit the handler and ignore the
    signals, so a Ctrl-C (sent to the whole process group) does not kill them under the running epoch.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handle(signum: int, frame) -> None:
        if os.getpid() != owner:
            return  # a forked data-loader worker: the training process decides
        name = signal.Signals(signum).name
        if not request(f"{name} received"):
            if signum == signal.SIGINT:
                raise KeyboardInterrupt(f"second {name}: stopping now, without saving")
            return
        LOGGER.warning(
            f"{name} received: stopping after this batch (validation, last.pt and metric files are saved); "
            "press Ctrl-C again to stop at once"
        )

    previous = {s: signal.signal(s, handle) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
