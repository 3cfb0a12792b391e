"""``SmartCashDetectionModel``: an Ultralytics ``DetectionModel`` built from a SmartCash model YAML.

A SmartCash model YAML is an ordinary Ultralytics model YAML plus a ``smartcash:`` section (the plugin's settings;
Ultralytics ignores it and saves it inside every checkpoint). Before ``parse_model`` runs, the channel counts of
``Index`` layers that read a ``TimmBackbone`` are filled in from timm's ``feature_info``, so the YAML can leave them
``null`` and any timm backbone works.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

from ultralytics.nn.tasks import DetectionModel, yaml_model_load
from ultralytics.utils import LOGGER

from smartcash_ultra.nn.backbone import TimmBackbone, feature_indices, feature_info, register_modules

SECTION = "smartcash"
"""Model-YAML key holding the plugin's settings; its presence marks a SmartCash model."""
_announced_random_init: set[str] = set()  # Ultralytics builds a model twice per run (YOLO(), then the trainer)


class SmartCashDetectionModel(DetectionModel):
    """YOLO detection model with a timm or CSPDarknet backbone, Ultralytics neck, ``Detect`` head and loss."""

    def __init__(self, cfg: str | Path | dict, ch: int = 3, nc: int | None = None, verbose: bool = True):
        """Build from a SmartCash model YAML (path or dict); ``nc`` from the data overrides the YAML's."""
        register_modules()
        cfg = resolve_model_yaml(cfg)
        super().__init__(cfg, ch=ch, nc=nc, verbose=verbose)
        self._load_backbone_weights()

    def _load_backbone_weights(self) -> None:
        """Load the local file named by ``smartcash.backbone_weights`` into the timm backbone, or say it is random."""
        backbones = [m for m in self.model if isinstance(m, TimmBackbone)]
        if not backbones:
            return
        weights = self.yaml[SECTION].get("backbone_weights")
        for backbone in backbones:
            if weights:
                backbone.load(_resolve_path(weights, self.yaml.get("yaml_file")))
            elif backbone.name not in _announced_random_init:
                _announced_random_init.add(backbone.name)
                LOGGER.info(
                    f"TimmBackbone '{backbone.name}': random init (no 'smartcash.backbone_weights' file in the model "
                    "YAML; nothing is downloaded)"
                )


def resolve_model_yaml(cfg: str | Path | dict) -> dict:
    """Load a SmartCash model YAML and fill the channel counts of ``Index`` layers that read a ``TimmBackbone``.

    Raises:
        ValueError: naming the YAML when it has no ``smartcash:`` section, or a declared channel count disagrees with
            the backbone.
    """
    d = deepcopy(cfg) if isinstance(cfg, dict) else yaml_model_load(cfg)
    source = d.get("yaml_file", "<dict>")
    if not isinstance(d.get(SECTION), dict):
        raise ValueError(f"{source}: not a SmartCash model YAML (needs a '{SECTION}:' mapping, may be empty: {{}})")
    if not d.get("scale") and d.get("scales"):
        d["scale"] = d[SECTION].get("scale") or next(iter(d["scales"]))  # filename scale (yolov5s...) wins
    layers = d["backbone"] + d["head"]
    channels = {}  # layer index -> feature channels of a TimmBackbone
    for i, (f, _, m, args) in enumerate(layers):
        if m == "TimmBackbone":
            strides = tuple(args[1]) if len(args) > 1 else (8, 16, 32)
            channels[i] = [feature_info(args[0]).channels()[k] for k in feature_indices(args[0], strides)]
        elif m == "Index" and isinstance(f, int) and (f if f >= 0 else i + f) in channels:
            available = channels[f if f >= 0 else i + f]
            c, k = args[0], args[1]
            if c is None:
                args[0] = available[k]
            elif c != available[k]:
                raise ValueError(
                    f"{source}: layer {i} declares {c} channels for backbone output {k}, "
                    f"but the backbone gives {available[k]} (write null to derive it)"
                )
    return d


def is_smartcash_yaml(d: dict | None) -> bool:
    return isinstance(d, dict) and isinstance(d.get(SECTION), dict)


def _resolve_path(path: str, yaml_file: str | None) -> Path:
    """Resolve a path from the model YAML: as given (absolute or from the working dir), else beside the YAML."""
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute() or not yaml_file:
        return p
    beside = Path(yaml_file).parent / p
    return beside if beside.exists() else p
