"""Canaries: one test per place the plugin reaches into Ultralytics internals (``smartcash_ultra/integration.py``).

Each fails when an Ultralytics upgrade moves what the plugin relies on there, instead of the plugin breaking
silently. Each drives Ultralytics' own code (a call, or one tiny training run watched at its seams) and checks what
it does; a check of Ultralytics' source text is left only where no behaviour can be had here, and says why. Reaches
guarded elsewhere are named in the integration module's list.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import CSP_N_YAML, csp_n_yaml, effb4_yaml
from ultralytics import YOLO
from ultralytics.engine import trainer as engine
from ultralytics.models.yolo.detect import DetectionTrainer, DetectionValidator
from ultralytics.nn import tasks
from ultralytics.nn.autobackend import AutoBackend
from ultralytics.utils.metrics import Metric
from ultralytics.utils.patches import torch_load

from smartcash_ultra.engine import precision
from smartcash_ultra.engine.trainer import SmartCashTrainer
from smartcash_ultra.nn.backbone import TimmBackbone, register_modules
from smartcash_ultra.nn.model import SmartCashDetectionModel, resolve_model_yaml

CHECKPOINT = Path(__file__).parent / "fixtures/pre_layout_last.pt"
"""A SmartCash training checkpoint (optimizer included) with a tiny timm backbone."""


class Chosen(Exception):
    """Raised by the classes handed to Ultralytics, to prove it built the one it was given."""


def chosen(*args, **kwargs):
    raise Chosen


class WatchedTrainer(SmartCashTrainer):
    """Counts Ultralytics' calls of the private hook that builds the LR schedule."""

    scheduler_builds = 0

    def _setup_scheduler(self):
        self.scheduler_builds += 1
        return super()._setup_scheduler()


@pytest.fixture(scope="module")
def watched_run(tiny_data, tmp_path_factory):
    """One SmartCashTrainer run of one epoch in ``time=`` mode, recording the renames and the AMP checks it makes."""
    renamed, amp_checks = [], []
    rename, check = os.replace, precision.check_amp
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "replace", lambda src, dst: (renamed.append(Path(dst).name), rename(src, dst))[1])
        mp.setattr(precision, "check_amp", lambda model: (amp_checks.append(type(model).__name__), check(model))[1])
        trainer = WatchedTrainer(
            overrides={
                "model": str(CSP_N_YAML),
                "data": str(tiny_data),
                "epochs": 1,
                "time": 1e-6,  # hours: the budget is spent in the first epoch, which the time branch then ends
                "amp": True,
                "imgsz": 64,
                "batch": 4,
                "workers": 0,
                "plots": False,
                "project": str(tmp_path_factory.mktemp("watched")),
            }
        )
        trainer.train()
    return SimpleNamespace(trainer=trainer, renamed=renamed, amp_checks=amp_checks)


def test_task_map_routes_the_yaml_model_new_is_building():
    assert isinstance(YOLO(CSP_N_YAML).model, SmartCashDetectionModel)  # task_map read after Model._new set cfg
    assert type(YOLO("yolov8n.yaml").model) is tasks.DetectionModel


def test_parse_model_builds_a_layer_named_in_its_module_globals(tmp_path):
    register_modules()
    d = resolve_model_yaml(effb4_yaml(tmp_path, backbone="test_efficientnet"))
    model = tasks.DetectionModel(d, verbose=False)  # Ultralytics' own class: only parse_model's lookup finds it
    assert isinstance(model.model[0], TimmBackbone)


@pytest.mark.slow
def test_setup_train_calls_the_swapped_check_amp(watched_run):
    assert watched_run.amp_checks == ["SmartCashDetectionModel"]
    assert engine.check_amp is not precision.check_amp  # put back after the setup


@pytest.mark.slow
def test_checkpoints_are_written_by_rename_and_final_eval_strips_best_only(watched_run):
    trainer = watched_run.trainer
    # save_model writes through the trainer's wdir paths (AtomicPath: temp file + rename); final_eval strips best.pt
    # through the module-level strip_optimizer, which the trainer swaps so that last.pt is never rewritten
    assert watched_run.renamed.count("last.pt") == 1 and watched_run.renamed.count("best.pt") == 2
    assert torch_load(trainer.last, map_location="cpu")["optimizer"] is not None
    assert torch_load(trainer.best, map_location="cpu")["optimizer"] is None


