"""Adaptive early stopping: Ultralytics' fixed-patience stopper, replaced by one that explains itself and adapts.

The rule, applied at every validated epoch (epochs without validation are not counted):

- The monitored value improves when it beats the best so far by more than ``min_delta`` (``mode`` max or min).
- ``wait`` counts validated epochs since the best one; the run stops when ``wait`` reaches the current patience.
  While a max-mode metric is still 0 (nothing detected yet, as in the first epochs from scratch) nothing is counted,
  as in Ultralytics' own stopper.
- ``improvement_rate`` is the best value's gain per epoch over the last ``window`` validated epochs.
- Adaptive patience: at each new best, patience grows by one epoch (up to ``max_patience``) if the improvement rate
  is at least ``min_rate`` (default ``min_delta``), and shrinks by one (down to the configured ``patience``)
  otherwise. So a run still climbing fast survives a plateau; a run that only creeps up gets the base patience.

The state is the list of ``(epoch, value)`` observations; everything else is derived by replaying it. It is written
to ``early_stopping.json`` in the run dir at each validated epoch, before Ultralytics writes that epoch's checkpoint;
a resume replays the observations up to the checkpoint's epoch, so it decides exactly as the run would have, also
under a changed ``patience``. (results.csv cannot serve: it rounds to 6 digits, has no ``fitness`` column and repeats
the last validation on epochs that do not validate.)

Seam used: the trainer's ``stopper`` slot, which Ultralytics calls as ``stopper(epoch, fitness)`` on rank 0 after
validation and before saving checkpoints, and whose answer stops the run (``self.stop |= self.stopper(...)``,
broadcast to every DDP rank); also ``possible_stop``, which makes Ultralytics validate an epoch that may stop the run.
Canary: ``tests/test_callbacks_integration.py::test_early_stopping_stops_a_real_run_and_says_why``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ultralytics.utils import LOGGER, colorstr

from smartcash_ultra.callbacks.run_state import RunState
from smartcash_ultra.utils.files import write_atomic
from smartcash_ultra.utils.settings import is_main_process

STATE_NAME = "early_stopping.json"
"""The observations so far, in the run dir."""
STATE_ATTR, STATE_KEY = "smartcash_state", "early_stopping"
"""Where checkpoints written before the state file carry the state: an attribute of their EMA model."""
METRIC_ALIASES = {
    "mAP50": "metrics/mAP50(B)",
    "mAP75": "metrics/mAP75(B)",
    "mAP50-95": "metrics/mAP50-95(B)",
    "precision": "metrics/precision(B)",
    "recall": "metrics/recall(B)",
}
"""Short monitor names; ``fitness`` (Ultralytics' best.pt criterion) and ``val_loss`` (sum of validation losses) are
computed, and any exact key of ``trainer.metrics`` (``val/box_loss``, ``AP50(B)/001``...) works too."""
PREFIX = colorstr("EarlyStopping: ")


class AdaptiveEarlyStopping:
    """Stop a run whose monitored metric stopped improving; patience adapts to the improvement rate (see module)."""

    def __init__(
        self,
        patience: int | None = 15,
        min_delta: float = 0.001,
        monitor: str = "fitness",
        mode: str = "auto",
        adaptive: bool = True,
        max_patience: int | None = None,
        min_rate: float | None = None,
        window: int = 5,
    ):
        """Configure; ``patience`` 0 or None never stops (as in Ultralytics); ``max_patience`` defaults to 2x."""
        if mode not in {"auto", "max", "min"}:
            raise ValueError(f"early_stopping mode must be 'max', 'min' or 'auto', not {mode!r}")
        self.base_patience = int(patience) if patience else 0
        self.min_delta = float(min_delta)
        self.monitor = str(monitor)
        self.mode = ("min" if "loss" in self.monitor else "max") if mode == "auto" else mode
        self.adaptive = bool(adaptive)
        self.max_patience = max(int(max_patience or 2 * self.base_patience), self.base_patience)
        self.min_rate = self.min_delta if min_rate is None else float(min_rate)
        self.window = max(int(window), 1)
        self.reset()
        self._trainer = self._run = None  # the trainer and its RunState, set by install(); never pickled
        self.path: Path | None = None  # the state file, set by install()

    # ------------------------------------------------------------------------------------------------ pure rule
    def reset(self) -> None:
        self.history: list[tuple[int, float]] = []
        self.best_value: float | None = None
        self.best_epoch = 0
        self.wait = 0
        self.patience = self.base_patience
        self.improvement_rate = 0.0
        self.stop_reason: str | None = None
        self.restarts: list[int] = []  # epochs after which waiting started over (extended runs)
        self._best_trail: list[float] = []  # best score after each observation, for the rate window

    def update(self, epoch: int, value: float) -> bool:
        """Record the monitored ``value`` of validated ``epoch`` (1-based); return True when the run should stop."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"early stopping got a non-finite {self.monitor} ({value}) at epoch {epoch}")
        if self.history and epoch <= self.history[-1][0]:
            raise ValueError(f"early stopping got epoch {epoch} after epoch {self.history[-1][0]}")
        self.history.append((int(epoch), value))
        score = value if self.mode == "max" else -value
        best = None if self.best_value is None else (self.best_value if self.mode == "max" else -self.best_value)
        improved = best is None or score > best + self.min_delta
        if improved or (self.mode == "max" and best == 0):  # nothing detected yet: not a stall (as Ultralytics)
            self.best_value, self.best_epoch, self.wait = value, int(epoch), 0
            best = score
        else:
            self.wait += 1
        self._best_trail.append(best)
        self.improvement_rate = self._rate()
        if improved and self.adaptive and len(self.history) > 1:
            if self.improvement_rate >= self.min_rate:
                self.patience = min(self.patience + 1, self.max_patience)
            else:
                self.patience = max(self.patience - 1, self.base_patience)
        if self.base_patience and self.wait >= self.patience:
            self.stop_reason = (
                f"no improvement in {self.monitor} for {self.wait} validated epochs (patience {self.patience}); "
                f"best {self.best_value:.5g} at epoch {self.best_epoch}"
            )
        return self.should_stop

    def restart(self) -> None:
        """Start waiting over after the last observation (the best so far is kept): a run extended by the user."""
        if self.history:
            self.restarts.append(self.history[-1][0])
        self.wait, self.stop_reason = 0, None

    def _rate(self) -> float:
        """Gain per epoch of the best score over the last ``window`` observations (0 before a second one)."""
        if len(self.history) < 2:
            return 0.0
        k = max(len(self.history) - 1 - self.window, 0)
        epochs = self.history[-1][0] - self.history[k][0]
        return (self._best_trail[-1] - self._best_trail[k]) / epochs

    @property
    def should_stop(self) -> bool:
        return self.stop_reason is not None

    @property
    def possible_stop(self) -> bool:
        """True when the next validated epoch without improvement stops the run (Ultralytics then validates)."""
        return bool(self.base_patience) and self.wait >= self.patience - 1

    @property
    def best_fitness(self) -> float:
        """Best monitored value (the attribute name Ultralytics' checkpoints and loggers read)."""
        return 0.0 if self.best_value is None else self.best_value

    def state_dict(self) -> dict[str, Any]:
        """Return the observations (everything else derives from them) and the monitor they were made under."""
        return {
            "history": [list(h) for h in self.history],
            "restarts": list(self.restarts),
            "monitor": self.monitor,
            "mode": self.mode,
        }

    def load_state_dict(self, state: dict[str, Any], up_to_epoch: int | None = None) -> None:
        """Restore by replaying the saved observations (those after ``up_to_epoch`` are dropped)."""
        if state.get("monitor", self.monitor) != self.monitor or state.get("mode", self.mode) != self.mode:
            LOGGER.warning(
                f"{PREFIX}checkpoint state monitors {state.get('monitor')} ({state.get('mode')}), this run monitors "
                f"{self.monitor} ({self.mode}): starting early stopping afresh"
            )
            self.reset()
            return
        self.reset()
        restarts = set(state.get("restarts", []))
        for epoch, value in state.get("history", []):
            if up_to_epoch is None or epoch <= up_to_epoch:
                self.update(epoch, value)
                if epoch in restarts:
                    self.restart()

    def status_line(self) -> str:
        """One line on where the rule stands, for the log and for UIs."""
        if self.best_value is None:
            return f"no validated epoch yet (patience {self.patience})"
        if self.mode == "max" and self.best_value == 0:  # update() counts no stall here, and nothing improved either
            epoch, patience = self.history[-1][0], self.patience
            return (
                f"{self.monitor} still 0 at epoch {epoch} (nothing detected yet): no epoch counts (patience {patience})"
            )
        best = f"best {self.best_value:.5g} at epoch {self.best_epoch}"
        rate = f"rate {self.improvement_rate:+.2g}/epoch"
        if self.wait:
            return f"no improvement in {self.monitor} for {self.wait}/{self.patience} epochs, {best} ({rate})"
        limit = f"patience {self.patience}" + (f"/{self.max_patience}" if self.adaptive else "")
        return f"{self.monitor} improved to {self.best_value:.5g} at epoch {self.best_epoch} ({rate}, {limit})"

    def summary(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best": self.best_value,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "patience": self.patience,
            "max_patience": self.max_patience,
            "improvement_rate": self.improvement_rate,
            "stopped": self.should_stop,
            "reason": self.stop_reason,
        }

    # ------------------------------------------------------------------------------------- Ultralytics seams
    def install(self, trainer) -> None:
        """Take the trainer's stopper slot (rank 0 only); a resume replays the run's observations to its checkpoint."""
        if not is_main_process():
            return
        check_monitor(self.monitor, trainer)
        self._trainer, self._run = trainer, RunState.of(trainer)
        self.path = Path(trainer.save_dir) / STATE_NAME
        stock = trainer.stopper
        trainer.stopper = self
        if trainer.start_epoch > 0:  # resumed
            state = saved_state(self.path) or checkpoint_state(getattr(trainer.args, "resume", None))
            if state is not None:
                self.load_state_dict(state, up_to_epoch=trainer.start_epoch)
                LOGGER.info(f"{PREFIX}restored up to the checkpoint's epoch: {self.status_line()}")
            elif self.monitor == "fitness" and getattr(stock, "best_epoch", 0):  # checkpoint of a run without us
                self.reset()
                self.update(stock.best_epoch, stock.best_fitness)
                LOGGER.info(f"{PREFIX}checkpoint has no adaptive state; starting from its best fitness")
            if getattr(trainer, "extended_from", None) and self.should_stop:
                self.restart()
                LOGGER.info(f"{PREFIX}the run is extended: waiting starts over ({self.status_line()})")
        if self.base_patience:
            limit = f"adaptive up to {self.max_patience}" if self.adaptive else "fixed"
            LOGGER.info(
                f"{PREFIX}monitoring {self.monitor} ({self.mode}), patience {self.patience} ({limit}), "
                f"min_delta {self.min_delta:g}"
            )

    def __call__(self, epoch: int, fitness: float | None) -> bool:
        """Count ``epoch`` if it validated and write the state file; return True when the run should stop.

        Ultralytics calls its stopper slot on rank 0 after validation, before the epoch's checkpoint is written.
        """
        if self._trainer is None or not self._run.validated:  # an epoch without validation counts for nothing
            return False
        value = monitored_value(self.monitor, self._trainer)
        if not math.isfinite(value):  # Ultralytics lets a NaN first epoch go on; a stopper must not end the run
            LOGGER.warning(f"{PREFIX}{self.monitor} is {value} at epoch {epoch}: not counted")
            return False
        self.update(epoch, value)
        write_atomic(self.path, json.dumps(self.state_dict(), allow_nan=False).encode())
        if self.should_stop:
            LOGGER.info(f"{PREFIX}stopping after epoch {epoch}: {self.stop_reason}.")
        elif self.base_patience:
            LOGGER.info(f"{PREFIX}{self.status_line()}")
        return self.should_stop

    def __getstate__(self) -> dict[str, Any]:
        """Pickle settings and state only (DDP launch scripts pickle callbacks), never the trainer."""
        return {**self.__dict__, "_trainer": None, "_run": None}


def monitored_value(monitor: str, trainer) -> float:
    """Read the monitored figure from a trainer that has just validated."""
    if monitor == "fitness":
        return float(trainer.fitness)
    metrics = trainer.metrics
    if monitor == "val_loss":
        return float(sum(v for k, v in metrics.items() if k.startswith("val/")))
    key = METRIC_ALIASES.get(monitor, monitor)
    if key not in metrics:
        raise KeyError(f"early stopping monitor {monitor!r}: no {key!r} in the validation metrics {sorted(metrics)}")
    return float(metrics[key])


def check_monitor(monitor: str, trainer) -> None:
    """Fail before training when the monitored figure will never exist (validation losses are named at batch 1)."""
    if monitor in {"fitness", "val_loss"} or monitor.startswith("val/"):
        return
    keys = list(getattr(getattr(trainer.validator, "metrics", None), "keys", None) or trainer.metrics or [])
    key = METRIC_ALIASES.get(monitor, monitor)
    if key not in keys:
        raise ValueError(
            f"early stopping monitor {monitor!r} is not reported by {type(trainer.validator).__name__}; choose "
            f"fitness, val_loss, a val/ loss, {', '.join(k for k, v in METRIC_ALIASES.items() if v in keys)} or "
            f"one of {keys}"
        )


def saved_state(path: Path) -> dict[str, Any] | None:
    """Return the state written to ``path`` (None when there is none or it is unreadable)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        LOGGER.warning(f"{PREFIX}{path} is unreadable ({e}); early stopping starts afresh")
        return None


def checkpoint_state(path: str | None) -> dict[str, Any] | None:
    """Return the state carried by a checkpoint written before the state file, at ``path`` (None if it has none)."""
    if not path or not isinstance(path, str):
        return None
    from smartcash_ultra.nn.safe_load import read_checkpoint

    ckpt = read_checkpoint(path)
    model = ckpt.get("ema") or ckpt.get("model")
    return (getattr(model, STATE_ATTR, None) or {}).get(STATE_KEY)
