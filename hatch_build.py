"""Build hook: an editable install gets the start-up ``.pth`` but no copy of ``cfg/``.

The wheel carries ``cfg/`` as ``smartcash_ultra/cfg`` (``force-include`` in ``pyproject.toml``). An editable install
reads the checkout's ``cfg/`` in place (``smartcash_ultra/utils/shipped.py``), so a copy in site-packages would only
be a second, stale one.
"""

from __future__ import annotations

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):
    """Replaces the forced files of an editable build by the start-up ``.pth`` alone."""

    def initialize(self, version: str, build_data: dict) -> None:
        if version == "editable":
            forced = self.build_config.target_config.get("force-include", {})
            build_data["force_include_editable"] = {k: v for k, v in forced.items() if v.endswith(".pth")}
