"""Interpreter-start hook, run by ``smartcash_ultra.pth``: lets ``yolo train cfg=...`` use SmartCash classes.

It only installs an import hook (no torch or Ultralytics import at start-up): when Ultralytics defines its ``YOLO``
class, :func:`smartcash_ultra.integration.install` patches it. Set ``SMARTCASH_ULTRA_DISABLE=1`` to switch it off.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

TARGET = "ultralytics.models.yolo.model"
DISABLE_ENV = "SMARTCASH_ULTRA_DISABLE"


class _PatchingLoader(importlib.abc.Loader):
    """Wraps the target's loader to call ``install`` right after the module has executed."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        from smartcash_ultra.integration import install

        install(module.YOLO)

    def __getattr__(self, name):  # get_source, is_package, ... of the real loader
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds only :data:`TARGET`, once, and hands it over with a patching loader."""

    def find_spec(self, name, path=None, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)
        return spec


def enabled() -> bool:
    """Return False when the user switched the hook off with ``SMARTCASH_ULTRA_DISABLE``."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}


if enabled() and TARGET not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _Finder())
