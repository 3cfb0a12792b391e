"""The benchmark suite's quick mode end to end: every part runs and writes its JSON result and PNG chart."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_suite_quick_mode_writes_every_result_and_chart(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "bench/suite.py", "--quick", "--results-dir", str(out), "--workdir", str(tmp_path / "work")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    expected = {
        "throughput": {"models", "ratios", "markdown", "machine", "load_average_before_after", "wall_s"},
        "latency": {"models", "ratios", "markdown", "machine", "study_gpu_ratio"},
        "accuracy": {"runs", "differences", "pipeline_check", "markdown", "machine"},
    }
    for part, keys in expected.items():
        doc = json.loads((out / f"{part}.json").read_text())
        assert keys <= doc.keys(), part
        png = out / f"{part}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", part
    throughput = json.loads((out / "throughput.json").read_text())
    assert {"cspdarknet-s / stock-yolov5s", "effb4 / cspdarknet-s"} <= throughput["ratios"].keys()
    assert throughput["ratios"]["cspdarknet-s / stock-yolov5s"]["same_layers_and_params"] is True
    latency = json.loads((out / "latency.json").read_text())
    assert {"pytorch", "onnxruntime", "openvino"} <= latency["ratios"].keys()
    assert all(m[be]["b1_ms"] > 0 for m in latency["models"].values() for be in ("onnxruntime", "openvino"))
    assert latency["speedups"].keys() == {"onnxruntime", "openvino"}  # each over PyTorch as AutoBackend runs it
    if platform.machine() in {"x86_64", "AMD64"} and sys.platform == "linux":  # where AutoBackend goes channels-last
        assert all(m["pytorch_channels_last"] for m in latency["models"].values())
    accuracy = json.loads((out / "accuracy.json").read_text())
    assert {"cspdarknet-s", "effb4", "stock-yolov5s", "stock-yolov8n"} <= accuracy["runs"].keys()
    for run in accuracy["runs"].values():
        assert {"mAP50", "mAP75", "mAP50-95"} == run["final"].keys()
        assert run["epochs"] and {"epoch", "mAP50", "mAP75", "mAP50-95"} <= run["epochs"][0].keys()
    check = accuracy["pipeline_check"]["png"]  # the lossless twin: the arrays' pixels reach the model unchanged
    assert check["same_initial_weights"] and check["same_labels"] and check["pixel_max_abs_diff"] == 0
    assert check["first_batch_loss"] == check["smartcash_first_batch_loss"]
    suite = json.loads((out / "suite.json").read_text())
    assert set(suite["parts"]) == {"throughput", "latency", "accuracy"}


@pytest.mark.slow
def test_pretrained_quick_mode_trains_imagenet_and_random_init_lite0(tmp_path):
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "bench/pretrained.py", "--quick", "--results-dir", str(out), "--workdir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "pretrained.json").read_text())
    assert set(doc["runs"]) == {"lite0-imagenet", "lite0"}
    assert "ImageNet − random init (Lite0)" in doc["differences"]
    assert (out / "pretrained.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = (tmp_path / "models/lite0-imagenet.yaml").read_text()
    assert "tf_efficientnet_lite0_imagenet.safetensors" in model and "0.229" in model  # the declared normalisation
