"""The SmartCash training settings reach every route that trains a SmartCash model, under the user's own arguments.

Routes: ``yolo train model=...``, ``YOLO(...).train()``, ``yolo train cfg=...``, ``SmartCashTrainer``. Each test stops
the run right after the trainer resolved its arguments (``on_pretrain_routine_start``, the first training event).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import CSP_N_YAML, ROOT, csp_n_yaml, run_python
from ultralytics import YOLO

from smartcash_ultra.engine.trainer import SmartCashTrainer
from smartcash_ultra.utils.settings import resolve

SPEC = {
    "epochs": 100,
    "batch": 16,
    "imgsz": 640,
    "patience": 15,
    "optimizer": "Adam",
    "lr0": 0.001,
    "lrf": 0.01,
    "momentum": 0.9,
    "weight_decay": 0.0005,
    "cos_lr": True,
    "warmup_epochs": 5,
    "box": 7.5,
    "cls": 0.5,
    "dfl": 1.5,
    "val": True,
    "amp": True,
    "workers": 4,
    "cache": False,
    "plots": True,
    "seed": 0,
    "deterministic": True,
}
"""The SmartCash spec's training settings, as the training cfgs held them before they moved into one file."""
MINE = {"epochs": 1, "imgsz": 64, "batch": 4, "workers": 0, "lr0": 0.002}
"""A user's own arguments: each wins over the SmartCash setting of the same name."""


class Started(Exception):
    """Raised by the first training event, carrying the trainer's resolved arguments."""


def stop_at_start(trainer):
    raise Started(vars(trainer.args))


def expected(**given) -> dict:
    return {**SPEC, **MINE, **given}


def assert_settings(args: dict, want: dict) -> None:
    assert {k: args[k] for k in want} == want


def test_yolo_train_by_model_yaml_gets_the_smartcash_settings(tiny_data, tmp_path, log_lines):
    model = YOLO(CSP_N_YAML)
    model.add_callback("on_pretrain_routine_start", stop_at_start)
    with pytest.raises(Started) as started:
        model.train(data=str(tiny_data), project=str(tmp_path), name="py", **MINE)
    assert_settings(started.value.args[0], expected())
    first = next(i for i, line in enumerate(log_lines) if "SmartCash training settings" in line)
    assert not any(line.startswith("engine/trainer:") for line in log_lines[:first])  # before Ultralytics' args
    line = log_lines[first]
    assert "smartcash_defaults.yaml" in line and "optimizer=Adam" in line and "momentum=0.9" in line
    assert "yours instead: epochs=1 imgsz=64 batch=4 workers=0 lr0=0.002;" in line  # the user's, named as such
    assert "lr0=0.001" not in line and "optimizer=" not in line.split("yours")[1]


def test_smartcash_trainer_without_cfg_gets_them_and_finds_a_cfg_by_name(tiny_data, tmp_path):
    common = {"model": str(CSP_N_YAML), "data": str(tiny_data), "project": str(tmp_path), **MINE}
    assert_settings(vars(SmartCashTrainer(overrides={**common, "name": "a"}).args), expected())
    by_name = SmartCashTrainer("smartcash_cspdarknet.yaml", overrides={**common, "name": "b", "optimizer": "SGD"})
    assert_settings(vars(by_name.args), expected(optimizer="SGD"))
    assert by_name.args.cfg.endswith("cfg/smartcash_cspdarknet.yaml")


STOP_AT_DATASET = """
import json, os, sys
from smartcash_ultra.engine.trainer import SmartCashTrainer
from ultralytics.cfg import entrypoint
def resolved(self):  # the first thing the trainer does with its resolved arguments
    raise SystemExit(json.dumps(vars(self.args), default=str))
SmartCashTrainer.get_dataset = resolved
out = []
for command, cwd in json.loads(sys.argv[1]):
    os.chdir(cwd)
    try:
        entrypoint(command)
    except SystemExit as stop:
        out.append(json.loads(stop.code))
print(json.dumps(out))
"""


def yolo_args(commands: dict[str, tuple[str, Path]]) -> dict[str, dict]:
    """The arguments each `yolo` command line resolves to in the trainer, run from its folder (one fresh interpreter,
    as `yolo` runs, for them all)."""
    proc = run_python(STOP_AT_DATASET, json.dumps([[command, str(cwd)] for command, cwd in commands.values()]))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(zip(commands, json.loads(proc.stdout.strip().splitlines()[-1]), strict=True))


