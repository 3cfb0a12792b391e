"""The data declarations a model was trained with, carried with it so that it predicts on arrays as it trained.

A data YAML declares how its arrays were written (``channel_order``, ``value_range``; read by
:func:`smartcash_ultra.data.image_dataset.read_declarations`). Training reads the arrays that way, so the model
learnt images, not the raw numbers; prediction must read new arrays the same way. The trainer therefore records the
declarations on the model (an attribute, pickled into every checkpoint, stock models included), the exporter writes
them into the metadata Ultralytics already stores in every export, and the predictor reads them back from either.
A data YAML given to ``predict`` as ``data=`` says how the arrays at hand were written: the keys it sets win. No
other YAML is read: Ultralytics also hands a checkpoint's training ``data`` to its predictor, and a relative path
there may name another tree's YAML in the current folder; ``YOLO.predict`` passes ``data=None`` unless the user gave
one (``integration.py``).
"""

from __future__ import annotations

import ast
import os
from typing import Any

from ultralytics.utils import LOGGER, YAML

from smartcash_ultra.data.image_dataset import Declarations, read_declarations
from smartcash_ultra.nn.model import is_smartcash_yaml

KEY = "smartcash_declarations"
"""Name of the model attribute and of the export metadata entry: ``{"channel_order": ..., "value_range": [...]}``."""
DECLARED = ("channel_order", "value_range")
"""The declarations that decide how an array becomes an image (``strict`` only concerns training)."""


def record(model, data: dict) -> None:
    """Put the declarations of ``data`` (a data YAML dict, as the trainer holds it) on ``model``, checked."""
    declared = read_declarations(data)
    setattr(
        model, KEY, {"channel_order": declared.channel_order, "value_range": [float(v) for v in declared.value_range]}
    )


def carried(model) -> dict[str, Any]:
    """Return the declarations a model carries: a torch module's attribute, or an exported model's metadata entry.

    ``model`` is a torch module or an ``AutoBackend``; a model trained before declarations were recorded, or by stock
    Ultralytics on images, carries none (``{}``).
    """
    found = getattr(model, KEY, None)
    if found is None:
        found = (getattr(model, "metadata", None) or {}).get(KEY)  # AutoBackend of an export
    if found is None and hasattr(model, "backend"):  # AutoBackend of a PyTorch model
        found = getattr(getattr(model.backend, "model", None), KEY, None)
    if isinstance(found, str):  # ONNX metadata holds strings
        found = ast.literal_eval(found)
    return dict(found or {})


def for_prediction(model, data: str | None) -> Declarations:
    """Return how to read the arrays given to ``model``: its own declarations, under the keys ``data`` sets.

    ``data`` is the user's ``data`` argument: a data YAML describing the arrays at hand; a missing file is warned
    about, and the model's declarations stand.

    Raises:
        DatasetError: naming the data YAML (or the model) when a declaration is invalid.
    """
    declared, source = carried(model), "model's recorded declarations"
    if isinstance(data, (str, os.PathLike)) and str(data).lower().endswith((".yaml", ".yml")):
        if os.path.isfile(data):
            loaded = YAML.load(data) or {}
            declared.update({k: loaded[k] for k in DECLARED if k in loaded})
            source = str(data)
        else:
            LOGGER.warning(
                f"data {data} does not exist; arrays are read as the model declares ({declared or 'RGB 0..1'})"
            )
    return read_declarations(declared, source)


def trained_on_arrays(model) -> bool:
    """Return True for a model whose in-memory float arrays are SmartCash's: it carries declarations or is SmartCash's.

    Any other model (a stock one trained on images) keeps Ultralytics' reading of them: float BGR 0..255.
    """
    module = getattr(getattr(model, "backend", None), "model", model)  # the torch module of a PyTorch AutoBackend
    return bool(carried(model)) or is_smartcash_yaml(getattr(module, "yaml", None))


def add_to_export_metadata(exporter) -> None:
    """``on_export_start`` callback: write the model's declarations into the metadata Ultralytics stores in the export.

    The exporter fills ``metadata`` before this event and writes it out after (ONNX metadata properties, TorchScript
    extra file, ``metadata.yaml`` of OpenVINO and the other folder formats).
    """
    declared = carried(exporter.model) or carried(getattr(exporter.model, "model", None))
    if declared:
        exporter.metadata[KEY] = declared
