"""Graceful stop on signals: SIGINT or SIGTERM become a stop request, which ends the run at the next safe point.

The request and its safe points (the end of the batch, under DDP of the epoch) are the run state's
(:class:`smartcash_ultra.callbacks.run_state.RunState`). A second SIGINT stops at once (``KeyboardInterrupt``).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ultralytics.utils import LOGGER

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
