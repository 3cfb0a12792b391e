"""Shared fixtures: tiny generated SmartCash datasets, offline Ultralytics, and subprocess helpers."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")  # before Ultralytics is imported anywhere in the test session
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any, NamedTuple  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from ultralytics.utils import LOGGER  # noqa: E402

from smartcash_ultra.tools.sample_data import generate_sample_dataset  # noqa: E402

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT / "bench"))  # bench/imagenet_lite0.py: the real ImageNet weights the proof tests use
EFFB4_SHIPPED = ROOT / "cfg/models/smartcash_effb4_yolov5.yaml"
"""The shipped EfficientNet-B4 model YAML: it asks for timm's weights (the hub), so tests build ``effb4_yaml``."""
CSP_N_YAML = ROOT / "cfg/models/smartcash_cspdarknet_yolov5n.yaml"


@pytest.fixture
def log_lines():
    """Every Ultralytics log message of the test, colours stripped."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage()))
    LOGGER.addHandler(handler)
    yield lines
    LOGGER.removeHandler(handler)


class Collector(list):
    """A picklable UI callback that keeps the arguments of every call."""

    def __call__(self, *args):
        self.append(args)


def csp_n_yaml(folder: Path, callbacks: dict | None = None, **training) -> Path:
    """Write the CSPDarknet model YAML at scale n into ``folder``; ``training`` settings merge over the shipped ones."""
    d = yaml.safe_load((ROOT / "cfg/models/smartcash_cspdarknet_yolov5.yaml").read_text())
    if callbacks:
        d["smartcash"]["callbacks"] = callbacks
    d["smartcash"]["training"] = {**d["smartcash"].get("training", {}), **training}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "smartcash_cspdarknet_yolov5n.yaml"  # scale n from the name, as Ultralytics does
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def effb4_yaml(folder: Path, backbone_weights=None, backbone: str | None = None, **training) -> Path:
    """Write the shipped EfficientNet-B4 model YAML into ``folder`` with an explicit, offline ``backbone_weights``.

    ``backbone`` swaps the timm model (channels follow from timm); ``training`` settings merge over the shipped ones.
    """
    d = yaml.safe_load(EFFB4_SHIPPED.read_text())
    d["smartcash"]["backbone_weights"] = backbone_weights
    d["smartcash"]["training"] = {**d["smartcash"].get("training", {}), **training}
    if backbone:
        d["backbone"][0][3][0] = backbone
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "smartcash_effb4_yolov5.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def effb4_random(tmp_path_factory) -> Path:
    """The shipped EfficientNet-B4 model YAML with ``backbone_weights: null`` (random init, nothing fetched)."""
    return effb4_yaml(tmp_path_factory.mktemp("effb4_random"))


REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(hf_home: Path, repo: str, state: dict[str, torch.Tensor]) -> Path:
    """Write ``state`` as ``model.safetensors`` of ``repo`` in the hub cache layout under ``hf_home/hub``.

    The layout huggingface_hub reads offline (``HF_HUB_OFFLINE=1``): what a machine that fetched timm's weights once
    holds, so ``backbone_weights: timm`` is tested without the hub.
    """
    from safetensors.torch import save_file

    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    (folder / "refs").mkdir()
    (folder / "refs/main").write_text(REVISION)
    return snapshot / "model.safetensors"


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 17-class SmartCash tree at 96 px: 8 originals + 8 aug_* in train, 4 in valid, 2 in test."""
    return generate_sample_dataset(
        tmp_path_factory.mktemp("tiny") / "data", n_train=8, n_valid=4, n_test=2, imgsz=96, seed=1
    )


FAST = {"imgsz": 64, "batch": 4, "workers": 0, "plots": False, "exist_ok": True}
"""Training arguments of the tiny real runs: 64 px, four images a batch, no worker processes, no plots."""


class TrainedRun(NamedTuple):
    """A finished real run: the trainer that ran it and what its ``train()`` returned (``result.save_dir``, ...)."""

    trainer: Any
    result: Any


def train_tiny_run(tiny_data: Path, project: Path, model: Path, backbone: str) -> TrainedRun:
    """One real 1-epoch run of ``model`` from the shipped training cfg of ``backbone``, in ``project/backbone``."""
    from smartcash_ultra import SmartCashTrainer

    cfg = ROOT / f"cfg/smartcash_{backbone}.yaml"
    overrides = {"model": str(model), "data": str(tiny_data), "epochs": 1, **FAST, "project": str(project)}
    trainer = SmartCashTrainer(cfg, overrides={**overrides, "name": backbone})
    return TrainedRun(trainer, trainer.train())


def shared(run, save_dir: Path):
    """Yield ``run`` to the session's tests, then fail if any of them changed a file below its ``save_dir``."""
    before = tree_digest(save_dir)
    yield run
    assert tree_digest(save_dir) == before, f"a test wrote into the shared run {save_dir}: copy it to tmp_path first"


