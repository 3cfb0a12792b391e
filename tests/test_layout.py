"""The package layout: checkpoints written before it still load, predict and resume; imports only go down the layers."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from ultralytics import YOLO

from smartcash_ultra import resume_training
from smartcash_ultra._moved import MOVED
from smartcash_ultra.nn import SmartCashDetectionModel, TimmBackbone

FIXTURE = Path(__file__).parent / "fixtures/pre_layout_last.pt"
"""Written at f413e07 by ``fixtures/make_pre_layout_checkpoint.py``: its pickle names the flat layout's paths."""
LAYERS = ["utils", ("nn", "data"), "callbacks", "engine", "tools", ("integration", "_startup", "__init__")]
"""Bottom to top; a module may import from its own layer and the ones below (``_moved`` sits beside them all)."""


def test_fixture_pickles_the_old_class_paths():
    pickled = FIXTURE.read_bytes()
    assert b"smartcash_ultra.model" in pickled and b"TimmBackbone" in pickled
    assert b"smartcash_ultra.nn.model" not in pickled and b"smartcash_ultra.nn.backbone" not in pickled


def test_checkpoint_from_before_the_layout_loads_and_predicts(tiny_data):
    model = YOLO(FIXTURE)
    assert isinstance(model.model, SmartCashDetectionModel)
    assert any(isinstance(m, TimmBackbone) for m in model.model.model)
    arrays = sorted((tiny_data.parent / "test/images").glob("*.npy"))
    results = model.predict([str(p) for p in arrays], imgsz=64, verbose=False)
    assert [Path(r.path).name for r in results] == [p.name for p in arrays]
    assert all(r.boxes is not None for r in results)


@pytest.mark.slow
def test_checkpoint_from_before_the_layout_resumes(tiny_data, tmp_path):
    last = tmp_path / "old/weights/last.pt"
    last.parent.mkdir(parents=True)
    shutil.copyfile(FIXTURE, last)
    result = resume_training(
        last, additional_epochs=1, overrides={"data": str(tiny_data), "save_dir": str(tmp_path / "old")}
    )
    assert result.last == last and result.best.exists()
    reloaded = YOLO(result.last).ckpt
    assert reloaded["epoch"] == 1 and reloaded["optimizer"] is not None  # the added epoch, kept extendable
    assert np.isfinite(result.metrics["metrics/mAP50(B)"])


def test_every_old_module_path_is_its_new_module():
    import importlib

    for old, new in MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new), old


@pytest.mark.slow
def test_old_module_paths_still_run_with_python_m(tmp_path):
    args = ["--n-train", "1", "--n-valid", "1", "--n-test", "0", "--imgsz", "64"]
    run = subprocess.run(
        [sys.executable, "-m", "smartcash_ultra.sample_data", str(tmp_path / "sample"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "sample/data.yaml").is_file()


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for i, layer in enumerate(LAYERS):
        if top in ((layer,) if isinstance(layer, str) else layer):
            return i
    raise AssertionError(f"{module} is in no layer")


def test_imports_only_go_down_the_layers():
    package = ROOT / "smartcash_ultra"
    upward = []
    for path in package.rglob("*.py"):
        module = ".".join(("smartcash_ultra", *path.relative_to(package).with_suffix("").parts))
        if module.endswith("._moved"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("smartcash_ultra."):
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("smartcash_ultra.")]
            upward += [f"{module} -> {t}" for t in targets if _layer(t) > _layer(module) and "._moved" not in t]
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_dir_lists_the_public_names():
    import smartcash_ultra

    assert set(smartcash_ultra.__all__) <= set(dir(smartcash_ultra))  # tab completion offers them
