"""The plugin's settings, from the model YAML's ``smartcash:`` section: ``training`` and ``callbacks``.

They sit in the model YAML, not the training cfg, because Ultralytics rejects unknown keys in a training cfg, and
because the model YAML is saved in every checkpoint and re-read by DDP workers, so resume and DDP keep them.
Everything Ultralytics has an argument for (optimizer, lr0, lrf, warmup_epochs, box, cls, amp, patience, ...) stays an
Ultralytics argument. The section's other keys (``backbone_weights``, ``scale``) are the model's own.

Ultralytics' own arguments for a SmartCash run start from ``cfg/smartcash_defaults.yaml``, merged here under the
user's (:func:`with_smartcash_defaults`).
"""

from __future__ import annotations

import os
from copy import deepcopy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from smartcash_ultra.utils.shipped import defaults_file, find_shipped_yaml

SECTION = "smartcash"
"""Model-YAML key holding the plugin's settings; its presence marks a SmartCash model."""
SCHEDULERS = ("linear", "cosine", "step", "exponential")
DEFAULTS: dict[str, dict[str, Any]] = {
    "training": {
        "scheduler": None,  # null: Ultralytics' own choice (cos_lr: cosine, else linear)
        "step_size": 10,  # step: epochs between decays
        "gamma": None,  # step: 0.1, exponential: 0.95 (factor per step / per epoch)
        "schedule_epochs": None,  # length of the LR schedule; null: the run's epochs (extensions keep the original)
        "val_interval": 1,  # validate every N epochs, and always at the last
        "checkpoint_name": "best_{backbone}_{date}.pt",  # a copy of best.pt under this name; null: none
    },
    "callbacks": {
        "early_stopping": {
            "enabled": True,
            "monitor": "fitness",
            "mode": "auto",  # min for losses, max otherwise
            "min_delta": 0.001,
            "adaptive": True,
            "max_patience": None,  # 2x patience
            "min_rate": None,  # min_delta
        },
        "metrics_export": {"enabled": True},
        "progress": {"enabled": True, "min_interval": 0.5},  # enabled: events.jsonl in the run dir
    },
}
"""Every setting and its default; in ``callbacks``, ``name: false`` is short for ``{enabled: false}``."""
FREEZE = "To freeze the backbone for a whole run: Ultralytics' freeze=N (4 for EfficientNet-B4, 10 for CSPDarknet)."
REMOVED = {
    "freeze_backbone": (0, "freezing the backbone for the first epochs measured worse"),
    "backbone_lr": (1.0, "a lower backbone learning rate measured worse; the backbone trains at lr0"),
}
"""Settings that were removed: the value that meant "off" (checkpoints of earlier runs carry it), and why."""


def resolve(section: dict[str, Any] | None, source: str = SECTION) -> dict[str, dict[str, Any]]:
    """Merge a model YAML's ``smartcash:`` section over :data:`DEFAULTS`; errors name ``source`` and the setting.

    Raises:
        ValueError: a part is no mapping, a name is unknown, or a training value is out of range.
    """
    section = section or {}
    if not isinstance(section, dict):
        raise ValueError(f"{source} must be a mapping, not {section!r}")
    return {
        "training": _training(section.get("training"), f"{source}.training"),
        "callbacks": _callbacks(section.get("callbacks"), f"{source}.callbacks"),
    }


def model_settings(model) -> dict[str, dict[str, Any]]:
    """Resolve the settings of a (possibly DDP-wrapped) model's YAML; defaults for models without a section."""
    from ultralytics.utils.torch_utils import unwrap_model

    yaml = getattr(unwrap_model(model), "yaml", None) or {}
    return resolve(yaml.get(SECTION), f"{yaml.get('yaml_file', 'model YAML')}: {SECTION}")


def _training(section: dict[str, Any] | None, source: str) -> dict[str, Any]:
    if isinstance(section, dict):  # a removed setting asking for its old behaviour is an error; "off" is dropped
        for key, (off, why) in REMOVED.items():
            if key in section and section[key] != off:
                raise ValueError(f"{source}.{key} was removed ({why}): delete it from the YAML. {FREEZE}")
        section = {k: v for k, v in section.items() if k not in REMOVED}
    settings = _merge(DEFAULTS["training"], section, source)
    if settings["scheduler"] is not None and settings["scheduler"] not in SCHEDULERS:
        raise ValueError(f"{source}.scheduler must be one of {SCHEDULERS} or null, got {settings['scheduler']!r}")
    for key in ("step_size", "val_interval"):
        if not isinstance(settings[key], int) or isinstance(settings[key], bool) or settings[key] < 1:
            raise ValueError(f"{source}.{key} must be an integer >= 1, got {settings[key]!r}")
    gamma = settings["gamma"]
    if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1):
        raise ValueError(f"{source}.gamma must be a number in (0, 1], got {gamma!r}")
    epochs = settings["schedule_epochs"]
    if epochs is not None and (not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1):
        raise ValueError(f"{source}.schedule_epochs must be an integer >= 1 or null, got {epochs!r}")
    name = settings["checkpoint_name"]
    if name is not None and (not isinstance(name, str) or not name.endswith(".pt") or "/" in name or "\\" in name):
        raise ValueError(f"{source}.checkpoint_name must be a file name ending in .pt (or null), got {name!r}")
    return settings