@pytest.fixture(scope="session")
def cspdarknet_run(tiny_data, tmp_path_factory) -> Iterator[TrainedRun]:
    """The session's finished 1-epoch CSPDarknet-n run on ``tiny_data``: read it, never write into it.

    Every test that only needs a trained model, its checkpoints or its run folder shares it; a test that writes into
    a run (resume, extend, a second run into the same folder) copies ``result.save_dir`` to its ``tmp_path`` first.
    """
    run = train_tiny_run(tiny_data, tmp_path_factory.mktemp("cspdarknet_run"), CSP_N_YAML, "cspdarknet")
    yield from shared(run, run.result.save_dir)


@pytest.fixture(scope="session")
def effb4_run(tiny_data, effb4_random, tmp_path_factory) -> Iterator[TrainedRun]:
    """The session's finished 1-epoch EfficientNet-B4 run (random init) on ``tiny_data``: read it, never write in it."""
    run = train_tiny_run(tiny_data, tmp_path_factory.mktemp("effb4_run"), effb4_random, "effb4")
    yield from shared(run, run.result.save_dir)


class CliRun(NamedTuple):
    """A finished ``yolo train`` run: its process (return code, output) and its save dir."""

    proc: subprocess.CompletedProcess
    save_dir: Path


def yolo_train_tiny(tiny_data: Path, project: Path, model: Path, backbone: str) -> CliRun:
    """``yolo train cfg=cfg/smartcash_<backbone>.yaml model=...`` for 1 epoch on ``tiny_data``, in ``project/cli``."""
    args = [f"cfg=cfg/smartcash_{backbone}.yaml", f"model={model}", f"data={tiny_data}", "epochs=1"]
    args += [f"{k}={v}" for k, v in {**FAST, "project": project, "name": "cli"}.items()]
    return CliRun(run_yolo("train", *args), project / "cli")


@pytest.fixture(scope="session")
def cspdarknet_cli_run(tiny_data, tmp_path_factory) -> Iterator[CliRun]:
    """The session's ``yolo train`` 1-epoch run of CSPDarknet-n on ``tiny_data``: read it, never write into it."""
    run = yolo_train_tiny(tiny_data, tmp_path_factory.mktemp("cspdarknet_cli"), CSP_N_YAML, "cspdarknet")
    yield from shared(run, run.save_dir)


@pytest.fixture(scope="session")
def effb4_cli_run(tiny_data, effb4_random, tmp_path_factory) -> Iterator[CliRun]:
    """The session's ``yolo train`` 1-epoch run of EfficientNet-B4 (random init): read it, never write into it."""
    run = yolo_train_tiny(tiny_data, tmp_path_factory.mktemp("effb4_cli"), effb4_random, "effb4")
    yield from shared(run, run.save_dir)


@pytest.fixture(scope="session")
def tiny_jpeg_data(tiny_data, tmp_path_factory) -> Path:
    """The same tiny tree saved as JPEG images (what stock Ultralytics reads)."""
    return export_as_jpeg(tiny_data, tmp_path_factory.mktemp("tiny_jpeg"))


