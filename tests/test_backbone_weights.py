"""Where the timm backbone's weights come from: timm (the Hugging Face cache, simulated here), a file, or nowhere.

The hub is never reached: ``timm`` weights come from a hub cache written into a temporary ``HF_HOME`` in the layout
huggingface_hub reads offline (``HF_HUB_OFFLINE=1``, set by conftest). Fast tests use timm's tiny
``test_efficientnet`` (82 k parameters, weights ``timm/test_efficientnet.r160_in1k``); one slow test does the same
with ``efficientnet_b4`` in a fresh process, as a user's machine would.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import timm
import torch
import yaml
from conftest import CSP_N_YAML, EFFB4_SHIPPED, FAST, ROOT, effb4_yaml, hub_cache, run_python, run_yolo

from smartcash_ultra.nn.backbone import BackboneWeightsError
from smartcash_ultra.nn.model import SmartCashDetectionModel

TINY = "test_efficientnet"  # timm's test model: strides 8/16/32 at 32/48/64 channels
TINY_HUB = "timm/test_efficientnet.r160_in1k"


def distinct_classifier(name: str) -> dict[str, torch.Tensor]:
    """A classifier state dict that random init cannot reproduce: every tensor offset by a seeded draw."""
    g = torch.Generator().manual_seed(7)
    state = timm.create_model(name).state_dict()
    return {
        k: v + torch.rand(v.shape, generator=g) if v.is_floating_point() else v + 3 for k, v in state.items()
    }  # BN running_var stays positive


@pytest.fixture
def hf_home(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face home for this test: huggingface_hub's cache constant points into it."""
    import huggingface_hub.constants

    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(home / "hub"))  # read at import time
    return home


def assert_backbone_equals(model: SmartCashDetectionModel, state: dict[str, torch.Tensor]) -> None:
    body = model.model[0].body.state_dict()
    assert body and all(torch.equal(v, state[k]) for k, v in body.items())


@pytest.mark.parametrize("name", [TINY, f"{TINY}.r160_in1k"])
@pytest.mark.parametrize("setting", ["timm", True])
def test_timm_weights_come_from_the_hugging_face_cache(name, setting, hf_home, tmp_path, caplog):
    state = distinct_classifier(TINY)
    hub_cache(hf_home, TINY_HUB, state)
    yaml_path = effb4_yaml(tmp_path, backbone_weights=setting, backbone=name)
    with caplog.at_level(logging.INFO, logger="ultralytics"):
        model = SmartCashDetectionModel(yaml_path, nc=17, verbose=False)
    assert_backbone_equals(model, state)  # timm's own loading, from the cache, in place once the model is built
    backbone = model.model[0]
    assert backbone.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])  # the r160_in1k config's
    assert f"timm's pretrained weights {TINY_HUB}" in caplog.text


def test_missing_timm_weights_stop_with_one_message_naming_them_and_the_ways_out(hf_home, tmp_path):
    with pytest.raises(BackboneWeightsError) as e:
        SmartCashDetectionModel(effb4_yaml(tmp_path, backbone_weights="timm", backbone=TINY), verbose=False)
    message = str(e.value)
    assert TINY_HUB in message and "could not be loaded" in message
    assert "local file" in message and "smartcash.backbone_weights: null" in message
    assert e.value.__cause__ is None and e.value.__suppress_context__  # one message, not a chain of hub errors

    untrained = effb4_yaml(tmp_path / "untrained", backbone_weights="timm", backbone="efficientnet_b0_gn")
    with pytest.raises(BackboneWeightsError, match="timm has none for 'efficientnet_b0_gn'"):
        SmartCashDetectionModel(untrained, verbose=False)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("hf-hub:timm/efficientnet_b4.ra2_in1k", "a tag picking the weights"),
        ({"mean": [0.5, 0.5, 0.5]}, "needs 'file'"),
        ({"file": "w.pth", "std": [0.5, 0.5]}, r"backbone_weights\.std must be three numbers"),
        (3, "must be 'timm', a weights file"),
    ],
)
def test_unusable_weights_settings_are_named(value, problem, tmp_path):
    with pytest.raises(ValueError, match=problem):
        SmartCashDetectionModel(effb4_yaml(tmp_path, backbone_weights=value, backbone=TINY), verbose=False)


