"""What a user reaches for first: copying a shipped YAML to edit, and where ``pretrained=`` goes."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import ROOT

from smartcash_ultra.tools.cli import main
from smartcash_ultra.utils.shipped import find_shipped_yaml

SHIPPED = ROOT / "cfg"


def test_copy_cfg_writes_a_shipped_yaml_here_that_then_wins_over_the_shipped_one(tmp_path, monkeypatch, capsys):
    from ultralytics import YOLO

    monkeypatch.chdir(tmp_path)
    assert main(["copy-cfg", "smartcash_effb4_yolov5.yaml"]) == 0
    copy = tmp_path / "smartcash_effb4_yolov5.yaml"
    assert copy.read_bytes() == (SHIPPED / "models/smartcash_effb4_yolov5.yaml").read_bytes()
    assert "yolo train model=smartcash_effb4_yolov5.yaml" in capsys.readouterr().out
    assert main(["copy-cfg", "smartcash_effb4.yaml"]) == 0
    assert (tmp_path / "smartcash_effb4.yaml").read_bytes() == (SHIPPED / "smartcash_effb4.yaml").read_bytes()
    assert "yolo train cfg=smartcash_effb4.yaml" in capsys.readouterr().out

    # the docs' offline recipe: random init (or a file) in the copy; the shipped one would ask the hub
    d = yaml.safe_load(copy.read_text())
    d["smartcash"]["backbone_weights"] = None
    copy.write_text(yaml.safe_dump(d, sort_keys=False))
    model = YOLO("smartcash_effb4_yolov5.yaml")
    assert model.model.yaml["smartcash"]["backbone_weights"] is None


def test_copy_cfg_never_overwrites_and_names_the_file_or_the_shipped_names(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "smartcash_cspdarknet.yaml"
    mine.write_text("# my edits\n")
    assert main(["copy-cfg", "smartcash_cspdarknet.yaml"]) == 2
    assert mine.read_text() == "# my edits\n"
    assert "smartcash_cspdarknet.yaml already exists: not overwritten" in capsys.readouterr().err
    assert main(["copy-cfg", "smartcash_*.yaml"]) == 2  # a name, not a pattern
    assert "smartcash_*.yaml is no shipped YAML" in capsys.readouterr().err
    assert find_shipped_yaml("smartcash_*.yaml") is None and find_shipped_yaml("smartcash_effb4.yaml")
    assert main(["copy-cfg", "yolov8n.yaml"]) == 2
    err = capsys.readouterr().err
    assert "yolov8n.yaml is no shipped YAML" in err and "smartcash_cspdarknet_yolov5.yaml" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smartcash_cspdarknet.yaml"]


def test_stripping_best_logs_the_file_it_leaves_not_the_temp_file_it_wrote(cspdarknet_run, tmp_path, log_lines):
    import shutil

    import ultralytics.engine.trainer as engine

    from smartcash_ultra.engine.checkpoints import keep_last_whole

    best = tmp_path / "weights/best.pt"
    best.parent.mkdir()
    shutil.copy(cspdarknet_run.result.last, best)  # whole: its optimizer is stripped now
    with keep_last_whole(tmp_path / "weights/last.pt"):
        engine.strip_optimizer(best)
    said = [line for line in log_lines if "Optimizer stripped" in line]
    assert said and said[0].startswith(f"Optimizer stripped from {best}, "), said
    assert ".tmp" not in said[0]
    assert sorted(p.name for p in best.parent.iterdir()) == ["best.pt"]


def test_the_shipped_cfgs_missing_sample_data_says_how_to_write_it(tmp_path, monkeypatch):
    from conftest import CSP_N_YAML

    from smartcash_ultra import SmartCashTrainer

    monkeypatch.chdir(tmp_path)  # an empty folder: the shipped cfg names data/sample/data.yaml
    with pytest.raises(RuntimeError) as e:
        SmartCashTrainer("smartcash_cspdarknet.yaml", overrides={"model": str(CSP_N_YAML)})
    assert "'data/sample/data.yaml' does not exist" in str(e.value)
    assert "python -m smartcash_ultra.tools.sample_data data/sample" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_build_dataloaders_builds_the_loaders_a_training_builds_without_a_run(
    cspdarknet_run, tiny_data, tmp_path, monkeypatch
):
    from smartcash_ultra import SmartCashDataset, build_dataloaders

    monkeypatch.chdir(tmp_path)
    trainer = cspdarknet_run.trainer  # trained with FAST: imgsz 64, batch 4, no workers
    loaders = build_dataloaders(tiny_data, imgsz=64, batch=4, workers=0)
    assert list(loaders) == ["train", "val", "test"]
    for ours, theirs in ((loaders["train"], trainer.train_loader), (loaders["val"], trainer.test_loader)):
        a, b = ours.dataset, theirs.dataset
        assert isinstance(a, SmartCashDataset) and a.im_files == b.im_files
        assert (ours.batch_size, ours.num_workers, a.augment, a.rect, a.imgsz) == (
            theirs.batch_size,
            theirs.num_workers,
            b.augment,
            b.rect,
            b.imgsz,
        )
        names = [[type(t).__name__ for t in d.transforms.transforms] for d in (a, b)]
        assert names[0] == names[1]
    first, expected = next(iter(loaders["val"])), next(iter(trainer.test_loader))
    assert torch.equal(first["img"], expected["img"]) and torch.equal(first["bboxes"], expected["bboxes"])
    assert len(loaders["test"].dataset) == 2 and not loaders["test"].dataset.augment
    with pytest.raises(KeyError, match="names no 'extra' split"):
        build_dataloaders(tiny_data, imgsz=64, batch=4, splits=("extra",))
    assert list(tmp_path.iterdir()) == []  # no run folder


def test_pretrained_never_feeds_the_backbone_a_timm_file_is_refused_before_anything_is_built(
    tmp_path, tiny_data, monkeypatch
):
    from conftest import FAST, effb4_yaml
    from ultralytics import YOLO

    from smartcash_ultra.nn.model import SmartCashDetectionModel

    weights = tmp_path / "efficientnet_b4.safetensors"
    weights.write_bytes(b"")
    model = YOLO(effb4_yaml(tmp_path, backbone_weights=None))  # yolo builds the model YAML first, as given
    builds = []
    init = SmartCashDetectionModel.__init__
    monkeypatch.setattr(
        SmartCashDetectionModel, "__init__", lambda self, *a, **k: builds.append(1) or init(self, *a, **k)
    )
    project = tmp_path / "runs"
    with pytest.raises(ValueError, match=f"pretrained={weights}: .*smartcash.backbone_weights: <file>"):
        model.train(data=str(tiny_data), pretrained=str(weights), epochs=1, project=str(project), **FAST)
    assert builds == [] and not project.exists()  # no model built, no run folder made