def export_as_jpeg(data_yaml: Path, dst: Path) -> Path:
    """Write every array of a SmartCash tree as a JPEG with its label, plus a data.yaml; return that YAML."""
    src = data_yaml.parent
    for npy in src.glob("*/images/*.npy"):
        split = npy.parts[-3]
        (dst / split / "images").mkdir(parents=True, exist_ok=True)
        (dst / split / "labels").mkdir(parents=True, exist_ok=True)
        rgb = np.load(npy)
        cv2.imwrite(
            str(dst / split / "images" / f"{npy.stem}.jpg"),
            cv2.cvtColor((rgb * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR),
        )
        label = src / split / "labels" / f"{npy.stem}.txt"
        if label.exists():
            (dst / split / "labels" / label.name).write_bytes(label.read_bytes())
    (dst / "data.yaml").write_text(data_yaml.read_text())
    return dst / "data.yaml"


def tree_digest(root: Path) -> dict[str, str]:
    """Map every file below ``root`` (except Ultralytics' own label caches) to the SHA-256 of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix != ".cache"
    }


def write_data_yaml(root: Path, names: dict[int, str], **extra) -> Path:
    """Write a data.yaml for a tree with train/valid image folders."""
    path = root / "data.yaml"
    path.write_text(yaml.safe_dump({"train": "train/images", "val": "valid/images", "names": names, **extra}))
    return path


def run_python(
    code: str, *args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run Python code with ``args`` in a fresh interpreter (the installed package, its start-up hook included)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        text=True,
        capture_output=True,
        timeout=timeout,
    )


STARTUP_PROBE = """
import json, sys
seen = {"torch": "torch" in sys.modules, "ultralytics": "ultralytics" in sys.modules}  # after the start-up hook


def outcome(call):
    try:
        return ["ok", call()]
    except Exception as e:
        return ["error", f"{type(e).__name__}: {e}"]


from ultralytics.cfg import entrypoint  # what the `yolo` command imports first
from ultralytics.utils import checks

seen["check_file_patched"] = getattr(checks.check_file, "smartcash", False)
seen["yolo_model_imported"] = "ultralytics.models.yolo.model" in sys.modules
from ultralytics import YOLO

seen["task_map_patched"] = getattr(YOLO.task_map.fget, "smartcash", False)
seen["check_yaml"] = outcome(lambda: str(checks.check_yaml("smartcash_effb4.yaml")))
seen["effb4_random"] = outcome(lambda: type(YOLO(sys.argv[1]).model).__name__)
seen["predict_npy"] = outcome(lambda: YOLO("yolov8n.yaml").predict(sys.argv[2], imgsz=64, verbose=False)[0].path)
import smartcash_ultra

smartcash_ultra.SmartCashTrainer  # a package name, resolved lazily
seen["task_map_patched_after_package"] = getattr(YOLO.task_map.fget, "smartcash", False)
print(json.dumps(seen))
"""
"""What a fresh interpreter sees, step by step, from its start (the start-up hook) to a SmartCash name and a YOLO call.

Its argv: the EfficientNet-B4 model YAML (random init) and one ``.npy`` file. Run in an empty folder, so a YAML name
resolves only through the package.
"""


def startup_probe(effb4_random: Path, tiny_data: Path, folder: Path, env: dict | None = None) -> dict:
    """Run :data:`STARTUP_PROBE` in a fresh interpreter in the empty ``folder``; return what it saw."""
    npy = sorted((tiny_data.parent / "test/images").glob("*.npy"))[0]
    folder.mkdir(parents=True)
    proc = run_python(STARTUP_PROBE, str(effb4_random), str(npy), cwd=folder, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def plugin_on(effb4_random, tiny_data, tmp_path_factory) -> dict:
    """:data:`STARTUP_PROBE` with the plugin installed as it is: one interpreter for every test that asks."""
    return startup_probe(effb4_random, tiny_data, tmp_path_factory.mktemp("probe") / "on")


@pytest.fixture(scope="session")
def plugin_off(effb4_random, tiny_data, tmp_path_factory) -> dict:
    """:data:`STARTUP_PROBE` with ``SMARTCASH_ULTRA_DISABLE=1``: one interpreter for every test of the switch."""
    return startup_probe(
        effb4_random, tiny_data, tmp_path_factory.mktemp("probe") / "off", {"SMARTCASH_ULTRA_DISABLE": "1"}
    )


def run_yolo(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the `yolo` console script of this environment in a subprocess."""
    yolo = Path(sys.executable).with_name("yolo")
    return subprocess.run(
        [str(yolo), *args], cwd=cwd, env={**os.environ, **(env or {})}, text=True, capture_output=True, timeout=timeout
    )


def assert_run_files_agree(save_dir: Path, status: str, epochs: list[int], session: list[int] | None = None) -> dict:
    """Check that metrics.json, events.jsonl and results.csv tell one story of how a run ended; return the summary.

    ``epochs``: the epoch rows all must hold, once each; ``session``: those the last session reported in
    events.jsonl (default: all). The completion event closes the log with the status and reason of metrics.json.
    """
    import csv
    import json

    import pytest

    document = json.loads((save_dir / "metrics.json").read_text())
    summary = document["summary"]
    events = [json.loads(line) for line in (save_dir / "events.jsonl").read_text().splitlines()]
    last = events[-1]
    assert (last["event"], last["status"], summary["status"]) == ("completed", status, status), (last, summary)
    assert last["reason"] == summary["reason"] and "\x1b" not in json.dumps(events) + json.dumps(document)
    assert last["epochs_completed"] == summary["epochs_completed"] == (epochs[-1] if epochs else 0)
    with open(save_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f, skipinitialspace=True))
    assert [r["epoch"] for r in document["epochs"]] == [int(float(r["epoch"])) for r in rows] == epochs
    for record, row in zip(document["epochs"], rows, strict=True):  # the same figures
        if record["validated"]:
            assert record["metrics/mAP50(B)"] == pytest.approx(float(row["metrics/mAP50(B)"]), rel=1e-5, abs=1e-6)
    started = max(i for i, e in enumerate(events) if e["event"] == "started")
    reported = [e["metrics"]["epoch"] for e in events[started:] if e["event"] == "metrics"]
    assert reported == (epochs if session is None else session)
    assert [e["event"] for e in events[started:]].count("completed") == 1
    return summary
