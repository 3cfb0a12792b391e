"""The switch that turns the plugin off: ``SMARTCASH_ULTRA_DISABLE=1`` leaves Ultralytics exactly stock.

Read by the interpreter-start hook and by every function that patches Ultralytics; it imports neither torch nor
Ultralytics, as the hook must not at interpreter start.
"""

from __future__ import annotations

import os

DISABLE_ENV = "SMARTCASH_ULTRA_DISABLE"


def enabled() -> bool:
    """Return False when the user switched the plugin off with ``SMARTCASH_ULTRA_DISABLE``."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}
