"""Model layers the SmartCash YAMLs name, registered with Ultralytics' ``parse_model``.

``TimmBackbone`` wraps any timm model in ``features_only`` mode and returns the feature maps at the requested strides;
Ultralytics' own ``Index`` layers then pick each map for the neck. Channel counts come from timm's ``feature_info``,
so any timm backbone name works from the model YAML.
"""

from __future__ import annotations

import hashlib
import weakref
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from ultralytics.utils import LOGGER

from smartcash_ultra.utils.errors import SmartCashError

if TYPE_CHECKING:
    from timm.models import FeatureInfo


class BackboneWeightsError(SmartCashError, RuntimeError):
    """The backbone weights asked for cannot be had; the message names them and how to supply them."""


class TimmBackbone(nn.Module):
    """A timm backbone returning ``[P3, P4, P5]``-style feature maps for the given strides.

    Input is RGB in 0..1 (what the Ultralytics pipeline feeds); the normalisation the weights were trained with is
    applied inside, from the ``pretrained_cfg`` of the weights loaded (timm's for the name, or the one declared with a
    weights file). The ``mean``/``std`` buffers travel in every checkpoint with the weights they belong to.
    """

    def __init__(self, name: str, strides: list[int] | tuple[int, ...] = (8, 16, 32)):
        """Build ``timm.create_model(name, features_only=True)`` at random init; weights come from the load methods."""
        super().__init__()
        self.name, self.strides = name, tuple(int(s) for s in strides)
        self.body = self._create(pretrained=False)
        self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
        self.register_buffer("std", torch.ones(1, 3, 1, 1))
        self._set_normalisation()

    @property
    def channels(self) -> list[int]:
        return list(self.body.feature_info.channels())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Normalise and return the feature maps, shallowest first."""
        return self.body((x - self.mean) / self.std)

    def load_timm_weights(self) -> None:
        """Load timm's pretrained weights for the name (a tag such as ``.ra2_in1k`` picks them) through timm itself.

        timm fetches them from the Hugging Face hub, or offline (``HF_HUB_OFFLINE=1``) from its local cache.

        Raises:
            BackboneWeightsError: naming the weights and how to supply them, when timm has none for the name or they
                cannot be fetched.
        """
        if self._copy_as_read("timm"):
            return
        cfg = self.body.pretrained_cfg or {}
        where = cfg.get("hf_hub_id") or cfg.get("url")
        if not where:
            raise BackboneWeightsError(
                f"TimmBackbone '{self.name}': smartcash.backbone_weights 'timm' asks for timm's pretrained weights, "
                f"but timm has none for '{self.name}' (see timm.list_pretrained()). {SUPPLY}"
            )
        try:
            body = self._create(pretrained=True)
        except Exception as e:  # offline without a cached copy, no network, a bad tag, ...
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise BackboneWeightsError(
                f"TimmBackbone '{self.name}': smartcash.backbone_weights 'timm' asks for timm's pretrained weights "
                f"{where}, which could not be loaded ({type(e).__name__}: {first}). With internet they are fetched "
                f"once into the Hugging Face cache (HF_HOME); offline they must be in it already. {SUPPLY}"
            ) from None
        self.body = body
        self._set_normalisation()
        self._remember_as_read("timm")
        LOGGER.info(f"TimmBackbone '{self.name}': timm's pretrained weights {where} ({self.normalisation()})")

    def load(
        self,
        path: str | Path,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
    ) -> None:
        """Load backbone weights from a local file (a timm/torchvision state dict: .pt, .pth or .safetensors).

        Read by timm's ``load_state_dict`` (safetensors, ``state_dict``/``model`` wrappers, ``module.`` prefixes; the
        training weights, not EMA ones). A full classifier's state dict is accepted: its head keys are ignored.
        ``mean``/``std`` declare the normalisation the weights were trained with (as timm's ``pretrained_cfg_overlay``);
        without them the file is taken to hold weights of the name's timm pretrained tag, normalised as timm's are.
        """
        from timm.models import clean_state_dict, load_state_dict

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file {path} does not exist. {SUPPLY}")
        stat = path.stat()
        source = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, tuple(mean or ()), tuple(std or ()))
        if self._copy_as_read(source):
            return
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
        overlay = {"file": str(path), **({"mean": tuple(mean)} if mean else {}), **({"std": tuple(std)} if std else {})}
        self.body.pretrained_cfg = {**(self.body.pretrained_cfg or {}), **overlay}  # timm's pretrained_cfg_overlay
        self.body.load_state_dict(matched, strict=False)
        self._set_normalisation()
        self._remember_as_read(source)
        log = LOGGER.info if len(matched) == len(own) else LOGGER.warning  # a partial match is likely another model
        log(
            f"TimmBackbone '{self.name}': loaded {len(matched)}/{len(own)} tensors from {path} ({self.normalisation()})"
        )

    def normalisation(self) -> str:
        """Describe the input normalisation, e.g. ``mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)``."""
        mean, std = (tuple(round(float(v), 4) for v in t.flatten()) for t in (self.mean, self.std))
        return f"mean {mean}, std {std}"

    def fuse(self) -> int:
        """Fold each BatchNorm into the convolution declared just before it in the same module; return how many.

        timm declares a convolution and the BatchNorm that reads its output side by side (``conv_pw``, ``bn1``), so
        that pairing covers its families; torch's ``fuse_conv_bn_weights`` does the arithmetic, and a timm
        ``BatchNormAct2d`` leaves its activation in its place. The fused backbone is checked against the unfused one
        on a random input and left unfused, with a warning, if they disagree (a family wired otherwise). Call in eval
        mode, for inference, as Ultralytics' own ``fuse()``.
        """
        import copy

        from timm.layers import BatchNormAct2d
        from torch.nn.utils.fusion import fuse_conv_bn_weights

        pairs = []
        for parent in self.body.modules():
            for (_, conv), (name, bn) in pairwise(parent.named_children()):
                if isinstance(conv, nn.Conv2d) and type(bn) in (nn.BatchNorm2d, BatchNormAct2d):
                    pairs.append((parent, conv, name, bn))
        if not pairs:
            return 0
        training, before = self.body.training, copy.deepcopy(self.body)
        self.body.eval()
        x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(self.mean.device, self.mean.dtype)
        with torch.no_grad():
            expected = self(x)
            for parent, conv, name, bn in pairs:
                conv.weight, conv.bias = fuse_conv_bn_weights(
                    conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
                )
                conv.requires_grad_(False)
                setattr(parent, name, nn.Sequential(bn.drop, bn.act) if type(bn) is BatchNormAct2d else nn.Identity())
            got = self(x)
        fused = all(
            torch.allclose(a, b, rtol=1e-3, atol=1e-4 * float(a.abs().max()) + 1e-6)
            for a, b in zip(expected, got, strict=True)
        )
        if not fused:
            self.body = before
            LOGGER.warning(f"TimmBackbone '{self.name}': BatchNorm not fused (fused outputs differ); left as it was")
        self.body.train(training)
        return len(pairs) if fused else 0

    def _remember_as_read(self, source: object) -> None:
        """Record that this backbone holds the weights of ``source`` as read, for the next build of the same model."""
        _AS_READ[(self.name, self.strides, source)] = (weakref.ref(self), fingerprint(self))

    def _copy_as_read(self, source: object) -> bool:
        """Take the weights of ``source`` from a live backbone that read them and still holds them unchanged.

        Ultralytics builds a model twice per run (``YOLO()``, then the trainer for the data's classes): the second
        build copies the first's backbone instead of reading the hub or the file again. A backbone trained, fused or
        changed since its read no longer matches its fingerprint and is no source.
        """
        ref, then = _AS_READ.get((self.name, self.strides, source), (None, None))
        earlier = ref() if ref is not None else None
        if earlier is None or earlier is self or fingerprint(earlier) != then:
            return False
        self.body.load_state_dict(earlier.body.state_dict())
        self.body.pretrained_cfg = dict(earlier.body.pretrained_cfg or {})
        self._set_normalisation()
        LOGGER.info(
            f"TimmBackbone '{self.name}': weights copied from the model built before, which read them "
            f"({self.normalisation()}); not read again"
        )
        return True

    def _create(self, pretrained: bool) -> nn.Module:
        import timm

        out_indices = feature_indices(self.name, self.strides)
        return timm.create_model(self.name, pretrained=pretrained, features_only=True, out_indices=out_indices)

    def _set_normalisation(self) -> None:
        """Set the ``mean``/``std`` buffers from the body's ``pretrained_cfg`` (ImageNet's when it names none)."""
        cfg = self.body.pretrained_cfg or {}
        self.mean.copy_(torch.tensor(cfg.get("mean", IMAGENET_MEAN), dtype=self.mean.dtype).view(1, -1, 1, 1))
        self.std.copy_(torch.tensor(cfg.get("std", IMAGENET_STD), dtype=self.std.dtype).view(1, -1, 1, 1))


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_AS_READ: dict[tuple, tuple[weakref.ref, str]] = {}
"""(timm name, strides, weights source) -> the backbone that last read them and its :func:`fingerprint` then."""


def fingerprint(module: nn.Module) -> str:
    """Return a digest of every tensor of ``module``'s state (names, dtypes, bytes): equal only for equal weights."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


SUPPLY = (
    "Supply the weights as a local file (smartcash.backbone_weights: path/to/weights.safetensors, .pth or .pt; "
    "{file: ..., mean: [...], std: [...]} declares their normalisation) or train from random init "
    "(smartcash.backbone_weights: null), in a copy of the model YAML: `smartcash-ultra copy-cfg "
    "smartcash_effb4_yolov5.yaml` writes one into the current folder, where it wins over the shipped one."
)
"""How to supply backbone weights, said by every error about them."""


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
