"""``model.tune()`` on a SmartCash model: every iteration starts from the SmartCash settings, as every other route does.

The user's search space and arguments win over them; Ultralytics' defaults (AdamW, patience 100, no cosine schedule)
come in only where neither says anything.
"""

from __future__ import annotations

import re

import pytest
from conftest import CSP_N_YAML
from ultralytics import YOLO

from smartcash_ultra.utils.settings import smartcash_defaults


def trainer_args(output: str) -> list[dict[str, str]]:
    """The arguments each training printed (Ultralytics' ``engine/trainer: k=v, ...`` line), in order."""
    lines = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines() if "engine/trainer: " in line]
    return [dict(kv.split("=", 1) for kv in line.split("engine/trainer: ", 1)[1].split(", ")) for line in lines]


@pytest.mark.slow
def test_tune_starts_every_iteration_from_the_smartcash_settings_under_the_users(tiny_data, tmp_path, capfd):
    space = {"lr0": (1e-4, 1e-2), "lrf": (0.01, 1.0)}
    YOLO(CSP_N_YAML).tune(
        data=str(tiny_data),
        iterations=2,
        epochs=1,
        imgsz=64,
        batch=4,
        workers=0,
        plots=False,
        patience=7,
        space=space,
        project=str(tmp_path),
        name="tune",
    )
    runs = trainer_args(capfd.readouterr().out)
    assert len(runs) == 2, runs
    defaults = smartcash_defaults()
    for args in runs:
        assert (args["optimizer"], args["cos_lr"]) == ("Adam", "True"), args
        assert float(args["warmup_epochs"]) == defaults["warmup_epochs"]
        assert float(args["momentum"]) == defaults["momentum"] and args["deterministic"] == "True"
        assert (args["patience"], args["imgsz"], args["epochs"], args["batch"]) == ("7", "64", "1", "4")
        for key, (low, high) in space.items():
            assert low <= float(args[key]) <= high
    assert float(runs[0]["lr0"]) == defaults["lr0"]  # the search starts at the SmartCash learning rate
    assert float(runs[0]["lrf"]) == defaults["lrf"]
