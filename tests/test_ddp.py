"""Ultralytics' DDP launcher keeps the SmartCash trainer, settings and callbacks in its workers (checked on CPU).

The parent goes through Ultralytics' own ``BaseTrainer.train()`` DDP branch: ``generate_ddp_command`` writes the
cloudpickled state and the launch script, ``torch.distributed.run`` starts the worker, ``ddp_cleanup`` removes both.
There is no GPU here, so the parent is told it is a one-GPU DDP launch (``ddp=True``, ``world_size=1``) and the
one worker trains on ``device=cpu``. Ultralytics trusts ``RANK`` only when ``WORLD_SIZE > 1``, so that worker trains
as a single process: what is checked is what the launcher carries (trainer class, args, model, callbacks), not
gradient synchronisation, which needs GPUs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_python
from ultralytics.engine import trainer as engine
from ultralytics.utils.dist import ddp_cleanup

from smartcash_ultra.callbacks import EarlyStoppingInstaller, MetricsExporter, ProgressReporter, RunState
from smartcash_ultra.engine.trainer import SmartCashTrainer

KINDS = (EarlyStoppingInstaller, MetricsExporter, ProgressReporter, RunState)
CALLBACKS = {"progress": {"min_interval": 0}, "metrics_export": False}  # both differ from the defaults
TRAINING = {"step_size": 3, "checkpoint_name": None}

REBUILD = """
import json, sys
from ultralytics.utils import DEFAULT_CFG_DICT
from ultralytics.utils.patches import torch_load

state = torch_load(sys.argv[1], map_location="cpu")  # as the generated script does
cfg = DEFAULT_CFG_DICT.copy()
cfg.update(save_dir="")
trainer = state["trainer"](cfg=cfg, overrides=state["args"], _callbacks=state["callbacks"])
trainer.model = state["model"]

from smartcash_ultra.callbacks import EarlyStoppingInstaller, MetricsExporter, ProgressReporter, RunState
from smartcash_ultra.utils.settings import model_settings