def test_a_tagged_name_at_random_init_says_what_the_tag_needs(tmp_path, caplog):
    from smartcash_ultra.nn import model as model_module

    model_module._announced_random_init.discard(f"{TINY}.r160_in1k")
    with caplog.at_level(logging.INFO, logger="ultralytics"):
        SmartCashDetectionModel(effb4_yaml(tmp_path, backbone=f"{TINY}.r160_in1k"), verbose=False)
    assert "random init (smartcash.backbone_weights is null; the tag '.r160_in1k' picks timm's weights with " in (
        caplog.text
    )


def test_a_weights_file_brings_its_declared_normalisation(tmp_path):
    state = distinct_classifier(TINY)
    file = tmp_path / "weights.safetensors"
    from safetensors.torch import save_file

    save_file(state, str(file))
    declared = {"file": str(file), "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
    model = SmartCashDetectionModel(effb4_yaml(tmp_path / "a", backbone_weights=declared, backbone=TINY), verbose=False)
    assert_backbone_equals(model, state)
    backbone = model.model[0].eval()
    assert backbone.mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])
    assert backbone.std.flatten().tolist() == pytest.approx([0.2, 0.25, 0.3])
    x = torch.rand(1, 3, 64, 64)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    with torch.no_grad():
        for a, b in zip(backbone(x), backbone.body((x - mean) / std), strict=True):
            torch.testing.assert_close(a, b)
    plain = SmartCashDetectionModel(effb4_yaml(tmp_path / "b", backbone_weights=str(file), backbone=TINY))
    assert plain.model[0].mean.flatten().tolist() == pytest.approx(timm.create_model(TINY).pretrained_cfg["mean"])


def test_a_checkpoint_model_is_rebuilt_without_reading_the_weights_file(tmp_path, tiny_data, caplog):
    from smartcash_ultra.engine.trainer import SmartCashTrainer

    state = distinct_classifier(TINY)
    file = tmp_path / "weights.pth"
    torch.save(state, file)
    yaml_path = effb4_yaml(tmp_path, backbone_weights=str(file), backbone=TINY)
    trained = SmartCashDetectionModel(yaml_path, nc=17, verbose=False)
    file.unlink()  # another machine: the checkpoint travels, the weights file does not
    trainer = SmartCashTrainer(overrides={"model": str(yaml_path), "data": str(tiny_data), "project": str(tmp_path)})
    with caplog.at_level(logging.INFO, logger="ultralytics"):
        rebuilt = trainer.get_model(cfg=trained.yaml, weights=trained, verbose=False)
    assert "weights from the checkpoint (smartcash.backbone_weights is not read)" in caplog.text
    for k, v in trained.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k
    with pytest.raises(FileNotFoundError, match="weights.pth does not exist"):  # a fresh build still needs it
        trainer.get_model(cfg=trained.yaml, weights=None, verbose=False)


@pytest.mark.slow
def test_fine_tune_resume_and_extend_with_the_weights_file_gone(tmp_path, tiny_data):
    """The run of another machine: its checkpoints load, predict, validate, fine-tune, resume and extend here."""
    from ultralytics import YOLO

    from smartcash_ultra import SmartCashTrainer, resume_training

    file = tmp_path / "weights" / "tiny.pth"
    file.parent.mkdir()
    torch.save(distinct_classifier(TINY), file)
    fast = {"imgsz": 64, "batch": 4, "workers": 0, "plots": False, "data": str(tiny_data), "project": str(tmp_path)}
    model_yaml = effb4_yaml(tmp_path, backbone_weights=str(file), backbone=TINY)
    first = SmartCashTrainer(overrides={**fast, "model": str(model_yaml), "epochs": 2, "name": "first"})
    first.add_callback("on_train_epoch_end", lambda tr: tr.stop_training("leave it resumable") if tr.epoch == 0 else 0)
    result = first.train()  # stopped after epoch 1 of 2: last.pt can be resumed
    shutil.rmtree(file.parent)

    model = YOLO(result.best)
    assert model.predict(sorted((tiny_data.parent / "valid/images").glob("*.npy"))[0], imgsz=64, verbose=False)
    model.val(data=str(tiny_data), imgsz=64, batch=4, workers=0, plots=False)
    model.train(**fast, epochs=1, name="fine_tune")  # YOLO(best.pt).train(): a new run from the checkpoint
    resumed = SmartCashTrainer.resume(result.last).train()  # the interrupted run, to its end
    extended = resume_training(resumed.last, additional_epochs=1)  # and one epoch more
    assert torch.load(extended.last, weights_only=False)["epoch"] == 2


