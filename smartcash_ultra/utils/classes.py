"""The SmartCash 17-class, three-layer banknote scheme (one detection head, ``nc = 17``).

layer_1 (ids 0-6) is the whole note; layer_2 (ids 7-13) is the printed nominal area of that note
(``id - 7`` is its note); layer_3 (ids 14-16) are security features shared by every note.
"""

from __future__ import annotations

DENOMINATIONS = ("001", "002", "005", "010", "020", "050", "100")  # thousands of Rupiah
"""Layer-1 class names; ``int(name) * 1000`` is the note's value in Rupiah."""

LAYER_1 = DENOMINATIONS
LAYER_2 = tuple(f"l2_{d}" for d in DENOMINATIONS)
LAYER_3 = ("l3_sign", "l3_text", "l3_thread")
NAMES = {i: name for i, name in enumerate(LAYER_1 + LAYER_2 + LAYER_3)}
"""Class id -> name for the full scheme, as a data YAML's ``names`` mapping."""

LAYERS = {
    "layer_1": tuple(range(0, 7)),
    "layer_2": tuple(range(7, 14)),
    "layer_3": tuple(range(14, 17)),
}
"""Layer name -> class ids."""


def is_full_scheme(names: dict[int, str] | list[str]) -> bool:
    """Return True when ``names`` is exactly the 17-class SmartCash scheme (so per-layer figures make sense)."""
    values = list(names.values()) if isinstance(names, dict) else list(names)
    return values == list(NAMES.values())


def nominal_code(class_id: int) -> str:
    """Return the 6-digit nominal used in SmartCash file names (``'001000'`` for Rp1.000) of a layer-1/2 class."""
    if not 0 <= class_id < 14:
        raise ValueError(f"class id {class_id} has no nominal: only layer_1 (0-6) and layer_2 (7-13) classes do")
    return f"{int(DENOMINATIONS[class_id % 7]) * 1000:06d}"