def test_check_resume_sets_the_save_dir_before_init_makes_it_and_writes_args_yaml(tiny_data, tmp_path):
    recorded, chosen, last = tmp_path / "recorded", tmp_path / "chosen", tmp_path / "copy/weights/last.pt"
    checkpoint = torch_load(CHECKPOINT, map_location="cpu")
    checkpoint["train_args"]["save_dir"] = str(recorded)  # the run folder the checkpoint was written in
    last.parent.mkdir(parents=True)
    torch.save(checkpoint, last)

    class Elsewhere(DetectionTrainer):
        def check_resume(self, overrides):
            super().check_resume(overrides)  # the checkpoint's arguments, its recorded save_dir among them
            self.args.save_dir = str(chosen)

    trainer = Elsewhere(overrides={"resume": str(last), "data": str(tiny_data)})
    assert trainer.resume and (trainer.save_dir, trainer.wdir) == (chosen, chosen / "weights")
    assert trainer.csv == chosen / "results.csv"  # the file a resume trims and appends to
    assert yaml.safe_load((chosen / "args.yaml").read_text())["save_dir"] == str(chosen)
    assert not recorded.exists()

    class Claiming(DetectionTrainer):  # a new run: the run folder is claimed here, before anything is written in it
        def check_resume(self, overrides):
            super().check_resume(overrides)
            self.seen = sorted(os.listdir(chosen))
            self.args.save_dir = str(chosen)

    (chosen / "results.csv").write_text("an earlier run's rows")  # BaseTrainer.__init__ deletes it for a new run
    trainer = Claiming(overrides={"model": "yolov8n.yaml", "data": str(tiny_data), "exist_ok": True})
    assert trainer.seen == ["args.yaml", "results.csv", "weights"] and trainer.save_dir == chosen
    assert not (chosen / "results.csv").exists()


@pytest.mark.slow
def test_the_schedule_is_built_by_one_private_method_also_in_time_mode(watched_run):
    assert watched_run.trainer.scheduler_builds == 2  # at setup, and after the epoch with the re-estimated length


class StopAtOnce:
    """A stopper in Ultralytics' slot: asks for validation (``possible_stop``) and stops at its first call."""

    possible_stop, best_fitness, best_epoch = True, 0.5, 7  # the last two: what checkpoints save of a stopper

    def __init__(self):
        self.calls = []

    def __call__(self, epoch, fitness):
        self.calls.append((epoch, fitness))
        return True


@pytest.mark.slow
def test_the_stopper_slot_decides_the_stop_and_possible_stop_validates(tiny_data, tmp_path):
    stopper = StopAtOnce()
    trainer = SmartCashTrainer(
        overrides={
            "model": str(CSP_N_YAML),
            "data": str(tiny_data),
            **{"epochs": 3, "val": False, "imgsz": 64, "batch": 4, "workers": 0, "plots": False},
            "project": str(tmp_path),
        }
    )
    trainer.add_callback("on_pretrain_routine_end", lambda tr: setattr(tr, "stopper", stopper))
    trainer.train()
    # val=False: only possible_stop made epoch 1 of 3 validate; its answer ended the run there
    assert [epoch for epoch, _ in stopper.calls] == [1] and stopper.calls[0][1] is not None
    assert len((trainer.save_dir / "results.csv").read_text().splitlines()) == 2  # header and epoch 1
    assert torch_load(trainer.last, map_location="cpu")["stopper"] == {"best_fitness": 0.5, "best_epoch": 7}


def test_all_ap_column_5_is_ap_at_iou_0_75():
    assert torch.equal(DetectionValidator().iouv, torch.linspace(0.5, 0.95, 10))
    metric = Metric()
    metric.all_ap = np.random.default_rng(0).random((3, 10))
    assert metric.map75 == metric.all_ap[:, 5].mean()


def test_model_train_turns_a_resume_it_cannot_continue_into_a_new_run():
    seen = []

    def trainer(overrides, _callbacks):
        seen.append(overrides)
        raise Chosen

    with pytest.raises(Chosen):
        inspect.unwrap(YOLO.train)(YOLO(CSP_N_YAML), trainer=trainer, resume=True)
    assert seen[0]["resume"] is False  # what the train wrapper turns into an error naming the checkpoint