kinds = (EarlyStoppingInstaller, MetricsExporter, ProgressReporter, RunState)
handlers = [getattr(fn, "__self__", None) for fns in trainer.callbacks.values() for fn in fns]
handlers = [h for h in handlers if isinstance(h, kinds)]
print(json.dumps({
    "trainer": f"{type(trainer).__module__}.{type(trainer).__qualname__}",
    "model": type(trainer.model).__name__,
    "handlers": {k.__name__: sum(isinstance(h, k) for h in handlers) for k in kinds},
    "instances": {k.__name__: len({id(h) for h in handlers if isinstance(h, k)}) for k in kinds},
    "user_callbacks": [getattr(h.ui.progress_callback, "__name__", None) for h in {id(h): h for h in handlers}.values()
                       if isinstance(h, ProgressReporter)],
    "run_state_found": trainer.run_state is next(h for h in handlers if isinstance(h, RunState)),
    "settings": model_settings(trainer.model),
}))
"""


def smartcash_handlers(callbacks: dict) -> dict[str, int]:
    """Count the SmartCash handlers in a callbacks dict, by kind."""
    found = [
        fn.__self__ for fns in callbacks.values() for fn in fns if isinstance(getattr(fn, "__self__", None), KINDS)
    ]
    return {k.__name__: sum(isinstance(h, k) for h in found) for k in KINDS}


@pytest.fixture
def model_yaml(tmp_path) -> Path:
    d = yaml.safe_load((ROOT / "cfg/models/smartcash_cspdarknet_yolov5.yaml").read_text())
    d["smartcash"] = {**d["smartcash"], "callbacks": CALLBACKS, "training": TRAINING}
    path = tmp_path / "smartcash_cspdarknet_yolov5n.yaml"  # scale n from the name, as Ultralytics does
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


@pytest.mark.slow
def test_ddp_launch_rebuilds_the_smartcash_trainer_in_a_fresh_worker(tiny_data, model_yaml, tmp_path, monkeypatch):
    progress_log = tmp_path / "progress.log"

    def make_progress_callback(path: Path):
        def on_progress(level, current, total, message):  # a closure: cloudpickle must carry it by value
            with open(path, "a") as f:
                f.write(f"{os.getpid()} {level} {current}/{total}\n")

        return on_progress

    trainer = SmartCashTrainer(
        overrides={
            "model": str(model_yaml),
            "data": str(tiny_data),
            "epochs": 1,
            "imgsz": 64,
            "batch": 4,
            "workers": 0,
            "plots": False,
            "device": "cpu",
            "project": str(tmp_path),
            "name": "ddp",
        },
        progress_callback=make_progress_callback(progress_log),
    )
    trainer.model = trainer.get_model(cfg=str(model_yaml), verbose=False)  # as YOLO.train() hands it over
    trainer.ddp, trainer.world_size = True, 1  # what device=0 of a one-GPU DDP launch would give the parent
    parent_handlers = smartcash_handlers(trainer.callbacks)
    assert all(parent_handlers.values())

    launched = {}
    generate = engine.generate_ddp_command

    def generate_and_inspect(t):
        cmd, file = generate(t)
        launched.update(cmd=cmd, file=file)
        try:  # rebuild from the state file in a fresh interpreter before the worker starts
            rebuild = run_python(REBUILD.replace("sys.argv[1]", repr(str(Path(file).with_suffix(".pt")))))
            assert rebuild.returncode == 0, rebuild.stderr[-3000:]
            launched["rebuilt"] = json.loads(rebuild.stdout.strip().splitlines()[-1])
        except BaseException:
            ddp_cleanup(t, file)  # Ultralytics cleans up only once this function has returned
            raise
        return cmd, file

    monkeypatch.setattr(engine, "generate_ddp_command", generate_and_inspect)
    result = trainer.train()  # Ultralytics' DDP branch: state file, torch.distributed.run, cleanup

    cmd, file, rebuilt = launched["cmd"], Path(launched["file"]), launched["rebuilt"]
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and cmd[cmd.index("--nproc_per_node") + 1] == "1"
    assert not file.exists() and not file.with_suffix(".pt").exists()  # ddp_cleanup ran

    # the state rebuilds a SmartCash trainer with its callbacks once (not twice) and the model YAML's settings
    assert rebuilt["trainer"] == "smartcash_ultra.engine.trainer.SmartCashTrainer"
    assert rebuilt["model"] == "SmartCashDetectionModel"
    assert rebuilt["handlers"] == parent_handlers
    assert rebuilt["instances"] == {k.__name__: 1 for k in KINDS}
    assert rebuilt["user_callbacks"] == ["on_progress"]
    assert rebuilt["run_state_found"]  # the worker's trainer reads the run state its callbacks update
    assert rebuilt["settings"]["callbacks"]["progress"]["min_interval"] == 0
    assert rebuilt["settings"]["callbacks"]["metrics_export"]["enabled"] is False
    assert {k: rebuilt["settings"]["training"][k] for k in TRAINING} == TRAINING

    # the worker trained one epoch, with the user's closure and the settings in force there
    lines = [line.split() for line in progress_log.read_text().splitlines()]
    assert {pid for pid, *_ in lines} - {str(os.getpid())}, "progress came from the worker process"
    assert str(os.getpid()) not in {pid for pid, *_ in lines}
    assert [frac for _, level, frac in lines if level == "batch"] == ["1/4", "2/4", "3/4", "4/4"]  # min_interval 0
    assert [frac for _, level, frac in lines if level == "overall"][-1] == "1/1"
    save_dir = result.save_dir
    assert result.best == save_dir / "weights/best.pt" and result.last.is_file()
    assert "metrics/mAP50-95(B)" in result.metrics  # read back from best.pt: the parent did not validate
    assert not (save_dir / "metrics.json").exists()  # metrics_export: false reached the worker
    events = [json.loads(line)["event"] for line in (save_dir / "events.jsonl").read_text().splitlines()]
    assert events.count("started") == 1 and events.count("completed") == 1  # one ProgressReporter in the worker
    assert trainer.get_training_status()["state"] == "completed"  # the parent learns the outcome from last.pt
