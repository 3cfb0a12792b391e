"""``SmartCashDetectionModel``: an Ultralytics ``DetectionModel`` built from a SmartCash model YAML.

A SmartCash model YAML is an ordinary Ultralytics model YAML plus a ``smartcash:`` section (the plugin's settings;
Ultralytics ignores it and saves it inside every checkpoint). Before ``parse_model`` runs, the channel counts of
``Index`` layers that read a ``TimmBackbone`` are filled in from timm's ``feature_info``, so the YAML can leave them
``null`` and any timm backbone works.
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

from torch import nn
from ultralytics.nn.tasks import DetectionModel, yaml_model_load
from ultralytics.utils import LOGGER

from smartcash_ultra.nn.backbone import TimmBackbone, feature_indices, feature_info, register_modules
from smartcash_ultra.utils.settings import SECTION

_announced_random_init: set[str] = set()  # Ultralytics builds a model twice per run (YOLO(), then the trainer)


class SmartCashDetectionModel(DetectionModel):
    """YOLO detection model with a timm or CSPDarknet backbone, Ultralytics neck, ``Detect`` head and loss."""

    def __init__(
        self,
        cfg: str | Path | dict,
        ch: int = 3,
        nc: int | None = None,
        verbose: bool = True,
        backbone_weights: bool = True,
    ):
        """Build from a SmartCash model YAML (path or dict); ``nc`` from the data overrides the YAML's.

        The timm backbone's weights (``smartcash.backbone_weights``) are in place when this returns, unless
        ``backbone_weights`` is False: the trainer passes that when a checkpoint's weights are loaded next, so that a
        checkpoint never needs the original weights file or the hub again.
        """
        register_modules()
        cfg = resolve_model_yaml(cfg)
        super().__init__(cfg, ch=ch, nc=nc, verbose=verbose)
        if backbone_weights:
            self.load_backbone_weights()

    @property
    def timm_backbones(self) -> list[tuple[int, TimmBackbone]]:
        """Return (layer index, module) of every ``TimmBackbone`` layer."""
        return [(i, m) for i, m in enumerate(self.model) if isinstance(m, TimmBackbone)]

    def load_backbone_weights(self) -> None:
        """Load the weights ``smartcash.backbone_weights`` names into the timm backbone, or say it is random.

        Raises:
            BackboneWeightsError, FileNotFoundError, ValueError: naming what was asked and how to supply it.
        """
        source = self.yaml.get("yaml_file") or "model YAML"
        for _, backbone in self.timm_backbones:
            weights = backbone_weights_source(self.yaml[SECTION].get("backbone_weights"), source)
            if weights == "timm":
                backbone.load_timm_weights()
            elif weights is not None:
                backbone.load(
                    _resolve_path(weights["file"], self.yaml.get("yaml_file")), weights.get("mean"), weights.get("std")
                )
            elif backbone.name not in _announced_random_init:
                _announced_random_init.add(backbone.name)
                arch, _, tag = backbone.name.partition(".")
                picks = f"; the tag '.{tag}' picks timm's weights with backbone_weights: timm" if tag else ""
                LOGGER.info(
                    f"TimmBackbone '{backbone.name}': random init (smartcash.backbone_weights is null{picks}); "
                    f"'timm' loads timm's pretrained weights, a file path loads a local file"
                )

    def holds_backbones_of(self, weights: nn.Module | None) -> bool:
        """Return True when ``weights`` (a model about to be transferred in) carries every timm backbone tensor."""
        if weights is None or not self.timm_backbones:
            return False
        theirs = weights.state_dict()
        own = self.state_dict()
        return all(
            k in theirs and theirs[k].shape == v.shape
            for i, _ in self.timm_backbones
            for k, v in own.items()
            if k.startswith(f"model.{i}.")
        )

    def fuse(self, verbose: bool = True, imgsz: int = 640):
        """Fuse as Ultralytics does, plus the timm backbone's BatchNorm layers (:meth:`TimmBackbone.fuse`)."""
        for _, backbone in self.timm_backbones:
            n = backbone.fuse()
            if n and verbose:
                LOGGER.info(f"TimmBackbone '{backbone.name}': {n} BatchNorm layers fused into their convolutions")
        return super().fuse(verbose=verbose, imgsz=imgsz)


def backbone_weights_source(value, source: str = "model YAML") -> str | dict | None:
    """Read ``smartcash.backbone_weights``: ``'timm'``, ``{'file': ..., 'mean': ..., 'std': ...}`` or None.

    Accepted: ``timm`` (or ``true``): timm's pretrained weights for the backbone's name; a local file path; a mapping
    ``{file, mean, std}`` that declares the normalisation the file's weights were trained with (timm's
    ``pretrained_cfg_overlay`` keys); ``null`` (or ``false``): random init.

    Raises:
        ValueError: naming ``source`` and the value, for anything else.
    """
    where = f"{source}: smartcash.backbone_weights"
    if value is None or value is False:
        return None
    if value is True or value == "timm":
        return "timm"
    if isinstance(value, str):
        if value.startswith(("hf-hub:", "hf_hub:", "timm/")):
            raise ValueError(
                f"{where} {value!r}: name timm's weights through the backbone instead: backbone_weights: timm, with "
                "the backbone named by its timm name, a tag picking the weights (e.g. efficientnet_b4.ra2_in1k for "
                "hf-hub:timm/efficientnet_b4.ra2_in1k); or give a local file"
            )
        return {"file": value}
    if isinstance(value, dict):
        unknown = set(value) - {"file", "mean", "std"}
        if unknown or not isinstance(value.get("file"), str):
            raise ValueError(f"{where} mapping needs 'file' and may declare 'mean', 'std'; got {value!r}")
        for key in ("mean", "std"):
            v = value.get(key)
            if v is not None and not (
                isinstance(v, (list, tuple))
                and len(v) == 3
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            ):
                raise ValueError(f"{where}.{key} must be three numbers (R, G, B), got {v!r}")
        return dict(value)
    raise ValueError(f"{where} must be 'timm', a weights file, {{file, mean, std}} or null, got {value!r}")


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
