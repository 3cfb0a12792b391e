"""smartcash-ultra: train SmartCash Rupiah-banknote YOLO detectors on preprocessed ``.npy`` arrays with Ultralytics.

Public names are imported on first use, so ``import smartcash_ultra`` (which the interpreter-start hook does) stays
free of torch and Ultralytics.
"""

from __future__ import annotations

import importlib

from smartcash_ultra import _moved

__version__ = "0.1.0"

_EXPORTS = {
    "SmartCashTrainer": "smartcash_ultra.engine.trainer",
    "TrainResult": "smartcash_ultra.engine.trainer",
    "resume_training": "smartcash_ultra.engine.trainer",
    "SmartCashValidator": "smartcash_ultra.engine.validator",
    "SmartCashPredictor": "smartcash_ultra.engine.predictor",
    "SmartCashDetectionModel": "smartcash_ultra.nn.model",
    "SmartCashDataset": "smartcash_ultra.data.dataset",
    "build_dataloaders": "smartcash_ultra.data.loaders",
    "TimmBackbone": "smartcash_ultra.nn.backbone",
    "generate_sample_dataset": "smartcash_ultra.tools.sample_data",
    "convert_dataset": "smartcash_ultra.tools.convert",
    "evaluate": "smartcash_ultra.evaluation.evaluate",
}
__all__ = [*_EXPORTS, "__version__"]
_moved.install()


def __getattr__(name: str):
    """Import a public name on first use, and make sure ``YOLO`` routes SmartCash models (no-op if already done)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'smartcash_ultra' has no attribute {name!r}")
    from smartcash_ultra.integration import install

    install()
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    """List the public names too, which are imported on first use (``dir()`` and tab completion show them)."""
    return sorted({*globals(), *__all__})