@pytest.fixture(scope="module")
def resolved(tiny_data, tmp_path_factory) -> dict[str, dict]:
    """What the `yolo` commands of the tests below resolve to: both routes, and the README's on two cfgs."""
    tmp_path = tmp_path_factory.mktemp("commands")
    mine = " ".join(f"{k}={v}" for k, v in MINE.items())
    routes = {"model": "model=smartcash_cspdarknet_yolov5n.yaml", "cfg": "cfg=smartcash_cspdarknet.yaml"}
    commands = {
        k: (f"yolo train {v} data={tiny_data} project={tmp_path} name=cli {mine}", tmp_path) for k, v in routes.items()
    }
    full = tmp_path / "full_cfg.yaml"  # the shipped cfg as it was, every setting written in it
    full.write_text(yaml.safe_dump({"task": "detect", "mode": "train", **SPEC}))
    readme = (
        "model=cfg/models/smartcash_cspdarknet_yolov5n.yaml data=data/sample/data.yaml imgsz=320 epochs=20 batch=16 "
        f"workers=2 project={tmp_path} name=cspdarknet exist_ok=True"
    )
    commands["readme now"] = (f"yolo train cfg=cfg/smartcash_cspdarknet.yaml {readme}", ROOT)
    commands["readme before"] = (f"yolo train cfg={full} {readme}", ROOT)
    return yolo_args(commands)


@pytest.mark.slow
@pytest.mark.parametrize("route", ["model", "cfg"])
def test_yolo_command_gets_them_on_both_routes(route, resolved):
    args = resolved[route]
    assert_settings(args, expected())
    assert args["model"] == "smartcash_cspdarknet_yolov5" + ("n" if route == "model" else "s") + ".yaml"


@pytest.mark.slow
def test_readme_sample_command_resolves_exactly_as_before(resolved):
    """`bash scripts/train_sample.sh` (the README's sample run) gets the very arguments the full cfg gave it."""
    now, before = resolved["readme now"], resolved["readme before"]
    assert now == before
    spec = {k: v for k, v in SPEC.items() if k != "workers"}  # the trainer sets 0 on a CPU
    assert_settings(now, {**spec, "imgsz": 320, "epochs": 20, "model": "cfg/models/smartcash_cspdarknet_yolov5n.yaml"})


def test_one_source_of_the_settings():
    from smartcash_ultra.utils.shipped import defaults_file

    assert yaml.safe_load(defaults_file().read_text()) == SPEC
    for cfg in (ROOT / "cfg").glob("*.yaml"):  # the training cfgs name a model and data, nothing of the spec's
        if cfg != defaults_file():
            assert not set(yaml.safe_load(cfg.read_text())) & set(SPEC), cfg


@pytest.mark.parametrize(("key", "value"), [("freeze_backbone", 3), ("backbone_lr", 0.1)])
def test_a_removed_setting_is_an_error_naming_the_file_the_key_and_freeze_n(key, value, tiny_data, tmp_path):
    model_yaml = csp_n_yaml(tmp_path, **{key: value})
    trainer = SmartCashTrainer(
        overrides={"model": str(model_yaml), "data": str(tiny_data), "project": str(tmp_path), **MINE}
    )
    with pytest.raises(ValueError, match=f"smartcash.training.{key} was removed") as error:
        trainer.train()
    message = str(error.value)
    assert (
        message.startswith(f"{model_yaml}: smartcash.training.{key} was removed (")
        and "delete it from the YAML" in message
    )
    assert message.endswith("Ultralytics' freeze=N (4 for EfficientNet-B4, 10 for CSPDarknet).")


def test_a_removed_setting_left_off_is_dropped_so_earlier_checkpoints_resume():
    """The shipped model YAMLs wrote ``freeze_backbone: 0`` and ``backbone_lr: 1.0``: checkpoints carry them."""
    old = {"training": {"freeze_backbone": 0, "backbone_lr": 1.0, "val_interval": 2}}
    assert resolve(old) == resolve({"training": {"val_interval": 2}})