@pytest.mark.slow
def test_efficientnet_b4_weights_from_hf_home_in_a_fresh_process(tmp_path):
    """The shipped model YAML as it is (``backbone_weights: timm``) on a machine whose Hugging Face cache has them."""
    state = distinct_classifier("efficientnet_b4")  # ~75 MB, in the test's folder only
    file = hub_cache(tmp_path / "hf_home", "timm/efficientnet_b4.ra2_in1k", state)
    code = f"""
import json, torch
from safetensors.torch import load_file
from ultralytics import YOLO
m = YOLO({str(ROOT / "cfg/models/smartcash_effb4_yolov5.yaml")!r})
body = m.model.model[0].body.state_dict()
state = load_file({str(file)!r})
print(json.dumps(dict(n=len(body), equal=all(torch.equal(v, state[k]) for k, v in body.items()))))
"""
    proc = run_python(code, env={"HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {
        "n": 698,
        "equal": True,
    }  # every tensor of the features model
    assert "timm's pretrained weights timm/efficientnet_b4.ra2_in1k" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_shipped_cfg_without_the_weights_stops_before_training(tmp_path, tiny_data):
    """`yolo train cfg=cfg/smartcash_effb4.yaml` offline on a machine without timm's weights: one message, exit 1."""
    proc = run_yolo(
        "train",
        "cfg=cfg/smartcash_effb4.yaml",
        f"data={tiny_data}",
        "epochs=1",
        "imgsz=64",
        f"project={tmp_path}",
        env={"HF_HOME": str(tmp_path / "empty_hf_home"), "HF_HUB_OFFLINE": "1"},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.count("timm/efficientnet_b4.ra2_in1k, which could not be loaded") == 1
    assert "smartcash.backbone_weights: null" in out
    assert "Starting training" not in out and not (tmp_path / "train").exists()


def test_cspdarknet_takes_the_matching_layers_of_a_yolov5su_checkpoint(tmp_path, tiny_data, caplog):
    """CSPDarknet's counterpart of ImageNet weights: a user's ``yolov5su.pt``, made here by stock Ultralytics."""
    from ultralytics import YOLO

    from smartcash_ultra.engine.trainer import SmartCashTrainer

    stock = YOLO("yolov5su.yaml")  # the stock YOLOv5s (anchor-free head), 80 COCO classes, random init
    ckpt = tmp_path / "yolov5su.pt"
    stock.save(ckpt)
    csp_s = ROOT / "cfg/models/smartcash_cspdarknet_yolov5s.yaml"  # scale s from the name, as Ultralytics reads it
    trainer = SmartCashTrainer(
        ROOT / "cfg/smartcash_cspdarknet.yaml",
        overrides={"model": str(csp_s), "data": str(tiny_data), "pretrained": str(ckpt), "project": str(tmp_path)},
    )
    with caplog.at_level(logging.INFO, logger="ultralytics"):
        trainer.setup_model()
    ours = trainer.model.state_dict()
    theirs = torch.load(ckpt, weights_only=False)["model"].float().state_dict()  # as saved (fp16)
    different = sorted(k for k in ours if ours[k].shape != theirs[k].shape)  # the 80-class outputs of Detect
    assert different == [f"model.24.cv3.{i}.2.{p}" for i in range(3) for p in ("bias", "weight")]
    assert f"Transferred {len(ours) - 6}/{len(ours)} items from pretrained weights" in caplog.text
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k not in different)


def test_pretrained_takes_ultralytics_checkpoints_and_names_the_setting_for_timm_files(tmp_path, tiny_data):
    from smartcash_ultra.engine.trainer import SmartCashTrainer

    for name in ("model.safetensors", "timm_classifier.pth"):
        with pytest.raises(ValueError, match=f"pretrained={tmp_path / name}: .*smartcash.backbone_weights"):
            SmartCashTrainer(
                overrides={"model": str(CSP_N_YAML), "data": str(tiny_data), "pretrained": str(tmp_path / name)}
            )


def test_freeze_n_freezes_exactly_the_model_yamls_backbone_section(tmp_path, tiny_data):
    """Ultralytics' freeze=N is the way to freeze the backbone: N = 4 for EfficientNet-B4, 10 for CSPDarknet."""
    from ultralytics.utils.torch_utils import unwrap_model

    from smartcash_ultra.engine.trainer import SmartCashTrainer

    effb4 = effb4_yaml(tmp_path / "effb4", backbone_weights=None)
    for label, model_yaml, n in (("effb4", effb4, 4), ("cspdarknet", CSP_N_YAML, 10)):
        trainer = SmartCashTrainer(
            overrides={
                "model": str(model_yaml),
                "data": str(tiny_data),
                "freeze": n,
                **{"epochs": 1, "imgsz": 32, "batch": 2, "workers": 0, "plots": False},
                "project": str(tmp_path),
                "name": label,
            }
        )
        trainer._setup_train()  # where Ultralytics freezes
        model = unwrap_model(trainer.model)
        assert len(model.yaml["backbone"]) == n, label
        backbone = tuple(f"model.{i}." for i in range(n))
        names = [k for k, _ in model.named_parameters()]
        frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
        assert any(k.startswith(backbone) for k in names) and not all(k.startswith(backbone) for k in names), label
        # the backbone section and nothing else, but for Ultralytics' always-frozen DFL (no parameter of the backbone)
        assert frozen == {k for k in names if k.startswith(backbone) or ".dfl" in k}, label
    shipped = yaml.safe_load(EFFB4_SHIPPED.read_text())
    assert [layer[2] for layer in shipped["backbone"]] == ["TimmBackbone", "Index", "Index", "Index"]  # SPPF is new


def test_a_run_reads_the_backbone_weights_once_and_a_changed_model_is_never_their_source(
    hf_home, tmp_path, tiny_data, monkeypatch, caplog
):
    """``yolo train`` builds the model YAML (``YOLO()``), then the trainer builds it again for the data's classes."""
    from ultralytics import YOLO

    from smartcash_ultra.nn import backbone as module

    state = distinct_classifier(TINY)
    hub_cache(hf_home, TINY_HUB, state)
    reads = []
    create = module.TimmBackbone._create

    def counted(self, pretrained):
        reads.append(pretrained)
        return create(self, pretrained)

    monkeypatch.setattr(module.TimmBackbone, "_create", counted)
    yolo = YOLO(effb4_yaml(tmp_path, backbone_weights="timm", backbone=TINY))
    with caplog.at_level(logging.INFO, logger="ultralytics"):
        yolo.train(data=str(tiny_data), epochs=1, project=str(tmp_path / "runs"), **FAST)
    assert reads.count(True) == 1  # one read from the hub cache in the run
    assert "not read again" in caplog.text

    def build(folder: str) -> SmartCashDetectionModel:
        return SmartCashDetectionModel(effb4_yaml(tmp_path / folder, backbone_weights="timm", backbone=TINY))

    first = build("a")
    with torch.no_grad():
        next(first.model[0].body.parameters()).add_(1.0)  # trained, or changed by hand: no longer the weights
    read = reads.count(True)
    second = build("b")
    assert reads.count(True) == read + 1
    assert_backbone_equals(second, state)
    third = build("c")  # the second still holds them as read
    assert reads.count(True) == read + 1
    assert_backbone_equals(third, state)
    assert torch.equal(third.model[0].mean, second.model[0].mean)
