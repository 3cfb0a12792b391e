"""The SmartCash models build through Ultralytics' parse_model with the right channels, strides and shapes."""

from __future__ import annotations

import logging

import pytest
import timm
import torch
import yaml
from conftest import CSP_N_YAML, EFFB4_SHIPPED, ROOT, effb4_yaml

from smartcash_ultra.nn.backbone import TimmBackbone, feature_info
from smartcash_ultra.nn.model import SmartCashDetectionModel, resolve_model_yaml


def detect_feature_shapes(model, imgsz: int) -> list[tuple[int, ...]]:
    """Shapes of the three maps the Detect head receives, via its forward pre-hook."""
    shapes = []
    handle = model.model[-1].register_forward_pre_hook(lambda m, x: shapes.extend(tuple(t.shape) for t in x[0]))
    model.eval()
    with torch.no_grad():
        model(torch.rand(2, 3, imgsz, imgsz))
    handle.remove()
    return shapes


@pytest.mark.slow
def test_effb4_backbone_channels_strides_and_head_shapes(effb4_random):
    model = SmartCashDetectionModel(effb4_random, nc=17, verbose=False)
    backbone = model.model[0]
    assert isinstance(backbone, TimmBackbone)
    assert backbone.channels == [56, 160, 448]  # efficientnet_b4 P3/P4/P5, from timm's feature_info
    assert [model.yaml["backbone"][i][3][0] for i in (1, 2, 3)] == [56, 160, 448]  # null Index channels filled
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    feats = backbone(torch.rand(1, 3, 128, 128))
    assert [tuple(f.shape[1:]) for f in feats] == [(56, 16, 16), (160, 8, 8), (448, 4, 4)]
    shapes = detect_feature_shapes(model, 128)
    assert [s[2:] for s in shapes] == [(16, 16), (8, 8), (4, 4)]
    model.eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 128, 128))[0]
    assert tuple(y.shape) == (1, 4 + 17, 16 * 16 + 8 * 8 + 4 * 4)  # boxes + class scores per anchor point


@pytest.mark.parametrize(("name", "scale", "width"), [("yolov5n", "n", 0.25), ("yolov5s", "s", 0.50)])
def test_cspdarknet_scales(name, scale, width):
    model = SmartCashDetectionModel(ROOT / f"cfg/models/smartcash_cspdarknet_{name}.yaml", nc=7, verbose=False)
    assert model.yaml["scale"] == scale
    assert model.stride.tolist() == [8.0, 16.0, 32.0]
    assert model.model[0].conv.out_channels == int(64 * width)  # first Conv scaled by the width multiple
    assert [type(m).__name__ for m in model.model[:10]] == [
        "Conv",
        "Conv",
        "C3",
        "Conv",
        "C3",
        "Conv",
        "C3",
        "Conv",
        "C3",
        "SPPF",
    ]
    assert model.yaml["nc"] == 7 and model.model[-1].nc == 7
    assert [s[1:] for s in detect_feature_shapes(model, 64)] == [
        (int(256 * width), 8, 8),
        (int(512 * width), 4, 4),
        (int(1024 * width), 2, 2),
    ]


def test_cspdarknet_matches_stock_yolov5_layer_for_layer():
    from ultralytics.nn.tasks import DetectionModel

    ours = SmartCashDetectionModel(ROOT / "cfg/models/smartcash_cspdarknet_yolov5s.yaml", nc=17, verbose=False)
    stock = DetectionModel("yolov5s.yaml", nc=17, verbose=False)
    assert [type(m).__name__ for m in ours.model] == [type(m).__name__ for m in stock.model]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in stock.parameters())


@pytest.mark.slow
def test_info_reports_parameters_and_gflops(effb4_random):
    for cfg in (effb4_random, CSP_N_YAML):
        model = SmartCashDetectionModel(cfg, nc=17, verbose=False)
        n_layers, n_params, n_grads, gflops = model.info(imgsz=320)
        assert n_params == sum(p.numel() for p in model.parameters()) > 1_000_000
        assert gflops > 0.5


def test_any_timm_backbone_from_yaml():
    d = yaml.safe_load(EFFB4_SHIPPED.read_text())
    d["backbone"][0][3][0] = "resnet18"
    d["smartcash"]["backbone_weights"] = None
    model = SmartCashDetectionModel(d, nc=3, verbose=False)
    assert model.model[0].channels == [128, 256, 512] == feature_info("resnet18").channels()[2:]
    assert model.stride.tolist() == [8.0, 16.0, 32.0]


def test_wrong_declared_channels_and_missing_section_are_named_errors(tmp_path):
    d = yaml.safe_load(EFFB4_SHIPPED.read_text())
    d["backbone"][2][3][0] = 99
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match=r"bad\.yaml: layer 2 declares 99 channels .* gives 160"):
        resolve_model_yaml(bad)
    d = yaml.safe_load(EFFB4_SHIPPED.read_text())
    del d["smartcash"]
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError, match=r"plain\.yaml: not a SmartCash model YAML"):
        resolve_model_yaml(plain)
    d = yaml.safe_load(EFFB4_SHIPPED.read_text())
    d["backbone"][0][3][1] = [8, 16, 64]
    d["smartcash"]["backbone_weights"] = None
    with pytest.raises(ValueError, match="no feature map at stride"):
        SmartCashDetectionModel(d, verbose=False)


