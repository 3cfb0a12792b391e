"""What every SmartCash callback object shares: its handlers derived from its methods, and its settings resolved.

An object's ``callbacks`` dict (Ultralytics event name -> bound handler, the shape ``add_callback`` takes) is every
method named after an Ultralytics event, in Ultralytics' event order; no class writes it by hand. Bound methods pickle
with their object, so the dict travels to DDP workers like any callbacks dict.
"""

from __future__ import annotations

from typing import Any

from ultralytics.utils.callbacks.base import default_callbacks

from smartcash_ultra.utils.settings import model_settings, resolve


class Callback:
    """Base of the SmartCash callback objects: ``callbacks`` is every method named after an Ultralytics event."""

    @property
    def callbacks(self) -> dict[str, Any]:
        return {event: getattr(self, event) for event in default_callbacks if callable(getattr(self, event, None))}


def explicit_settings(name: str, value: bool | dict[str, Any] | None, argument: str) -> dict[str, Any]:
    """Check settings given as an argument now (as the model YAML's are checked); return only the keys given.

    ``value`` None gives nothing; True or False is short for ``{enabled: ...}``, as in the model YAML.
    """
    if value is None:
        return {}
    value = {"enabled": value} if isinstance(value, bool) else value
    resolve({"callbacks": {name: value}}, f"add_smartcash_callbacks({argument}=...)")  # raises on an unknown name
    return dict(value)


def callback_settings(name: str, explicit: dict[str, Any], trainer) -> dict[str, Any]:
    """Resolve the settings of callback ``name`` for ``trainer``'s run.

    An explicit setting wins over the model YAML's ``smartcash.callbacks`` section, which wins over the defaults.
    """
    return {**model_settings(trainer.model)["callbacks"][name], **explicit}
