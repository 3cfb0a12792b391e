"""SmartCash checkpoints under Ultralytics' restricted loading (``ULTRALYTICS_SAFE_LOAD=1``).

Ultralytics' ``torch_safe_load`` decides how a checkpoint is read: by default with ``weights_only=False`` (a pickle,
which can run code), with ``ULTRALYTICS_SAFE_LOAD=1`` with ``weights_only=True`` and an allow-list of torch and
Ultralytics classes (``ultralytics.nn.tasks._SafeLoad``). Every read of the plugin goes through it
(:func:`read_checkpoint`), so the plugin reads a file exactly as ``YOLO()`` and ``yolo train resume`` do.

A SmartCash checkpoint pickles, beyond those, the plugin's two model classes and the classes of its timm backbone,
which Ultralytics' list lacks and offers no public hook for. torch offers ``torch.serialization.add_safe_globals``,
which every ``weights_only`` load honours; :func:`install` hooks the one place Ultralytics prepares a restricted load
(``_SafeLoad.loading``, which is handed the file) to add, for the file about to be read, the classes it names of:

- the plugin: ``SmartCashDetectionModel`` and ``TimmBackbone``, under their present paths and the paths the flat layout
  before it pickled (``smartcash_ultra/_moved.py``);
- timm: a class defined in a ``timm.*`` module that is an ``nn.Module`` (the layers of any timm backbone) or an enum
  (``Format``, the layout of the feature maps), and ``FeatureInfo``, the plain record of feature channels and strides
  a ``features_only`` model carries.

Only classes are allowed, never a function: a class can be built and given its pickled state, as torch and Ultralytics
classes are (``nn.Module.__setstate__`` stores attributes; an ``__init__`` the pickle calls gets data only, as no
function is allowed to pass). Anything else the file names (``builtins.open``, ``os.system``, a timm function, any
other class of the plugin) stays refused by torch, and ``torch_safe_load`` says so naming the file. What is allowed is
registered for the life of the process, as Ultralytics registers its own; a timm module is imported only when a
checkpoint names it (timm is then needed to rebuild the backbone anyway).
"""

from __future__ import annotations

import functools
import importlib
from enum import Enum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from smartcash_ultra.nn.backbone import TimmBackbone
from smartcash_ultra.nn.model import SmartCashDetectionModel

PLUGIN_CLASSES = {
    "smartcash_ultra.nn.model.SmartCashDetectionModel": SmartCashDetectionModel,
    "smartcash_ultra.nn.backbone.TimmBackbone": TimmBackbone,
    "smartcash_ultra.model.SmartCashDetectionModel": SmartCashDetectionModel,  # the flat layout's paths
    "smartcash_ultra.nn.TimmBackbone": TimmBackbone,
}
"""Pickled path -> the plugin's class it names."""
TIMM_RECORDS = {"timm.models._features.FeatureInfo"}
"""timm classes that are no ``nn.Module`` yet part of a backbone's state: ``FeatureInfo`` holds lists of dicts."""


def allowed_classes(names: list[str]) -> dict[str, type]:
    """Return, of the global ``names`` a checkpoint pickles, those a SmartCash checkpoint may rebuild: name -> class.

    The plugin's model classes (:data:`PLUGIN_CLASSES`) and timm's backbone classes, defined in the ``timm.*`` module
    named: ``nn.Module`` subclasses, enums (``Format``, the feature maps' layout, which a pickle calls with a value:
    a member lookup) and :data:`TIMM_RECORDS`; a name that resolves to anything else is left out.
    """
    allowed = {}
    for name in names:
        if name in PLUGIN_CLASSES:
            allowed[name] = PLUGIN_CLASSES[name]
            continue
        module, _, attr = name.rpartition(".")
        if not module.startswith("timm."):
            continue
        try:
            obj = getattr(importlib.import_module(module), attr, None)
        except ImportError:  # no such timm module: torch refuses the name, naming it
            continue
        if (
            isinstance(obj, type)
            and obj.__module__ == module
            and (issubclass(obj, (nn.Module, Enum)) or name in TIMM_RECORDS)
        ):
            allowed[name] = obj
    return allowed


def allow_classes_of(weight: str | Path) -> None:
    """Add to torch's ``weights_only`` allow-list the classes of :func:`allowed_classes` that ``weight`` names."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(weight)
    except (OSError, ValueError, RuntimeError):  # not a torch.save() archive: torch.load reports it, naming nothing
        return
    allowed = allowed_classes(names)
    if allowed:
        torch.serialization.add_safe_globals([(cls, name) for name, cls in allowed.items()])


def install() -> None:
    """Make Ultralytics' restricted loads accept SmartCash checkpoints (idempotent).

    Wraps ``ultralytics.nn.tasks._SafeLoad.loading``, which ``torch_safe_load`` enters with the file right before its
    ``weights_only=True`` load (a reach into Ultralytics internals: ``smartcash_ultra/integration.py``, 13). The
    classes are added under the lock ``_SafeLoad`` holds while it adds its own: torch rebinds its allow-list on every
    addition, so two additions at once could lose one.
    """
    from ultralytics.nn.tasks import _SafeLoad

    stock = _SafeLoad.loading
    if getattr(stock, "smartcash", False):
        return

    @functools.wraps(stock)
    def loading(weight: Any):
        with _SafeLoad._lock:
            allow_classes_of(weight)
        return stock(weight)

    loading.smartcash = True
    _SafeLoad.loading = staticmethod(loading)  # stock is the classmethod already bound to _SafeLoad


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint as Ultralytics does (``torch_safe_load``: ``ULTRALYTICS_SAFE_LOAD`` decides), as a dict.

    Raises what ``torch_safe_load`` raises: a ``TypeError`` naming the file when it is damaged or, in safe mode, names
    a global outside the allow-list (then nothing of it ran).
    """
    from ultralytics.nn.tasks import torch_safe_load

    install()
    return torch_safe_load(path)[0]


def refusal(error: BaseException) -> str | None:
    """Say what a restricted load refused, when ``error`` is ``torch_safe_load``'s refusal of a global (else None).

    Ultralytics' message names no global and suggests an official model; torch's, its cause, names the global. A
    damaged file is no refusal (its message names no global), whatever the mode.
    """
    import re

    found = re.search(r"GLOBAL (\S+) was not an allowed global", str(error.__cause__ or ""))
    if not isinstance(error, TypeError) or not found:
        return None
    return (
        f"refused by the restricted load (ULTRALYTICS_SAFE_LOAD=1): it names {found.group(1)}, which is no class of "
        "a SmartCash, Ultralytics or torch model; nothing in it was run. Load only checkpoints you trust"
    )
