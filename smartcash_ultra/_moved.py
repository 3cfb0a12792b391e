"""Module paths from before the package was laid out in layers, kept importable as aliases of their new modules.

Checkpoints pickle class paths (``smartcash_ultra.model.SmartCashDetectionModel``), and scripts import the old
modules or run them with ``python -m``; each old path below resolves to the very module object of its new path, so
classes stay identical.
(``smartcash_ultra.nn`` needs no alias: it is now the package that exports ``TimmBackbone``.)
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "smartcash_ultra.model": "smartcash_ultra.nn.model",
    "smartcash_ultra.arrays": "smartcash_ultra.data.arrays",
    "smartcash_ultra.dataset": "smartcash_ultra.data.dataset",
    "smartcash_ultra.image_dataset": "smartcash_ultra.data.image_dataset",
    "smartcash_ultra.labels": "smartcash_ultra.data.labels",
    "smartcash_ultra.preprocess": "smartcash_ultra.data.preprocess",
    "smartcash_ultra.trainer": "smartcash_ultra.engine.trainer",
    "smartcash_ultra.validator": "smartcash_ultra.engine.validator",
    "smartcash_ultra.predictor": "smartcash_ultra.engine.predictor",
    "smartcash_ultra.schedules": "smartcash_ultra.engine.schedules",
    "smartcash_ultra.precision": "smartcash_ultra.engine.precision",
    "smartcash_ultra.stopping": "smartcash_ultra.engine.stopping",
    "smartcash_ultra.training_settings": "smartcash_ultra.utils.settings",
    "smartcash_ultra.classes": "smartcash_ultra.utils.classes",
    "smartcash_ultra.files": "smartcash_ultra.utils.files",
    "smartcash_ultra.cli": "smartcash_ultra.tools.cli",
    "smartcash_ultra.convert": "smartcash_ultra.tools.convert",
    "smartcash_ultra.dataset_report": "smartcash_ultra.tools.report",
    "smartcash_ultra.sample_data": "smartcash_ultra.tools.sample_data",
}
"""Old module path -> the module that now holds its code."""


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the old paths of :data:`MOVED` and loads each as the already-imported new module."""

    def find_spec(self, name, path=None, target=None):
        if name not in MOVED:
            return None
        origin = importlib.util.find_spec(MOVED[name]).origin  # `python -m` puts it in sys.argv[0]
        return importlib.util.spec_from_loader(name, self, origin=origin)

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        pass  # the new module ran when it was imported

    def get_code(self, name):  # `python -m smartcash_ultra.sample_data` runs the new module as __main__
        new = MOVED[name]
        return importlib.util.find_spec(new).loader.get_code(new)


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
