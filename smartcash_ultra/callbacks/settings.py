"""Callback settings: defaults, the model YAML's ``smartcash.callbacks`` section, and explicit arguments.

They live in the model YAML (not the training cfg) because Ultralytics rejects unknown keys in a training cfg, and
because the model YAML is saved in every checkpoint and re-read by DDP workers, so resume and DDP keep them. The
base patience is Ultralytics' own ``patience`` argument.
"""

from __future__ import annotations

import os
from copy import deepcopy
from typing import Any

DEFAULTS: dict[str, dict[str, Any]] = {
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
}
"""Every setting and its default; ``section: false`` is short for ``{enabled: false}``."""


def resolve(section: dict[str, Any] | None, source: str = "smartcash.callbacks") -> dict[str, dict[str, Any]]:
    """Merge ``section`` (as written in a model YAML) over :data:`DEFAULTS`, rejecting unknown names."""
    settings = deepcopy(DEFAULTS)
    if section is None:
        return settings
    if not isinstance(section, dict):
        raise ValueError(f"{source} must be a mapping of {sorted(DEFAULTS)}, not {section!r}")
    for name, value in section.items():
        if name not in DEFAULTS:
            raise ValueError(f"{source}: unknown callback {name!r}; known: {sorted(DEFAULTS)}")
        if isinstance(value, bool) or value is None:
            value = {"enabled": bool(value)}
        if not isinstance(value, dict):
            raise ValueError(f"{source}.{name} must be true, false or a mapping, not {value!r}")
        unknown = set(value) - set(DEFAULTS[name])
        if unknown:
            raise ValueError(f"{source}.{name}: unknown setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS[name])}")
        settings[name].update(value)
    return settings


def model_settings(trainer) -> dict[str, dict[str, Any]]:
    """Resolve the settings of the trainer's model YAML (defaults for models without a section)."""
    from ultralytics.utils.torch_utils import unwrap_model

    yaml = getattr(unwrap_model(trainer.model), "yaml", None) or {}
    section = (yaml.get("smartcash") or {}).get("callbacks")
    return resolve(section, f"{yaml.get('yaml_file', 'model YAML')}: smartcash.callbacks")


def is_main_process() -> bool:
    """Return True outside DDP and on DDP rank 0, by Ultralytics' rule: RANK counts only when WORLD_SIZE > 1.

    Read at call time (DDP workers set both before training), so a job scheduler exporting RANK to a single
    process does not silence the callbacks.
    """
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1:
        return True
    return int(os.environ.get("RANK", -1)) in {-1, 0}
