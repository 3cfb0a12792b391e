"""Model layers the SmartCash YAMLs name, registered with Ultralytics' ``parse_model``.

``TimmBackbone`` wraps any timm model in ``features_only`` mode and returns the feature maps at the requested strides;
Ultralytics' own ``Index`` layers then pick each map for the neck. Channel counts come from timm's ``feature_info``,
so any timm backbone name works from the model YAML.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from ultralytics.utils import LOGGER

if TYPE_CHECKING:
    from timm.models import FeatureInfo


class TimmBackbone(nn.Module):
    """A timm backbone returning ``[P3, P4, P5]``-style feature maps for the given strides.

    Input is RGB in 0..1 (what the Ultralytics pipeline feeds); the ImageNet normalisation the timm model was
    designed for is applied inside, from the model's own ``pretrained_cfg``.
    """

    def __init__(self, name: str, strides: list[int] | tuple[int, ...] = (8, 16, 32)):
        """Build ``timm.create_model(name, features_only=True)`` at random init; weights come from :meth:`load`."""
        super().__init__()
        import timm

        self.name, self.strides = name, tuple(int(s) for s in strides)
        out_indices = feature_indices(name, self.strides)
        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=out_indices)
        cfg = self.body.pretrained_cfg or {}
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, -1, 1, 1))

    @property
    def channels(self) -> list[int]:
        return list(self.body.feature_info.channels())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalise and return the feature maps, shallowest first."""
        return self.body((x - self.mean) / self.std)

    def load(self, path: str | Path) -> None:
        """Load backbone weights from a local file (a timm/torchvision state dict: .pt, .pth or .safetensors).

        Read by timm's ``load_state_dict`` (safetensors, ``state_dict``/``model`` wrappers, ``module.`` prefixes; the
        training weights, not EMA ones, as before). A full classifier's state dict is accepted: its head keys are
        ignored. Nothing is downloaded.
        """
        from timm.models import clean_state_dict, load_state_dict

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file {path} does not exist")
        try:
            state = load_state_dict(str(path), use_ema=False, weights_only=True)
        except Exception as e:  # timm's and torch's messages name no file (a tensor alone gives an AttributeError)
            raise ValueError(
                f"backbone weights file {path} is not a readable state dict ({type(e).__name__}: {e})"
            ) from e
        if isinstance(state.get("model_state_dict"), dict):  # the PyTorch tutorials' checkpoint, unknown to timm
            state = clean_state_dict(state["model_state_dict"])
        own = self.body.state_dict()
        matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not matched:
            raise ValueError(f"backbone weights file {path} has no tensor matching timm '{self.name}' (wrong model?)")
        self.body.load_state_dict(matched, strict=False)
        log = LOGGER.info if len(matched) == len(own) else LOGGER.warning  # a partial match is likely another model
        log(f"TimmBackbone '{self.name}': loaded {len(matched)}/{len(own)} tensors from {path}")


def feature_indices(name: str, strides: tuple[int, ...]) -> tuple[int, ...]:
    """Return the timm ``out_indices`` of ``name`` whose reductions equal ``strides``."""
    reductions = feature_info(name).reduction()
    missing = [s for s in strides if s not in reductions]
    if missing:
        raise ValueError(f"timm model '{name}' has no feature map at stride {missing}; it offers strides {reductions}")
    return tuple(reductions.index(s) for s in strides)


@cache
def feature_info(name: str) -> FeatureInfo:
    """Return timm's feature metadata of model ``name`` in ``features_only`` mode (``channels()``, ``reduction()``).

    Built on the meta device, so it costs no memory or weight initialisation.
    """
    import timm

    if not timm.is_model(name):
        raise ValueError(f"'{name}' is not a timm model name (see timm.list_models())")
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False, features_only=True).feature_info


def register_modules() -> None:
    """Make the plugin's layers resolvable by name in model YAMLs (``parse_model`` looks names up in its module)."""
    from ultralytics.nn import tasks

    tasks.TimmBackbone = TimmBackbone
