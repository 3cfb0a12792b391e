"""Evaluation across scenarios: scenario sets (geometry, seeds, cache), evaluate() and its files, runs, bad input."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import Collector, tree_digest
from ultralytics import YOLO

from smartcash_ultra.data.arrays import IMAGE_SUFFIXES
from smartcash_ultra.data.image_dataset import DatasetError, find_image_dataset
from smartcash_ultra.evaluation.evaluate import evaluate
from smartcash_ultra.evaluation.runs import best_per_backbone, list_checkpoints
from smartcash_ultra.evaluation.scenarios import (
    BUILTIN,
    Scenario,
    ScenarioError,
    build_scenario_set,
    load_scenario,
    transform_sample,
)
from smartcash_ultra.tools.cli import main
from smartcash_ultra.tools.sample_data import generate_sample_dataset

EVAL = {"imgsz": 64, "batch": 4, "examples": 1}


# Geometry ------------------------------------------------------------------------------------------------------------
def _drawn_box(im: np.ndarray) -> np.ndarray:
    """The pixel xyxy box of the bright pixels of ``im`` (the border grey 114 and the black ground stay below)."""
    ys, xs = np.nonzero(im[..., 0] > 0.6)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)


@pytest.mark.parametrize(
    "p",
    [
        {"rotation": 27.0},
        {"rotation": -30.0},
        {"scale": 0.8},
        {"scale": 1.2},
        {"translate_x": 0.2, "translate_y": -0.2},
        {"rotation": -18.0, "scale": 1.15, "translate_x": -0.12, "translate_y": 0.17},
    ],
)
def test_a_drawn_box_recovered_from_the_transformed_image_matches_the_transformed_label(p):
    size, (x0, y0, x1, y1) = 160, (50, 60, 110, 95)
    im = np.zeros((size, size, 3), np.float32)
    im[y0:y1, x0:x1] = 1.0
    rows = np.array([[3, (x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size]])
    out, labels = transform_sample(im, rows, p, (0.0, 1.0))
    assert out.dtype == np.float32 and out.shape == im.shape
    assert labels.shape == (1, 5) and labels[0, 0] == 3
    np.testing.assert_allclose(labels[0, 1:] * size, _drawn_box(out), atol=1.5)


def test_a_box_moved_out_of_the_frame_is_dropped_by_ultralytics_visible_area_rule():
    size = 100
    im = np.zeros((size, size, 3), np.float32)
    im[40:60, 70:95] = 1.0  # 25 x 20 px at the right edge
    rows = np.array([[0, 0.825, 0.5, 0.25, 0.2], [1, 0.2, 0.5, 0.2, 0.2]])
    _, labels = transform_sample(im, rows, {"translate_x": 0.23, "translate_y": 0.0}, (0.0, 1.0))
    # the first box keeps 5 of its 25 px columns (20 % > 10 %), a 0.3 shift leaves 0: dropped
    assert labels[:, 0].tolist() == [0, 1]
    _, labels = transform_sample(im, rows, {"translate_x": 0.3, "translate_y": 0.0}, (0.0, 1.0))
    assert labels[:, 0].tolist() == [1]


def test_lighting_changes_values_only_and_keeps_the_declared_range():
    im = np.random.default_rng(0).uniform(0, 255, (32, 32, 3)).astype(np.float32)
    rows = np.array([[2, 0.5, 0.5, 0.4, 0.4]])
    out, labels = transform_sample(im, rows, {"brightness": 0.3, "contrast": 1.3, "gamma": 0.7}, (0.0, 255.0))
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 255 and not np.allclose(out, im)
    np.testing.assert_allclose(labels[0, 1:], [0.3, 0.3, 0.7, 0.7])


# Scenarios and their sets --------------------------------------------------------------------------------------------
def test_parameters_come_from_the_seed_and_the_image_name_alone():
    position = BUILTIN["position"]
    p = position.parameters("pre_001000_a.npy")
    assert p == position.parameters("pre_001000_a.npy") != position.parameters("pre_001000_b.npy")
    assert p != Scenario("other", position.transforms, seed=1).parameters("pre_001000_a.npy")
    # NumPy's PCG64 stream is the same on every platform: these digits hold on any machine
    assert [round(v, 6) for v in p.values()] == pytest.approx(PINNED, abs=1e-6)
    assert -30 <= p["rotation"] <= 30 and 0.8 <= p["scale"] <= 1.2 and abs(p["translate_x"]) <= 0.2


PINNED = [-14.497161, -0.075096, -0.001173, 0.933907]
"""rotation, translate_x, translate_y, scale of ``pre_001000_a.npy`` in the built-in position scenario (seed 0)."""


@pytest.fixture
def small_data(tmp_path) -> Path:
    """A tree of its own (tests here modify it): 3 test images at 96 px."""
    return generate_sample_dataset(tmp_path / "src", n_train=1, n_valid=1, n_test=3, imgsz=96, seed=3)


def test_a_scenario_set_is_reproducible_reused_and_rebuilt_when_a_source_file_changes(small_data, tmp_path):
    dataset = find_image_dataset(small_data, IMAGE_SUFFIXES)
    source = tree_digest(small_data.parent)
    first = build_scenario_set(dataset, "test", BUILTIN["position"], tmp_path / "cache")
    assert first.built and tree_digest(small_data.parent) == source  # the source is only read
    again = build_scenario_set(dataset, "test", BUILTIN["position"], tmp_path / "cache")
    assert not again.built and again.root == first.root
    elsewhere = build_scenario_set(dataset, "test", BUILTIN["position"], tmp_path / "cache2")
    assert tree_digest(elsewhere.root) == tree_digest(first.root)  # same seed, same bytes
    reseeded = build_scenario_set(dataset, "test", Scenario("position", BUILTIN["position"].transforms, 1), tmp_path)
    images = sorted(p.name for p in (first.root / "images").iterdir())
    assert all((first.root / "images" / n).read_bytes() != (reseeded.root / "images" / n).read_bytes() for n in images)

    manifest = json.loads((first.root / "manifest.json").read_text())
    assert manifest["scenario"] == BUILTIN["position"].definition()
    assert set(manifest["images"]) == {p.name for p in dataset.splits["test"]}
    name = dataset.splits["test"][0].name
    assert {k: v for k, v in manifest["images"][name].items() if k not in ("boxes", "kept")} == BUILTIN[
        "position"
    ].parameters(name)

    label = dataset.label_file(dataset.splits["test"][0])
    label.write_text(label.read_text().splitlines()[0] + "\n")
    rebuilt = build_scenario_set(dataset, "test", BUILTIN["position"], tmp_path / "cache")
    assert rebuilt.built and json.loads((rebuilt.root / "manifest.json").read_text())["images"][name]["boxes"] == 1
    assert not list((tmp_path / "cache").glob(".*.tmp"))


def test_a_scenario_set_carries_the_sources_declarations_and_is_read_as_they_say(tmp_path):
    src = generate_sample_dataset(tmp_path / "rgb", n_train=1, n_valid=1, n_test=2, imgsz=96, seed=3)
    bgr = tmp_path / "bgr"
    shutil.copytree(src.parent, bgr)
    for npy in (bgr / "test/images").glob("*.npy"):  # the same images written as BGR 0..255 float16
        np.save(npy, (np.load(npy)[..., ::-1] * 255).astype(np.float16))
    d = yaml.safe_load(src.read_text())
    (bgr / "data.yaml").write_text(yaml.safe_dump({**d, "channel_order": "BGR", "value_range": [0, 255]}))
    built = {}
    for name, root in (("rgb", src.parent), ("bgr", bgr)):
        dataset = find_image_dataset(root / "data.yaml", IMAGE_SUFFIXES)
        built[name] = build_scenario_set(dataset, "test", BUILTIN["lighting"], tmp_path / f"cache_{name}")
    declared = yaml.safe_load(built["bgr"].data_yaml.read_text())
    assert declared["channel_order"] == "BGR" and declared["value_range"] == [0.0, 255.0]
    for npy in (built["rgb"].root / "images").glob("*.npy"):
        rgb, bgr_arr = np.load(npy), np.load(built["bgr"].root / "images" / npy.name)
        assert bgr_arr.dtype == np.float16 and rgb.dtype == np.float32
        np.testing.assert_allclose(bgr_arr[..., ::-1].astype(np.float32) / 255, rgb, atol=0.01)
        label = (built["bgr"].root / "labels" / f"{npy.stem}.txt").read_bytes()
        assert label == (bgr / "test/labels" / f"{npy.stem}.txt").read_bytes()  # lighting moves no label


def test_a_cache_inside_the_source_is_refused(small_data):
    dataset = find_image_dataset(small_data, IMAGE_SUFFIXES)
    with pytest.raises(DatasetError, match="outside the source"):
        build_scenario_set(dataset, "test", BUILTIN["lighting"], small_data.parent / "cache")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("transforms: {blur: [0, 1]}", "unknown transform 'blur'"),
        ("transforms: {gamma: [1.3, 0.7]}", "gamma must be"),
        ("transforms: {scale: [0, 1.2]}", "scale must be"),
        ("transforms: {rotation: [-200, 10]}", "rotation must be"),
        ("transforms: {brightness: 0.3}", "brightness must be"),
        ("transforms: {}", "transforms must map"),
        ("seed: -1\ntransforms: {gamma: [0.5, 1]}", "seed must be"),
        ("sed: 1\ntransforms: {gamma: [0.5, 1]}", "unknown key"),
        ("name: lighting\ntransforms: {gamma: [0.5, 1]}", "built-in"),
        ("!!python/object/apply:os.system [echo]", "cannot be read as YAML"),
    ],
)
def test_an_impossible_scenario_yaml_is_refused_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=problem) as e:
        load_scenario(path)
    assert str(path) in str(e.value)


def test_a_scenario_yaml_defines_a_scenario(tmp_path):
    path = tmp_path / "dim.yaml"
    path.write_text("seed: 7\ntransforms:\n  brightness: [-0.5, -0.2]\n  rotation: [5, 5]\n")
    scenario = load_scenario(path)
    assert scenario == Scenario("dim", {"brightness": (-0.5, -0.2), "rotation": (5.0, 5.0)}, 7)
    p = scenario.parameters("x.npy")
    assert set(p) == {"brightness", "rotation"} and p["rotation"] == 5 and -0.5 <= p["brightness"] <= -0.2


def test_bad_scenarios_and_an_empty_split_are_refused_before_any_work(tiny_data, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("transforms: {contrast: [2, 1]}")
    with pytest.raises(ScenarioError, match="contrast must be"):
        evaluate(["missing.pt"], tiny_data, scenarios=["original", str(bad)], project=tmp_path / "runs")
    with pytest.raises(ScenarioError, match="no built-in scenario"):
        evaluate(["missing.pt"], tiny_data, scenarios="original,fog", project=tmp_path / "runs")
    empty = tmp_path / "empty"
    (empty / "test/images").mkdir(parents=True)
    (empty / "valid/images").mkdir(parents=True)
    (empty / "train/images").mkdir(parents=True)
    data = empty / "data.yaml"
    data.write_text(yaml.safe_dump({**yaml.safe_load(tiny_data.read_text()), "path": str(empty)}))
    with pytest.raises(DatasetError, match="test split holds no image"):
        evaluate(["missing.pt"], data, project=tmp_path / "runs")
    (tmp_path / "bare/test/images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no data.yaml"):
        evaluate(["missing.pt"], tmp_path / "bare", project=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()
    assert main(["evaluate", "missing.pt", "--data", str(tiny_data), "--scenarios", str(bad)]) == 2


# evaluate() ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluation(cspdarknet_run, effb4_run, tiny_data, tmp_path_factory):
    """One evaluation of both session models, a damaged file and a model of other classes, over the 3 scenarios."""
    tmp = tmp_path_factory.mktemp("evaluation")
    damaged = tmp / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    ckpt = torch.load(cspdarknet_run.result.best, weights_only=False)
    for key in ("model", "ema"):
        if ckpt.get(key) is not None:
            ckpt[key].names = {i: f"coin_{i}" for i in range(17)}
    other = tmp / "other_classes.pt"
    torch.save(ckpt, other)
    progress = Collector()
    run = evaluate(
        [cspdarknet_run.result.save_dir, effb4_run.result.best, damaged, other],
        tiny_data,
        project=tmp / "runs",
        name="both",
        cache=tmp / "cache",
        progress_callback=progress,
        **EVAL,
    )
    return run, progress


@pytest.mark.slow
def test_original_equals_yolo_val_to_the_last_digit(evaluation, cspdarknet_run, effb4_run, tiny_data):
    run, _ = evaluation
    for label, best in (("cspdarknet", cspdarknet_run.result.best), ("effb4", effb4_run.result.best)):
        metrics = YOLO(best).val(data=str(tiny_data), split="test", imgsz=64, batch=4, plots=False, verbose=False)
        ours = run.result(label, "original")
        assert ours.metrics["mAP50"] == metrics.box.map50 and ours.metrics["mAP75"] == metrics.box.map75
        assert ours.metrics["mAP50-95"] == metrics.box.map
        assert ours.metrics["precision"] == metrics.box.mp and ours.metrics["recall"] == metrics.box.mr
        per_class = {k.split("/", 1)[1]: v for k, v in metrics.results_dict.items() if k.startswith("AP50(B)/")}
        assert {c: v["AP50"] for c, v in ours.per_class.items()} == pytest.approx(per_class, nan_ok=True)


@pytest.mark.slow
def test_bad_models_are_named_and_marked_failed_while_the_others_go_on(evaluation):
    run, _ = evaluation
    status = {Path(m.path).name: (m.status, m.reason or "") for m in run.models}
    assert status["best.pt"][0] == "ok" and status["damaged.pt"][0] == "failed"
    assert "cannot be loaded" in status["damaged.pt"][1]
    assert status["other_classes.pt"][0] == "failed" and "class names differ" in status["other_classes.pt"][1]
    assert {(r.model, r.scenario) for r in run.results} == {
        (m, s) for m in ("cspdarknet", "effb4") for s in ("original", "lighting", "position")
    }
    assert not run.ok


@pytest.mark.slow
def test_the_report_files_hold_what_they_claim(evaluation):
    run, progress = evaluation
    d = run.save_dir
    rows = list(csv.DictReader((d / "summary.csv").open()))
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 6 and len(rows) == 8
    for row in ok:
        result = run.result(row["model"], row["scenario"])
        assert float(row["mAP50"]) == pytest.approx(result.metrics["mAP50"], rel=1e-4)
        base = run.result(row["model"], "original").metrics["mAP50"]
        if base:
            assert float(row["robustness_mAP50"]) == pytest.approx(result.metrics["mAP50"] / base, rel=1e-3)
    summary = json.loads((d / "summary.json").read_text())
    assert summary["partial"] is False and summary["environment"]["ultralytics"]
    assert [s["name"] for s in summary["scenarios"]] == ["original", "lighting", "position"]
    models = {m["label"]: m for m in summary["models"]}
    assert models["effb4"]["backbone"] == "efficientnet_b4" and models["cspdarknet"]["backbone"] == "cspdarknet_n"
    for m in ("effb4", "cspdarknet"):
        latency = models[m]["latency"]
        assert latency["batch1"]["ms_per_image"] > 0 and latency["batch4"]["ms_per_image"] > 0
        assert models[m]["parameters"] > 1e6 and models[m]["gflops"] > 0
    report = (d / "report.md").read_text()
    effb4_original = run.result("effb4", "original").metrics
    assert f"| effb4 | original | {effb4_original['mAP50']:.3f} | {effb4_original['mAP75']:.3f} |" in report
    assert "| damaged | FAILED: cannot be loaded" in report and "layer_3" in report
    for png in ("map_by_scenario.png", "robustness.png"):
        assert cv2.imread(str(d / png)) is not None
    for r in run.results:
        assert (Path(r.save_dir) / "confusion_matrix.png").is_file() and Path(r.save_dir).parent == d / "val"
        assert (Path(r.save_dir) / "BoxPR_curve.png").is_file()
    for s in ("original", "lighting", "position"):
        example = cv2.imread(str(d / "examples" / f"{s}.jpg"))
        assert example is not None and example.shape[1] == 2 * 96  # two models side by side
    events = [json.loads(line)["event"] for line in (d / "events.jsonl").read_text().splitlines()]
    assert events[0] == "started" and events[-1] == "finished" and events.count("evaluated") == 6
    overall = [c for c in progress if c[0] == "overall"]
    assert overall[0][1:3] == (0, 6) and overall[-1][1:3] == (6, 6)
    assert {c[0] for c in progress} == {"overall", "scenario", "batch"}


@pytest.mark.slow
def test_ctrl_c_writes_a_partial_summary(cspdarknet_run, tiny_data, tmp_path):
    def stop_after_the_first(level, current, total, message):
        if level == "overall" and current == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate(
            [cspdarknet_run.result.best],
            tiny_data,
            scenarios="original,lighting",
            project=tmp_path,
            progress_callback=stop_after_the_first,
            **EVAL,
        )
    summary = json.loads((tmp_path / "eval/summary.json").read_text())
    assert summary["partial"] is True and len(summary["results"]) == 1
    assert "PARTIAL" in (tmp_path / "eval/report.md").read_text()


@pytest.mark.slow
def test_the_command_exits_1_when_a_model_fails_and_evaluates_the_rest(cspdarknet_run, tiny_data, tmp_path, capsys):
    args = ["evaluate", str(cspdarknet_run.result.best), str(tmp_path / "nothing.pt"), "--data", str(tiny_data)]
    args += ["--scenarios", "original", "--imgsz", "64", "--batch", "4", "--project", str(tmp_path), "--examples", "0"]
    assert main([*args, "--no-latency"]) == 1
    out, err = capsys.readouterr()
    assert "nothing.pt: failed: no such file" in err and "| cspdarknet | original |" in out
    assert (
        main(
            [
                *args[:2],
                "--data",
                str(tiny_data),
                "--scenarios",
                "original",
                "--imgsz",
                "64",
                "--project",
                str(tmp_path),
                "--examples",
                "0",
                "--no-latency",
            ]
        )
        == 0
    )


# runs ----------------------------------------------------------------------------------------------------------------
def test_runs_lists_checkpoints_and_picks_the_best_per_backbone(cspdarknet_run, effb4_run, tmp_path, capsys):
    for run in (cspdarknet_run, effb4_run):
        shutil.copytree(run.result.save_dir / "weights", tmp_path / run.result.save_dir.name / "weights")
    (tmp_path / "broken.pt").write_bytes(b"\0" * 10)
    listed = {Path(c.path).relative_to(tmp_path).as_posix(): c for c in list_checkpoints(tmp_path)}
    assert listed["broken.pt"].problem and "cannot be read" in listed["broken.pt"].problem
    csp = listed["cspdarknet/weights/best.pt"]
    ckpt = torch.load(cspdarknet_run.result.best, weights_only=False)
    assert csp.backbone == "cspdarknet_n" and csp.epochs_trained == 1 and csp.epochs_planned == 1
    assert csp.map50 == pytest.approx(ckpt["train_metrics"]["metrics/mAP50(B)"]) and csp.date == ckpt["date"]
    assert listed["effb4/weights/best.pt"].backbone == "efficientnet_b4"
    chosen = best_per_backbone(list(listed.values()))
    assert set(chosen) == {"cspdarknet_n", "efficientnet_b4"}
    assert main(["runs", str(tmp_path)]) == 1  # the broken file
    out = capsys.readouterr().out
    assert "cspdarknet/weights/best.pt" in out and "efficientnet_b4" in out and "cannot be read" in out
    assert not math.isnan(chosen["cspdarknet_n"].map50_95)


@pytest.mark.slow
def test_an_onnx_export_is_evaluated_and_timed_as_ultralytics_validates_it(cspdarknet_run, tiny_data, tmp_path):
    weights = tmp_path / "weights/best.pt"  # a copy: the export is written beside it, never into the session run
    weights.parent.mkdir()
    shutil.copyfile(cspdarknet_run.result.best, weights)
    onnx = YOLO(weights).export(format="onnx", imgsz=64, dynamic=True, simplify=False)
    run = evaluate([onnx], tiny_data, scenarios="original", project=tmp_path / "runs", **EVAL)
    (info,) = run.models
    assert info.status == "ok" and info.label == f"{tmp_path.name}_onnx"  # the run folder holding weights/
    assert info.backbone == "(onnx export)" and info.latency["batch1"]["ms_per_image"] > 0
    metrics = YOLO(onnx).val(data=str(tiny_data), split="test", imgsz=64, batch=4, plots=False, verbose=False)
    assert run.result(info.label, "original").metrics["mAP50-95"] == metrics.box.map


@pytest.mark.slow
def test_a_model_failing_during_validation_is_marked_failed_and_the_others_go_on(
    cspdarknet_run, tiny_data, tmp_path, monkeypatch
):
    import smartcash_ultra.evaluation.evaluate as module

    copy = tmp_path / "second.pt"
    shutil.copyfile(cspdarknet_run.result.best, copy)
    validate = module._validate

    def failing_on_lighting(info, model, scenario_set, *args):
        if info.label == "second" and scenario_set.scenario.name == "lighting":
            raise RuntimeError("out of memory\nmore")
        return validate(info, model, scenario_set, *args)

    monkeypatch.setattr(module, "_validate", failing_on_lighting)
    progress = Collector()
    run = evaluate(
        [copy, cspdarknet_run.result.best],
        tiny_data,
        scenarios="original,lighting",
        project=tmp_path / "runs",
        progress_callback=progress,
        latency=False,
        **{**EVAL, "examples": 0},
    )
    second, first = run.models
    assert second.status == "failed" and second.reason == "validation on lighting failed (RuntimeError: out of memory)"
    assert first.status == "ok" and {(r.model, r.scenario) for r in run.results} == {
        ("cspdarknet", "original"),
        ("cspdarknet", "lighting"),
    }
    assert [c[1:3] for c in progress if c[0] == "overall"][-1] == (2, 2)