def test_imagenet_normalisation_inside_backbone():
    backbone = TimmBackbone("efficientnet_b4")
    backbone.eval()
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        ours, direct = backbone(x), backbone.body((x - mean) / std)
    for a, b in zip(ours, direct, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_pretrained_backbone_from_local_file(tmp_path, caplog):
    classifier = timm.create_model("efficientnet_b4", pretrained=False)
    torch.nn.init.normal_(classifier.conv_stem.weight)
    weights = tmp_path / "effb4_imagenet.pth"
    torch.save({"state_dict": classifier.state_dict()}, weights)  # a full classifier, wrapped: head keys ignored
    d = yaml.safe_load(EFFB4_SHIPPED.read_text())
    d["smartcash"]["backbone_weights"] = str(weights)
    with caplog.at_level(logging.INFO, logger="ultralytics"):
        model = SmartCashDetectionModel(d, nc=17, verbose=False)
    torch.testing.assert_close(model.model[0].body.conv_stem.weight, classifier.conv_stem.weight)
    n = len(model.model[0].body.state_dict())
    assert f"loaded {n}/{n} tensors" in caplog.text and not [r for r in caplog.records if r.levelname == "WARNING"]

    partial = {k: v for k, v in classifier.state_dict().items() if k.startswith("conv_stem")}
    torch.save(partial, tmp_path / "partial.pth")
    d["smartcash"]["backbone_weights"] = str(tmp_path / "partial.pth")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ultralytics"):
        SmartCashDetectionModel(d, nc=17, verbose=False)
    assert [r.levelname for r in caplog.records if f"loaded 1/{n} tensors" in r.message] == ["WARNING"]

    backbone = model.model[0]  # the PyTorch tutorials' wrapper around a DDP state dict
    torch.save({"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in partial.items()}}, tmp_path / "t.pt")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ultralytics"):
        backbone.load(tmp_path / "t.pt")
    assert f"loaded 1/{n} tensors from {tmp_path / 't.pt'}" in caplog.text
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(ValueError, match=r"tensor\.pt is not a readable state dict \(AttributeError"):
        backbone.load(tmp_path / "tensor.pt")

    d["smartcash"]["backbone_weights"] = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth does not exist"):
        SmartCashDetectionModel(d, verbose=False)
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "other.pth")
    d["smartcash"]["backbone_weights"] = str(tmp_path / "other.pth")
    with pytest.raises(ValueError, match="no tensor matching timm 'efficientnet_b4'"):
        SmartCashDetectionModel(d, verbose=False)


@pytest.mark.slow
def test_random_init_is_announced_once(caplog, effb4_random):
    from smartcash_ultra import model as model_module

    model_module._announced_random_init.discard("efficientnet_b4")
    with caplog.at_level(logging.INFO, logger="ultralytics"):
        for _ in range(2):
            SmartCashDetectionModel(effb4_random, verbose=False)
    assert caplog.text.count("TimmBackbone 'efficientnet_b4': random init") == 1


@pytest.mark.parametrize("name", ["test_efficientnet", "tf_efficientnet_lite0", "resnet18"])
def test_fuse_folds_the_timm_backbones_batchnorm_with_the_same_outputs(name, tmp_path):
    model = SmartCashDetectionModel(effb4_yaml(tmp_path, backbone=name), nc=17, verbose=False)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():  # trained-looking statistics: random init's (0, 1, 1, 0) would fold to nearly nothing
        if isinstance(m, torch.nn.BatchNorm2d):
            for t, (lo, hi) in zip((m.running_mean, m.running_var, m.weight.data, m.bias.data), RANGES, strict=True):
                t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    model.eval()
    x = torch.rand(2, 3, 96, 96, generator=g)
    with torch.no_grad():
        expected = model(x)[0]
    n = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.model[0].modules())
    assert n >= 12
    model.fuse(verbose=False)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # backbone and neck alike
    with torch.no_grad():
        got = model(x)[0]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_fuse_leaves_a_backbone_wired_otherwise_as_it_was(caplog):
    class Wired(torch.nn.Module):  # a BatchNorm declared after a convolution that reads something else
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3)
            self.bn.running_mean.fill_(0.5), self.bn.running_var.fill_(2.0)

        def forward(self, x):
            return [self.conv(self.bn(x))]

    backbone = TimmBackbone("test_efficientnet")
    backbone.body = Wired()
    with caplog.at_level(logging.WARNING, logger="ultralytics"):
        assert backbone.fuse() == 0
    assert isinstance(backbone.body.bn, torch.nn.BatchNorm2d) and backbone.body.training  # as it was
    assert "BatchNorm not fused (fused outputs differ)" in caplog.text


def test_every_shipped_yaml_has_a_name_of_its_own():
    from ultralytics.nn.tasks import yaml_model_load

    names = [p.name for p in (ROOT / "cfg").rglob("*.y*ml")]
    assert len(names) == len(set(names))  # a name means one file: a model YAML or a training cfg
    assert yaml_model_load(EFFB4_SHIPPED)["scale"] == ""  # no scale letter after a digit: loads as named


RANGES = ((-0.5, 0.5), (0.5, 2.0), (0.5, 1.5), (-0.5, 0.5))
"""Ranges of running mean, running variance, weight and bias drawn for every BatchNorm of a fusing test."""
