"""How the plugin plugs into Ultralytics: the routing of SmartCash models, and every internal it relies on.

Ultralytics reads no plugin entry points, and the ``yolo`` command always builds ``YOLO(model)``, which picks its
model, trainer, validator and predictor classes from ``task_map``. :func:`install` wraps that property so that a
model whose YAML has a ``smartcash:`` section gets the SmartCash classes; every other model, stock runs included,
gets exactly the stock ones. It runs from the interpreter-start hook (``_startup.py``) and on first use of a public
name of the package; ``SMARTCASH_ULTRA_DISABLE=1`` turns both off.

Everything else rides on Ultralytics' public seams (subclasses, callbacks, arguments), except these places, where
the plugin reaches into Ultralytics internals. Each has a canary in ``tests/test_patch_points.py`` (unless named)
that fails when an Ultralytics upgrade moves it:

1. ``YOLO.task_map`` is wrapped (here), read by ``Model._smart_load`` after ``Model._new`` set ``cfg``.
2. ``ultralytics.nn.tasks.TimmBackbone`` is injected (``nn/backbone.register_modules``): ``parse_model`` resolves
   layer names from its module's globals.
3. ``ultralytics.engine.trainer.check_amp`` is swapped for an offline check during ``SmartCashTrainer._setup_train``
   (``engine/precision.offline_check_amp``; also ``tests/test_precision.py``).
4. The trainer's ``wdir`` becomes an ``AtomicPath`` so ``BaseTrainer.save_model``'s ``last/best.write_bytes`` are
   atomic, and ``ultralytics.engine.trainer.strip_optimizer`` is swapped during ``final_eval`` so that ``last.pt``
   is never rewritten and ``best.pt`` is stripped into a temp file and renamed (``engine/trainer.keep_last_whole``).
5. ``trainer.stopper`` is replaced by the adaptive early stopping, which Ultralytics calls per validated epoch and
   saves in checkpoints (``callbacks/early_stopping.py``).
6. ``BaseDataset.npy_files``, Ultralytics' ``cache=disk`` paths, point into ``.smartcash_cache`` instead of at the
   user's arrays, each named after its source's fingerprint (``data/dataset.py``).
7. ``SmartCashDataset.get_labels`` replaces ``YOLODataset.get_labels`` whole: it is the one caller of the method
   that unpickles Ultralytics' ``labels.cache``, so that file is never loaded (``data/dataset.py``, whose own label
   cache is ``data/label_cache.py``).
8. AP75 is column 5 of ``Metric.all_ap`` (IoU thresholds 0.50:0.05:0.95; ``engine/validator.py``).
9. ``SmartCashTrainer._setup_scheduler`` overrides the private method Ultralytics calls to build the LR schedule,
   also after each epoch in ``time=`` mode (``engine/trainer.py``).
10. Ultralytics' DDP launcher rebuilds the trainer class as ``cls(cfg=..., overrides=..., _callbacks=...)`` in each
    worker (``tests/test_ddp.py``).
11. ``YOLO.train`` is wrapped (here): ``Model.train`` turns ``resume=True`` with a checkpoint it cannot resume into a
    new run on its default dataset; for a SmartCash model that is an error naming the checkpoint instead.
12. ``SmartCashTrainer.resume_training`` extends the method ``_setup_train`` calls with the checkpoint before the
    first epoch, to drop the rows of ``results.csv`` (``trainer.csv``, which ``save_metrics`` appends to) after the
    checkpoint's epoch (``engine/trainer.py``); the run state reads it to record an epoch whose row was written
    when an exception ended the run (``callbacks/run_state.py``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from smartcash_ultra._startup import enabled


def install(yolo_class: type | None = None) -> None:
    """Patch ``YOLO.task_map`` (idempotent); does nothing when ``SMARTCASH_ULTRA_DISABLE`` is set."""
    if not enabled():
        return
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
    yolo_class.train = refuse_unresumable(yolo_class.train)


def refuse_unresumable(stock_train):
    """Wrap ``Model.train`` so that ``resume=True`` on a SmartCash model it cannot resume is an error naming it.

    Ultralytics turns such a resume (``yolo train resume model=best.pt``: a stripped checkpoint, a finished run, a
    YAML) into a new run with its default dataset, which it then downloads.
    """

    @functools.wraps(stock_train)
    def train(self, trainer=None, **kwargs):
        if kwargs.get("resume") is True and is_smartcash_model(self):
            from smartcash_ultra.engine.trainer import resumable

            if not self.ckpt_path:
                raise ValueError(f"{self.cfg}: resume continues a run from its weights/last.pt, not from a model YAML")
            resumable(Path(self.ckpt_path))
        return stock_train(self, trainer, **kwargs)

    return train


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
