"""The one place this plugin changes Ultralytics: ``YOLO.task_map`` routes SmartCash models to SmartCash classes.

Ultralytics reads no plugin entry points, and the ``yolo`` command always builds ``YOLO(model)``, which picks its
model, trainer, validator and predictor classes from ``task_map``. The patched property returns Ultralytics' own
map, with the ``detect`` entry swapped only for a model whose YAML has a ``smartcash:`` section; every other model,
stock runs included, gets exactly the stock classes. ``tests/test_integration.py`` fails if an Ultralytics upgrade
moves this seam.
"""

from __future__ import annotations

from typing import Any


def install(yolo_class: type | None = None) -> None:
    """Patch ``YOLO.task_map`` (idempotent). Called by the interpreter-start hook and on first use of the package."""
    if yolo_class is None:
        from ultralytics.models.yolo.model import YOLO as yolo_class
    stock = yolo_class.task_map.fget
    if getattr(stock, "smartcash", False):
        return

    def task_map(self) -> dict[str, dict[str, Any]]:
        tasks = stock(self)
        if is_smartcash_model(self):
            tasks = {**tasks, "detect": smartcash_detect_task()}
        return tasks

    task_map.smartcash, task_map.__wrapped__, task_map.__doc__ = True, stock, stock.__doc__
    yolo_class.task_map = property(task_map)


def smartcash_detect_task() -> dict[str, type]:
    """Return the SmartCash classes for the ``detect`` task."""
    from smartcash_ultra.engine.predictor import SmartCashPredictor
    from smartcash_ultra.engine.trainer import SmartCashTrainer
    from smartcash_ultra.engine.validator import SmartCashValidator
    from smartcash_ultra.nn.model import SmartCashDetectionModel

    return {
        "model": SmartCashDetectionModel,
        "trainer": SmartCashTrainer,
        "validator": SmartCashValidator,
        "predictor": SmartCashPredictor,
    }


def is_smartcash_model(yolo) -> bool:
    """Return True when a ``YOLO`` object holds (or is about to build) a SmartCash model."""
    import torch

    from smartcash_ultra.nn.model import is_smartcash_yaml

    model = getattr(yolo, "model", None)
    if isinstance(model, torch.nn.Module):
        return is_smartcash_yaml(getattr(model, "yaml", None))
    cfg = getattr(yolo, "cfg", None)  # set by Model._new before it builds the model from a YAML
    if model is None and cfg and str(cfg).lower().endswith((".yaml", ".yml")):
        from ultralytics.nn.tasks import yaml_model_load

        return is_smartcash_yaml(yaml_model_load(cfg))
    return False
