"""Routing: SmartCash models get SmartCash classes, every other model stock ones, and the switch that turns it off.

The canaries of the Ultralytics internals this relies on are in ``test_patch_points.py``.
"""

from __future__ import annotations

import pytest
from conftest import CSP_N_YAML
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
def test_startup_hook_patches_lazily_and_can_be_switched_off(plugin_on, plugin_off):
    on = {k: plugin_on[k] for k in ("torch", "ultralytics", "task_map_patched", "effb4_random")}
    assert on == {
        "torch": False,
        "ultralytics": False,
        "task_map_patched": True,
        "effb4_random": ["ok", "SmartCashDetectionModel"],
    }
    # without the plugin Ultralytics cannot build the YAML
    assert plugin_off["effb4_random"] == ["error", "KeyError: 'TimmBackbone'"]
    assert plugin_off["task_map_patched"] is False


@pytest.mark.slow
def test_startup_hook_resolves_yaml_names_before_yolo_is_imported(plugin_on, plugin_off):
    assert [plugin_on["check_file_patched"], plugin_on["yolo_model_imported"]] == [True, False]
    assert [plugin_off["check_file_patched"], plugin_off["yolo_model_imported"]] == [False, False]


@pytest.mark.slow
def test_disable_switch_also_holds_for_the_package_names(plugin_on, plugin_off):
    assert plugin_on["task_map_patched_after_package"] is True
    assert plugin_off["task_map_patched_after_package"] is False
