"""Training precision: offline AMP decisions in one line, bf16 through Ultralytics' ``amp`` argument, CPU in fp32.

There is no GPU here: real runs cover CPU (amp=True and amp=bf16, where stock Ultralytics raises), and the GPU
decisions are driven through :func:`smartcash_ultra.engine.precision.check_amp` with the device and the
comparison faked.
"""

from __future__ import annotations

import inspect
import re
import socket
from types import SimpleNamespace

import pytest
import torch
import ultralytics.data.utils as data_utils
import ultralytics.engine.trainer as engine
import ultralytics.utils.checks as checks
import ultralytics.utils.downloads as downloads
from conftest import CSP_N_YAML
from ultralytics.cfg import get_cfg
from ultralytics.utils.patches import torch_load
from ultralytics.utils.torch_utils import autocast as ultralytics_autocast

from smartcash_ultra import precision
from smartcash_ultra.engine.trainer import SmartCashTrainer
from smartcash_ultra.nn.model import SmartCashDetectionModel

FAST = {"imgsz": 64, "batch": 4, "workers": 0, "plots": False, "epochs": 1}


@pytest.fixture
def no_network(monkeypatch):
    """Fail and record any download, stock AMP check or socket use; return the record.

    ``attempt_download_asset`` itself is left alone: it also resolves local checkpoints (best.pt), and downloads only
    through ``safe_download`` or a socket.
    """
    attempts: list[str] = []

    def refuse(what):
        def fail(*args, **kwargs):
            attempts.append(what)
            raise ConnectionError(f"test: no network ({what})")

        return fail

    monkeypatch.setattr(downloads, "safe_download", refuse("safe_download"))  # what attempt_download_asset calls
    monkeypatch.setattr(checks, "check_amp", refuse("ultralytics check_amp"))
    monkeypatch.setattr(engine, "check_amp", refuse("ultralytics check_amp"))
    # Ultralytics' dataset check fetches a plotting font (Arial.ttf) in a background thread when it is missing: a
    # network attempt of its own, not the AMP decision's, so it is skipped to keep the socket guard strict
    monkeypatch.setattr(data_utils, "check_font", lambda font: None)
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    return attempts


def amp_lines(lines: list[str]) -> list[str]:
    return [line.removeprefix("WARNING ⚠️ ") for line in lines if "AMP: " in line]


def test_ultralytics_skips_check_amp_and_autocasts_bf16_for_amp_bf16():
    # source text: bf16 autocast runs only on a GPU with native bf16 (the check_amp call itself is a behaviour canary
    # in test_patch_points.py)
    assert 'self.args.amp != "bf16"' in inspect.getsource(engine.BaseTrainer._setup_train)
    assert 'torch.bfloat16 if self.args.amp == "bf16"' in inspect.getsource(engine.BaseTrainer._do_train)