def _callbacks(section: dict[str, Any] | None, source: str) -> dict[str, dict[str, Any]]:
    known = DEFAULTS["callbacks"]
    if section is not None and not isinstance(section, dict):
        raise ValueError(f"{source} must be a mapping of {sorted(known)}, not {section!r}")
    for name in section or {}:
        if name not in known:
            raise ValueError(f"{source}: unknown callback {name!r}; known: {sorted(known)}")
    settings = {}
    for name, defaults in known.items():
        value = (section or {}).get(name, {})
        if isinstance(value, bool) or value is None:
            value = {"enabled": bool(value)}
        settings[name] = _merge(defaults, value, f"{source}.{name}", "true, false or ")
    return settings


def _merge(defaults: dict[str, Any], section: Any, source: str, also: str = "") -> dict[str, Any]:
    settings = deepcopy(defaults)
    if section is None:
        return settings
    if not isinstance(section, dict):
        raise ValueError(f"{source} must be {also}a mapping of {sorted(defaults)}, not {section!r}")
    unknown = set(section) - set(defaults)
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {sorted(unknown)}; known: {sorted(defaults)}")
    settings.update(section)
    return settings


def is_main_process() -> bool:
    """Return True outside DDP and on DDP rank 0, by Ultralytics' rule: RANK counts only when WORLD_SIZE > 1.

    Read at call time (DDP workers set both before training), so a job scheduler exporting RANK to a single
    process does not silence the callbacks.
    """
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return True
    return int(os.environ.get("RANK", -1)) in {-1, 0}


def load_train_cfg(cfg: str | Path | dict | SimpleNamespace | None) -> dict[str, Any]:
    """Return a training cfg as a dict of overrides; a YAML path is also recorded under Ultralytics' ``cfg`` key.

    A YAML that is no file is looked up by name among the package's training cfgs (``smartcash_effb4.yaml``).
    """
    from ultralytics.utils import DEFAULT_CFG, YAML

    if cfg is None or cfg is DEFAULT_CFG:
        return {}
    if isinstance(cfg, SimpleNamespace):
        return dict(vars(cfg))
    source, loaded = "training cfg", cfg
    if not isinstance(cfg, dict):
        source = path = Path(find_shipped_yaml(cfg) or cfg)
        if not path.is_file():
            raise FileNotFoundError(f"training cfg {path} does not exist")
        loaded = {**YAML.load(path), "cfg": str(path)}  # YAML.load names the file if it is no mapping
    if SECTION in loaded:
        raise ValueError(
            f"{source}: 'smartcash:' settings belong in the model YAML (Ultralytics rejects unknown keys in a "
            "training cfg; the model YAML's section is saved in checkpoints and survives resume and DDP)"
        )
    return dict(loaded)


NOT_SETTINGS = frozenset({"model", "data", "task", "mode", "cfg"})
"""Arguments that choose what is trained, not how: never taken from the settings file, not listed as settings."""


def smartcash_defaults() -> dict[str, Any]:
    """Return the SmartCash training settings: ``cfg/smartcash_defaults.yaml``, their one source.

    Raises:
        ValueError: naming the file, when it holds a key that chooses what is trained (model, data, ...).
    """
    from ultralytics.utils import YAML

    path = defaults_file()
    settings = YAML.load(path)
    if NOT_SETTINGS & set(settings):
        raise ValueError(f"{path}: holds {sorted(NOT_SETTINGS & set(settings))}, which are no training settings")
    return settings


def with_smartcash_defaults(given: dict[str, Any]) -> dict[str, Any]:
    """Return the run's arguments: the SmartCash training settings under the ones ``given``; log where each came from.

    Every route that trains a SmartCash model reaches the trainer with only the arguments the user chose (Ultralytics
    fills the rest from its own defaults later), so this one merge serves ``yolo train model=``, ``cfg=``,
    ``YOLO(...).train()`` and ``SmartCashTrainer`` alike. A resumed run keeps its checkpoint's arguments, as
    Ultralytics decides: settings merged here would count as changes to them.
    """
    from ultralytics.utils import LOGGER

    if given.get("resume"):
        return given
    path, defaults = defaults_file(), smartcash_defaults()
    taken = {k: v for k, v in defaults.items() if k not in given}
    yours = {k: v for k, v in given.items() if k in defaults}
    LOGGER.info(
        f"SmartCash training settings from {path}: {_listing(taken)}; yours instead: {_listing(yours)}; "
        "your other arguments as given, every other setting Ultralytics' default"
    )
    return {**taken, **given}


def _listing(args: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in args.items()) or "none"
