"""Training settings Ultralytics has no argument for, from the model YAML's ``smartcash.training`` section.

They sit in the model YAML for the reason the callbacks' do (:mod:`smartcash_ultra.callbacks.settings`): Ultralytics
rejects unknown keys in a training cfg, and the model YAML is saved in every checkpoint and re-read by DDP workers, so
resume and DDP keep them. Everything Ultralytics has an argument for (optimizer, lr0, lrf, warmup_epochs, box, cls,
amp, ...) stays an Ultralytics argument.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

SCHEDULERS = ("linear", "cosine", "step", "exponential")
DEFAULTS: dict[str, Any] = {
    "scheduler": None,  # null: Ultralytics' own choice (cos_lr: cosine, else linear)
    "step_size": 10,  # step: epochs between decays
    "gamma": None,  # step: 0.1, exponential: 0.95 (factor per step / per epoch)
    "schedule_epochs": None,  # length of the LR schedule; null: the run's epochs (extensions keep the original)
    "val_interval": 1,  # validate every N epochs, and always at the last
    "checkpoint_name": "best_{backbone}_{date}.pt",  # a copy of best.pt under this name; null: none
}
"""Every ``smartcash.training`` setting and its default."""


def resolve_training(section: dict[str, Any] | None, source: str = "smartcash.training") -> dict[str, Any]:
    """Merge ``section`` (as written in a model YAML) over :data:`DEFAULTS`, rejecting unknown names and bad values."""
    settings = deepcopy(DEFAULTS)
    if section is None:
        return settings
    if not isinstance(section, dict):
        raise ValueError(f"{source} must be a mapping of {sorted(DEFAULTS)}, not {section!r}")
    unknown = set(section) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    settings.update(section)
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


def training_settings(model) -> dict[str, Any]:
    """Resolve the ``smartcash.training`` settings of a (possibly DDP-wrapped) model; defaults for other models."""
    from ultralytics.utils.torch_utils import unwrap_model

    yaml = getattr(unwrap_model(model), "yaml", None) or {}
    section = (yaml.get("smartcash") or {}).get("training")
    return resolve_training(section, f"{yaml.get('yaml_file', 'model YAML')}: smartcash.training")
