"""``SmartCashTrainer``: Ultralytics' ``DetectionTrainer`` with the SmartCash model, dataset and validator.

Only what differs is here; the loop, loss, assigner, augmentation, EMA, schedulers, plots and loggers are
Ultralytics'. The ``(cfg, overrides, _callbacks)`` signature is kept, as Ultralytics' DDP launcher rebuilds the
trainer with it in every worker.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import copy
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, RANK, YAML
from ultralytics.utils.torch_utils import unwrap_model

from smartcash_ultra.callbacks import add_smartcash_callbacks, has_smartcash_callbacks
from smartcash_ultra.dataset import build_smartcash_dataset
from smartcash_ultra.files import write_atomic
from smartcash_ultra.model import SECTION, SmartCashDetectionModel
from smartcash_ultra.precision import offline_check_amp, settle
from smartcash_ultra.validator import SmartCashValidator


@dataclass(frozen=True)
class TrainResult:
    """What ``SmartCashTrainer.train()`` returns: final validation metrics of the best weights and where things are."""

    metrics: dict[str, float]
    best: Path | None
    last: Path | None
    save_dir: Path


class SmartCashTrainer(DetectionTrainer):
    """Train a SmartCash detector: ``SmartCashTrainer("cfg/smartcash_effb4.yaml", overrides={"epochs": 3}).train()``.

    ``cfg`` is a training cfg YAML path or dict (Ultralytics keys, as for ``yolo train cfg=...``); ``overrides`` win
    over it. The model must be a SmartCash model YAML (any Ultralytics model YAML with a ``smartcash:`` section).
    """

    def __init__(
        self,
        cfg: str | Path | dict | SimpleNamespace = DEFAULT_CFG,
        overrides: dict[str, Any] | None = None,
        _callbacks: dict | None = None,
        *,
        progress_callback: Callable[[str, int, int, str], Any] | None = None,
        metrics_callback: Callable[[dict], Any] | None = None,
        error_callback: Callable[[BaseException, dict], Any] | None = None,
        completion_callback: Callable[[dict], Any] | None = None,
    ):
        """Merge the cfg YAML/dict under ``overrides``, initialise the Ultralytics trainer, add the SmartCash callbacks.

        The callbacks' settings come from the model YAML's ``smartcash.callbacks`` section (see
        :mod:`smartcash_ultra.callbacks`); the UI callbacks passed here receive their events.
        """
        super().__init__(DEFAULT_CFG, {**load_train_cfg(cfg), **(overrides or {})}, _callbacks)
        self.wdir = AtomicPath(self.wdir)  # every checkpoint write_bytes() below goes through a temp file + rename
        self.last, self.best = self.wdir / "last.pt", self.wdir / "best.pt"
        ui = (progress_callback, metrics_callback, error_callback, completion_callback)
        if not has_smartcash_callbacks(self.callbacks):  # a DDP worker or YOLO.add_callback user brought them
            add_smartcash_callbacks(
                self,
                progress_callback=progress_callback,
                metrics_callback=metrics_callback,
                error_callback=error_callback,
                completion_callback=completion_callback,
            )
        elif any(ui):
            raise ValueError("these callbacks already carry SmartCash callbacks: pass the UI callbacks to that call")

    def _setup_train(self):
        """Settle the precision offline (see :mod:`smartcash_ultra.precision`), then run Ultralytics' setup.

        Ultralytics' AMP check would download a reference model: the SmartCash model is checked instead.
        """
        settle(self.args, self.device)
        with offline_check_amp():
            super()._setup_train()

    def get_model(self, cfg: str | dict | None = None, weights=None, verbose: bool = True) -> SmartCashDetectionModel:
        """Build the SmartCash model for the data's classes, loading ``weights`` when given."""
        model = SmartCashDetectionModel(
            cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose and RANK == -1
        )
        model = self.set_model_names_for_load(model)
        if weights:
            model.load(weights)
        return model

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None):
        """Build a :class:`SmartCashDataset` (training, and the validation loader during training)."""
        gs = max(int(unwrap_model(self.model).stride.max()), 32)
        return build_smartcash_dataset(self.args, img_path, batch, self.data, mode=mode, rect=mode == "val", stride=gs)

    def get_validator(self) -> SmartCashValidator:
        """Return the SmartCash validator; class names are set now so per-class metric columns exist from epoch 1."""
        validator = SmartCashValidator(
            self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks
        )
        validator.metrics.names = self.data["names"]
        return validator

    def train(self) -> TrainResult:
        """Train, then return the final metrics (of best.pt) and the weight paths."""
        super().train()
        metrics = dict(self.metrics or {})
        if not metrics and self.best.exists():  # DDP: the workers validated, the checkpoint carries the figures
            from ultralytics.utils.patches import torch_load

            metrics = dict(torch_load(self.best, map_location="cpu").get("train_metrics") or {})
        return TrainResult(
            metrics=metrics,
            best=Path(self.best) if self.best.exists() else None,
            last=Path(self.last) if self.last.exists() else None,
            save_dir=Path(self.save_dir),
        )


def load_train_cfg(cfg: str | Path | dict | SimpleNamespace | None) -> dict[str, Any]:
    """Return a training cfg as a dict of overrides; a YAML path is also recorded under Ultralytics' ``cfg`` key."""
    if cfg is None or cfg is DEFAULT_CFG:
        return {}
    if isinstance(cfg, SimpleNamespace):
        return dict(vars(cfg))
    source, loaded = "training cfg", cfg
    if not isinstance(cfg, dict):
        source = path = Path(cfg)
        if not path.is_file():
            raise FileNotFoundError(f"training cfg {path} does not exist")
        loaded = {**YAML.load(path), "cfg": str(path)}  # YAML.load names the file if it is no mapping
    if SECTION in loaded:
        raise ValueError(
            f"{source}: '{SECTION}:' settings belong in the model YAML (Ultralytics rejects unknown keys in a "
            "training cfg; the model YAML's section is saved in checkpoints and survives resume and DDP)"
        )
    return dict(loaded)


class AtomicPath(type(Path())):
    """A path whose ``write_bytes`` writes a temp file beside it and renames it into place.

    A run killed mid-save then leaves the previous checkpoint intact instead of a truncated one.
    """

    def write_bytes(self, data: bytes) -> int:
        """Write ``data`` with :func:`smartcash_ultra.files.write_atomic`; on failure the old file stays."""
        return write_atomic(self, data)