def test_yaml_names_resolve_through_check_file_for_cfg_and_model(tmp_path, monkeypatch):
    from ultralytics.cfg import entrypoint

    calls, stock_train = [], inspect.unwrap(YOLO.train)
    monkeypatch.setattr(YOLO, "train", lambda self, **overrides: calls.append((self, overrides)))
    monkeypatch.chdir(tmp_path)  # names, found from any folder
    entrypoint("yolo train cfg=smartcash_cspdarknet.yaml model=smartcash_cspdarknet_yolov5n.yaml")
    ((model, overrides),) = calls
    assert overrides["data"] == "data/sample/data.yaml"  # read from the training cfg found by name
    assert isinstance(model.model, SmartCashDetectionModel) and model.model.yaml["scale"] == "n"  # yaml_model_load
    seen = []

    def trainer(overrides, _callbacks):
        seen.append(overrides)
        raise Chosen

    with pytest.raises(Chosen):
        stock_train(model, trainer=trainer, cfg="smartcash_cspdarknet.yaml")  # Model.train(cfg=)
    assert seen[0]["data"] == "data/sample/data.yaml"


def test_predict_val_train_build_the_class_they_are_given(tmp_path):
    model = YOLO(CSP_N_YAML)
    calls = ((YOLO.predict, (str(tmp_path), False, chosen)), (YOLO.val, (chosen,)), (YOLO.train, (chosen,)))
    for method, given in calls:
        with pytest.raises(Chosen):
            inspect.unwrap(method)(model, *given)  # positionally, as the wrappers hand it over


def test_a_checkpoints_model_reaches_get_model_as_weights():
    handed = []

    class Recorder:
        def __init__(self, overrides, _callbacks):
            pass

        def get_model(self, cfg=None, weights=None, verbose=True):
            handed.append((cfg, weights))
            raise Chosen

    model = YOLO(CHECKPOINT)
    with pytest.raises(Chosen):
        inspect.unwrap(YOLO.train)(model, trainer=Recorder, data="data.yaml")  # Model.train, from a checkpoint
    assert handed[0][0] is model.model.yaml and handed[0][1] is model.model
    trainer = SimpleNamespace(model=str(CHECKPOINT), args=SimpleNamespace(pretrained=True), resume=False)
    trainer.get_model = lambda cfg, weights, verbose: handed.append((cfg, weights))
    engine.BaseTrainer.setup_model(trainer)  # the trainer's own rebuild from a checkpoint path
    cfg, weights = handed[1]
    assert isinstance(weights, SmartCashDetectionModel) and cfg is weights.yaml


def test_inference_fuses_through_the_models_fuse_method(monkeypatch):
    fused = []
    fuse = SmartCashDetectionModel.fuse
    monkeypatch.setattr(SmartCashDetectionModel, "fuse", lambda self, **kw: fused.append(kw) or fuse(self, **kw))
    AutoBackend(SmartCashDetectionModel(CSP_N_YAML, verbose=False), fuse=True, verbose=False)  # predict, val
    assert len(fused) == 1


@pytest.mark.slow
def test_export_fuses_and_carries_metadata_added_at_on_export_start(tmp_path, monkeypatch):
    fused, seen = [], []
    fuse = SmartCashDetectionModel.fuse
    monkeypatch.setattr(SmartCashDetectionModel, "fuse", lambda self, **kw: fused.append(kw) or fuse(self, **kw))

    def on_export_start(exporter):
        seen.append(dict(exporter.metadata))
        exporter.metadata["canary"] = "kept"

    monkeypatch.chdir(tmp_path)  # the export is written into the working folder
    model = YOLO(csp_n_yaml(tmp_path))
    model.add_callback("on_export_start", on_export_start)
    exported = model.export(format="torchscript", imgsz=64, verbose=False)
    assert "names" in seen[0] and len(fused) == 1  # filled before the event, from the fused model
    assert AutoBackend(exported, verbose=False).metadata["canary"] == "kept"  # written after it, unknown key kept


def test_the_list_of_reaches_names_every_canary_here_and_no_other():
    import re

    from smartcash_ultra import integration

    named = re.findall(r"``(?:tests/(test_\w+)\.py::)?(test_\w+)``", integration.__doc__)
    here = {name for name in globals() if name.startswith("test_")}
    assert {test for module, test in named if not module} == here - {
        "test_the_list_of_reaches_names_every_canary_here_and_no_other"
    }
    for module, test in named:  # the canaries in other files exist under the names the list gives
        assert not module or f"def {test}(" in (Path(__file__).parent / f"{module}.py").read_text(), (module, test)
