"""docs/migrating.md: every Python example of the page runs, in order, on the sample dataset, and does what it says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT

from smartcash_ultra.tools.sample_data import generate_sample_dataset

PAGE = ROOT / "docs/migrating.md"


def examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)


def test_the_page_maps_every_function_of_smartcashs_training_api():
    table = PAGE.read_text().split("\n\n| SmartCash | here |")[1].split("\n\n")[0]
    for name in (
        "start_training",
        "quick_train_model",
        "get_training_info",
        "get_dataset_stats",
        "create_data_loaders",
        "TrainingService.stop_training",
        "TrainingService.get_training_status",
        "resume_training",
        "progress_callback",
        "metrics_callback",
    ):
        assert f"| `{name}(" in table, name


@pytest.mark.slow
def test_every_example_of_the_page_runs_in_order_on_the_sample(tmp_path, monkeypatch, capsys):
    generate_sample_dataset(tmp_path / "data/sample", n_train=8, n_valid=4, n_test=2, imgsz=96, seed=1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "migrating"}
    blocks = examples()
    assert len(blocks) == 4
    for block in blocks:
        exec(compile(block, str(PAGE), "exec"), namespace)

    first, cards = namespace["result"], namespace["cards"]
    assert first.best.is_file() and [c["epoch"] for c in cards[:2]] == [1, 2]
    assert all(set(c) >= {"loss", "map50", "map75", "lr", "gpu_memory"} for c in cards)
    assert cards[1]["map50"] == cards[1]["metrics/mAP50(B)"] and cards[1]["lr"] == cards[1]["lr/pg0"]
    assert cards[0]["gpu_memory"] is None and cards[0]["loss"] == pytest.approx(
        sum(v for k, v in cards[0].items() if k.startswith("train/")), abs=1e-4
    )
    assert sorted(namespace["loaders"]) == ["test", "train", "val"]
    assert tuple(namespace["batch"]["img"].shape[:2]) == (4, 3)  # the 4 validation arrays, twice the batch allowed
    status = namespace["status"]
    assert (status["state"], status["reason"]) == ("stopped", "stop button")
    assert namespace["stopped"].save_dir == Path(status["save_dir"]).resolve() != first.save_dir.resolve()
    assert namespace["extended"].save_dir.resolve() == first.save_dir.resolve() and cards[-1]["epoch"] == 3
    out = capsys.readouterr().out
    assert "2/2 epochs" in out and "stopped stop button" in out
