"""Interpreter-start hook, run by ``smartcash_ultra.pth``: lets ``yolo train cfg=...`` use SmartCash classes.

It only installs an import hook (no torch or Ultralytics import at start-up): when Ultralytics defines its ``checks``
module, :func:`smartcash_ultra.integration.install_yaml_names` lets the package's YAMLs resolve by name (``yolo``
reads ``cfg=`` before it imports ``YOLO``); when it defines its ``YOLO`` class,
:func:`smartcash_ultra.integration.install` patches it. Set ``SMARTCASH_ULTRA_DISABLE=1`` to switch it off
(``utils/switch.py``).

It also sets a ``sys.excepthook`` that prints an error of the plugin's own (``utils/errors.SmartCashError``: the
message names the file and the way out) as one line when the program is the ``yolo`` command, whose ``entrypoint``
lets every exception out (Python then exits 1); anything else keeps its traceback.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys

from smartcash_ultra.utils.switch import enabled

TARGETS = {"ultralytics.utils.checks": "install_yaml_names", "ultralytics.models.yolo.model": "install"}
"""Module -> the ``smartcash_ultra.integration`` function that patches it right after it has executed."""


class _PatchingLoader(importlib.abc.Loader):
    """Wraps the target's loader to call ``install`` right after the module has executed."""

    def __init__(self, loader, install: str):
        self.loader, self.install = loader, install

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        from smartcash_ultra import integration

        if self.install == "install":
            integration.install(module.YOLO)
        else:
            getattr(integration, self.install)(module)

    def __getattr__(self, name):  # get_source, is_package, ... of the real loader
        return getattr(self.loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds only the :data:`TARGETS`, each once, and hands them over with a patching loader; then leaves."""

    def __init__(self):
        self.pending = {name: fn for name, fn in TARGETS.items() if name not in sys.modules}

    def find_spec(self, name, path=None, target=None):
        if name not in self.pending:
            return None
        install = self.pending.pop(name)
        if not self.pending:
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader, install)
        return spec


COMMANDS = {"yolo", "ultralytics"}
"""Ultralytics' console scripts (``ultralytics.cfg:entrypoint``)."""


def _print_known_errors(stock_hook):
    def excepthook(kind, exc, tb):
        errors = sys.modules.get("smartcash_ultra.utils.errors")  # loaded wherever such an error was raised
        program = os.path.basename(sys.argv[0] if sys.argv else "").removesuffix(".exe")
        if errors is None or not isinstance(exc, errors.SmartCashError) or program not in COMMANDS:
            return stock_hook(kind, exc, tb)
        command = " ".join([program, *(a for a in sys.argv[1:2] if "=" not in a)])  # yolo train
        print(f"{command}: error: {errors.summary(exc)}", file=sys.stderr)

    excepthook.smartcash = True
    return excepthook


if enabled() and not getattr(sys.excepthook, "smartcash", False):
    sys.excepthook = _print_known_errors(sys.excepthook)

if enabled() and not any(isinstance(f, _Finder) for f in sys.meta_path):
    _finder = _Finder()
    if _finder.pending:
        sys.meta_path.insert(0, _finder)
