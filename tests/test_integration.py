"""Routing: SmartCash models get SmartCash classes, every other model stock ones, and the switch that turns it off.

The canaries of the Ultralytics internals this relies on are in ``test_patch_points.py``.
"""

from __future__ import annotations

import json

import pytest
from conftest import CSP_N_YAML, run_python
from ultralytics import YOLO
from ultralytics.models.yolo import detect
from ultralytics.nn import tasks

import smartcash_ultra  # noqa: F401  (importing the package installs the patch, as the start-up hook does)
from smartcash_ultra.engine.predictor import SmartCashPredictor
from smartcash_ultra.engine.trainer import SmartCashTrainer
from smartcash_ultra.engine.validator import SmartCashValidator
from smartcash_ultra.integration import install
from smartcash_ultra.nn.model import SmartCashDetectionModel


def test_smartcash_yaml_routes_to_smartcash_classes():
    model = YOLO(CSP_N_YAML)
    assert isinstance(model.model, SmartCashDetectionModel)
    assert model.task == "detect"
    assert model.task_map["detect"] == {
        "model": SmartCashDetectionModel,
        "trainer": SmartCashTrainer,
        "validator": SmartCashValidator,
        "predictor": SmartCashPredictor,
    }


def test_stock_models_keep_stock_classes():
    model = YOLO("yolov8n.yaml")
    assert type(model.model) is tasks.DetectionModel
    assert model.task_map["detect"] == {
        "model": tasks.DetectionModel,
        "trainer": detect.DetectionTrainer,
        "validator": detect.DetectionValidator,
        "predictor": detect.DetectionPredictor,
    }


def test_a_training_cfg_given_as_model_says_to_pass_it_as_cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # found by name, as from any folder
    with pytest.raises(
        ValueError, match="smartcash_effb4.yaml is a training cfg .* pass it as cfg=smartcash_effb4.yaml"
    ):
        YOLO("smartcash_effb4.yaml")


def test_install_is_idempotent():
    patched = YOLO.task_map.fget
    install()
    install()
    assert YOLO.task_map.fget is patched
    assert not getattr(patched.__wrapped__, "smartcash", False)  # wraps the stock property exactly once


@pytest.mark.slow
def test_startup_hook_patches_lazily_and_can_be_switched_off(effb4_random):
    probe = (
        "import json, sys; start = {'torch': 'torch' in sys.modules, 'ultralytics': 'ultralytics' in sys.modules}; "
        "from ultralytics import YOLO; "
        f"m = YOLO({str(effb4_random)!r}); "
        "print(json.dumps({**start, 'patched': getattr(YOLO.task_map.fget, 'smartcash', False), "
        "'model': type(m.model).__name__}))"
    )
    on = json.loads(run_python(probe).stdout.strip().splitlines()[-1])
    assert on == {"torch": False, "ultralytics": False, "patched": True, "model": "SmartCashDetectionModel"}
    off = run_python(probe, env={"SMARTCASH_ULTRA_DISABLE": "1"})
    assert "KeyError: 'TimmBackbone'" in off.stderr  # without the plugin Ultralytics cannot build the YAML
    stock = run_python(
        "from ultralytics import YOLO; print(getattr(YOLO.task_map.fget, 'smartcash', False))",
        env={"SMARTCASH_ULTRA_DISABLE": "1"},
    )
    assert stock.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.slow
def test_startup_hook_resolves_yaml_names_before_yolo_is_imported():
    probe = (
        "import sys; from ultralytics.cfg import entrypoint; from ultralytics.utils import checks; "
        "print(getattr(checks.check_file, 'smartcash', False), 'ultralytics.models.yolo.model' in sys.modules)"
    )
    assert run_python(probe).stdout.strip().splitlines()[-1] == "True False"
    assert run_python(probe, env={"SMARTCASH_ULTRA_DISABLE": "1"}).stdout.strip().splitlines()[-1] == "False False"


@pytest.mark.slow
def test_disable_switch_also_holds_for_the_package_names():
    probe = (
        "import smartcash_ultra; smartcash_ultra.SmartCashTrainer; from ultralytics import YOLO; "
        "print(getattr(YOLO.task_map.fget, 'smartcash', False))"
    )
    assert run_python(probe).stdout.strip().splitlines()[-1] == "True"
    assert run_python(probe, env={"SMARTCASH_ULTRA_DISABLE": "1"}).stdout.strip().splitlines()[-1] == "False"