def test_bf16_is_ultralytics_own_amp_value():
    assert get_cfg(overrides={"amp": "BF16"}).amp == "bf16"
    assert get_cfg(overrides={"amp": "fp32"}).amp == "fp32"
    with pytest.raises(ValueError, match="'amp=bf17' is invalid"):
        get_cfg(overrides={"amp": "bf17"})
    assert [precision.requested(a) for a in (True, False, "fp16", "bf16", "fp32")] == [
        "fp16",
        "fp32",
        "fp16",
        "bf16",
        "fp32",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("amp", [True, "bf16"])
def test_cpu_trains_fp32_offline_and_says_so_once(amp, tiny_data, tmp_path, log_lines, no_network):
    trainer = SmartCashTrainer(
        overrides={"model": str(CSP_N_YAML), "data": str(tiny_data), "amp": amp, **FAST, "project": str(tmp_path)}
    )
    assert trainer.args.amp == amp  # parsed as given
    result = trainer.train()  # stock Ultralytics raises on bf16 here ('bfloat16 autocast requires CUDA ...')
    assert result.best.is_file() and trainer.amp is False and not trainer.scaler.is_enabled()
    assert no_network == []
    assert engine.check_amp is not precision.check_amp  # the replacement was scoped to the setup
    expected = {
        True: "AMP: CPU trains in fp32 (fp16 AMP applies to CUDA GPUs)",
        "bf16": "AMP: amp=bf16 needs a CUDA GPU; CPU trains in fp32",
    }
    assert amp_lines(log_lines) == [expected[amp]]
    saved = torch_load(result.last, map_location="cpu")["train_args"]["amp"]
    assert saved == (True if amp is True else "fp32")  # checkpoints record the precision that ran


def test_fp16_check_compares_the_smartcash_model_itself():
    model = SmartCashDetectionModel(CSP_N_YAML, nc=17, verbose=False)
    assert model.training
    for dtype in (torch.float16, torch.bfloat16):  # CPU autocast runs both; on a GPU the check uses fp16
        agree, detail = precision.outputs_agree(model, dtype, imgsz=64)
        assert agree and detail.startswith("boxes within"), detail
    assert model.training  # mode restored
    model.model[0].conv.weight.data *= 1e6  # activations beyond fp16's range (65504)
    assert precision.outputs_agree(model, torch.float16, imgsz=64) == (False, "outputs not finite (overflow)")


class FakeGPUModel(torch.nn.Module):
    """Parameters that say they live on a CUDA GPU (nothing runs on it: the comparison is faked)."""

    def parameters(self, recurse=True):
        yield SimpleNamespace(device=torch.device("cuda", 0))


def test_fp16_blocklist_is_ultralytics_own():
    assert f'r"{precision.FP16_BLOCKLIST.pattern}"' in inspect.getsource(checks.check_amp)  # the raw literal there
    assert precision.FP16_BLOCKLIST.flags & re.IGNORECASE


@pytest.mark.parametrize(
    "gpu, comparison, verdict, line",
    [
        ("NVIDIA H100 80GB HBM3", (True, "boxes within 0.01 px, scores within 1e-4"), True, "fp16 autocast on NVIDIA"),
        ("NVIDIA H100 80GB HBM3", (False, "outputs not finite (overflow)"), False, "fp16 fails on NVIDIA H100"),
        ("NVIDIA H100 80GB HBM3", RuntimeError("no fp16 kernel"), False, "fp16 check could not run"),
        ("NVIDIA GeForce GTX 1660 SUPER", None, False, "known to give NaN losses"),
    ],
)
def test_gpu_fp16_decision_is_offline_and_one_line(gpu, comparison, verdict, line, monkeypatch, log_lines, no_network):
    def compare(model, dtype):
        assert dtype is torch.float16
        if isinstance(comparison, Exception):
            raise comparison
        return comparison

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: gpu)
    monkeypatch.setattr(precision, "outputs_agree", compare)
    assert precision.check_amp(FakeGPUModel()) is verdict
    assert len(amp_lines(log_lines)) == 1 and line in amp_lines(log_lines)[0]
    assert ("training in fp32" in amp_lines(log_lines)[0]) is not verdict
    assert no_network == []


@pytest.mark.parametrize("native", [True, False])
def test_gpu_bf16_runs_where_native_else_fp32(native, monkeypatch, log_lines):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA T4")
    monkeypatch.setattr(precision, "bf16_available", lambda device: native)
    args = SimpleNamespace(amp="bf16")
    precision.settle(args, torch.device("cuda", 0))
    assert args.amp == ("bf16" if native else "fp32")
    expected = (
        "bf16 autocast on NVIDIA T4" if native else "amp=bf16 needs native bf16 support; NVIDIA T4 trains in fp32"
    )
    assert len(amp_lines(log_lines)) == 1 and expected in amp_lines(log_lines)[0]


def test_bf16_is_unavailable_where_ultralytics_autocast_would_raise():
    with pytest.raises(RuntimeError):
        ultralytics_autocast(torch.bfloat16, device="cpu")
    assert not precision.bf16_available(torch.device("cpu"))
