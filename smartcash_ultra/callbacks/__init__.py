"""SmartCash training callbacks: adaptive early stopping, metric export and progress reporting, and the run state.

Each is a small :class:`Callback` object whose methods named after Ultralytics' events form its ``callbacks`` dict
(event -> handler, in Ultralytics' callback style), registered with ``add_callback``. They are objects rather than
module functions because each run needs its own state (observations, history, throttle clock); they pickle without
the trainer, so Ultralytics' DDP launcher carries them into every worker, where they act on rank 0 only. The
:class:`RunState` they share (epoch clock, ETA, outcome, stop request) is registered first: it decides, they read.

``SmartCashTrainer`` registers them itself. On a stock Ultralytics model it takes one call::

    model = YOLO("yolov8n.yaml")
    add_smartcash_callbacks(model, progress_callback=print)
    model.train(data="coco8.yaml", epochs=3)
"""

from __future__ import annotations

from typing import Any

from smartcash_ultra.callbacks.base import Callback, callback_settings, explicit_settings
from smartcash_ultra.callbacks.early_stopping import AdaptiveEarlyStopping
from smartcash_ultra.callbacks.metrics_export import MetricsExporter
from smartcash_ultra.callbacks.progress import ProgressReporter, UICallbacks
from smartcash_ultra.callbacks.run_state import RunState, registered

__all__ = [
    "AdaptiveEarlyStopping",
    "Callback",
    "MetricsExporter",
    "ProgressReporter",
    "RunState",
    "UICallbacks",
    "add_smartcash_callbacks",
    "has_smartcash_callbacks",
    "registered",
]


def add_smartcash_callbacks(
    target,
    *,
    early_stopping: bool | dict[str, Any] | None = None,
    metrics_export: bool | None = None,
    events_file: bool | None = None,
    min_interval: float | None = None,
    **ui,
):
    """Register the three SmartCash callbacks and the run state on a ``YOLO`` model or a trainer (``add_callback``).

    ``ui`` takes the :class:`UICallbacks` by name (``progress_callback=``...). A setting given here wins over the
    model YAML's ``smartcash.callbacks`` section, which wins over the defaults (all on). ``early_stopping`` takes
    True, False or a mapping of the names in :data:`smartcash_ultra.utils.settings.DEFAULTS`; the base patience is
    Ultralytics' ``patience`` argument. Returns ``target``.

    Raises:
        ValueError: when ``target`` already has them (they would report twice), or a setting is unknown.
        TypeError: naming an unknown UI callback keyword.
    """
    if has_smartcash_callbacks(getattr(target, "callbacks", {})):
        raise ValueError(f"{type(target).__name__} already has the SmartCash callbacks")
    handlers = (EarlyStoppingInstaller(early_stopping), MetricsExporter(metrics_export))
    reporter = ProgressReporter(events_file, min_interval, **ui)
    RunState.of(target)  # first: at each event the others see its update (epoch closed, requested stop set)
    for handler in (*handlers, reporter):
        for event, fn in handler.callbacks.items():
            target.add_callback(event, fn)
    return target


def has_smartcash_callbacks(callbacks: dict[str, list]) -> bool:
    """Return True when a callbacks dict already holds SmartCash handlers (e.g. carried into a DDP worker)."""
    return registered(callbacks, (EarlyStoppingInstaller, MetricsExporter, ProgressReporter)) is not None


class EarlyStoppingInstaller(Callback):
    """Builds the :class:`AdaptiveEarlyStopping` once the run's settings and ``patience`` are known, and installs it.

    Off (``enabled: false``) leaves Ultralytics' own fixed-patience stopper in place.
    """

    def __init__(self, settings: bool | dict[str, Any] | None = None):
        """Take ``settings`` None: from the model YAML; False: off; a mapping: these settings over the model YAML's."""
        self.explicit = explicit_settings("early_stopping", settings, "early_stopping")

    def on_pretrain_routine_end(self, trainer) -> None:
        settings = callback_settings("early_stopping", self.explicit, trainer)
        if settings["enabled"]:
            kwargs = {k: v for k, v in settings.items() if k != "enabled"}
            AdaptiveEarlyStopping(patience=trainer.args.patience, **kwargs).install(trainer)
