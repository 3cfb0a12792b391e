"""The YAMLs the package ships (model YAMLs under ``models/``, training cfgs at the top), and how their names resolve.

The repository's ``cfg/`` is their one copy: the wheel carries it as ``smartcash_ultra/cfg`` (hatch ``force-include``),
and a clone or editable install reads it where it lies, beside the package. Names resolve the way Ultralytics
resolves its own (``yolov8n.yaml``): a file that exists as given wins, so a user's own copy always does; only a name
that is no file is looked up here. Ultralytics' lookup itself searches only its own package, hence
:func:`smartcash_ultra.integration.install` puts this one in front of it.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
YAML_SUFFIXES = (".yaml", ".yml")
MODELS = "models"
"""Subfolder of the cfg folder holding model YAMLs; training cfgs sit at its top."""
SAMPLE_DATA = "data/sample/data.yaml"
"""The data the shipped training cfgs name: the synthetic sample, which a user writes first."""
SAMPLE_HINT = (
    "the shipped training cfgs train on the sample dataset: write it here with "
    "`python -m smartcash_ultra.tools.sample_data data/sample`, or pass data=path/to/your/data.yaml"
)
DEFAULTS_NAME = "smartcash_defaults.yaml"
"""The SmartCash training settings: the one training cfg every route of a SmartCash model starts from."""


def cfg_dir() -> Path:
    """Return the shipped cfg folder: the wheel's ``smartcash_ultra/cfg``, else the clone's ``cfg/``.

    Raises:
        FileNotFoundError: naming both places, for an install that carries neither.
    """
    for candidate in (PACKAGE_DIR / "cfg", PACKAGE_DIR.parent / "cfg"):
        if (candidate / MODELS).is_dir():
            return candidate
    raise FileNotFoundError(
        f"smartcash_ultra's YAMLs are missing: neither {PACKAGE_DIR / 'cfg'} (a wheel install) nor "
        f"{PACKAGE_DIR.parent / 'cfg'} (a clone) holds {MODELS}/; reinstall the package"
    )


def defaults_file() -> Path:
    """Return the SmartCash training settings file (``cfg/smartcash_defaults.yaml``)."""
    return cfg_dir() / DEFAULTS_NAME


def find_shipped_yaml(file: object) -> str | None:
    """Return the shipped YAML a name means, or None where the name is no shipped YAML (or exists as given).

    ``file`` may carry folders below the cfg folder (``models/smartcash_effb4_yolov5.yaml``), as Ultralytics' search
    allows. Every shipped name is one file: model YAMLs and training cfgs are named apart (``tests/test_models.py``).
    """
    if not isinstance(file, (str, Path)):
        return None
    name = str(file).strip()
    if not name.lower().endswith(YAML_SUFFIXES) or "://" in name or os.path.isabs(name) or os.path.exists(name):
        return None
    if ".." in Path(name).parts:
        return None
    try:
        found = shipped_file(name)
    except FileNotFoundError:
        return None
    return str(found) if found is not None else None


def shipped_file(name: str) -> Path | None:
    """Return the shipped YAML called ``name`` (a name, not a pattern; folders below the cfg folder allowed), or None.

    Raises:
        FileNotFoundError: the install carries no cfg folder (:func:`cfg_dir`).
    """
    return next((p for p in sorted(cfg_dir().glob(f"**/{glob.escape(name)}")) if p.is_file()), None)


def shipped_names() -> list[str]:
    """Return the file name of every shipped YAML: training cfgs first, then model YAMLs."""
    root = cfg_dir()
    return [p.name for p in sorted(root.glob("*.y*ml"))] + [p.name for p in sorted((root / MODELS).glob("*.y*ml"))]


def copy_shipped(name: str, folder: str | Path = ".") -> Path:
    """Copy the shipped YAML ``name`` into ``folder`` for editing, under its own name; return the copy's path.

    A copy there then wins over the shipped file wherever the name is given from that folder (see
    :func:`find_shipped_yaml`).

    Raises:
        FileNotFoundError: ``name`` is no shipped YAML (the message lists them).
        FileExistsError: naming the file, which is never overwritten.
    """
    found = shipped_file(name) if name.lower().endswith(YAML_SUFFIXES) and ".." not in Path(name).parts else None
    if found is None:
        raise FileNotFoundError(f"{name} is no shipped YAML; shipped: {', '.join(shipped_names())}")
    target = Path(folder) / found.name
    try:
        with open(target, "xb") as f:  # exclusive: an existing file, a user's edits maybe, is never replaced
            f.write(found.read_bytes())
    except FileExistsError:
        raise FileExistsError(f"{target} already exists: not overwritten (rename or remove it to copy again)") from None
    return target


def installed_version() -> str:
    """Return the installed distribution's version: the package's top module sits above every layer that asks."""
    from importlib import metadata

    try:
        return metadata.version("smartcash-ultra")
    except metadata.PackageNotFoundError:  # run from a clone that was never installed
        return "(not installed)"
