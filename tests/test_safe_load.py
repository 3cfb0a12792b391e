"""Checkpoints load as Ultralytics loads them: ``ULTRALYTICS_SAFE_LOAD`` decides, for every read of the plugin too.

In safe mode (``ULTRALYTICS_SAFE_LOAD=1``) a genuine SmartCash ``best.pt``/``last.pt`` loads, predicts and resumes,
and a checkpoint whose pickle runs code is refused by every route without running. In the default mode the plugin
loads as ``YOLO()`` does: no route of the plugin is less safe than Ultralytics' own.
"""

from __future__ import annotations

import ast
import pickletools
import shutil
import zipfile
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import ROOT, effb4_yaml, run_python, run_yolo
from ultralytics import YOLO
from ultralytics.nn import tasks

from smartcash_ultra.callbacks.early_stopping import checkpoint_state
from smartcash_ultra.engine.checkpoints import keep_last_whole
from smartcash_ultra.engine.trainer import SmartCashTrainer, resume_training
from smartcash_ultra.nn import SmartCashDetectionModel, TimmBackbone, safe_load

PRE_LAYOUT = Path(__file__).parent / "fixtures/pre_layout_last.pt"
"""A SmartCash training checkpoint with timm's tiny ``test_efficientnet`` backbone, pickling the flat layout's paths."""


class Payload:
    """Unpickling this creates the marker file: stands for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def write_payload(path: Path, marker: Path) -> Path:
    """Save a checkpoint that looks like a training one (``train_args``, epoch, optimizer) and carries a payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "train_args": {"epochs": 3}, "optimizer": {}, "model": None, "x": Payload(marker)}, path)
    return path


def outcome(call):
    """Return the exception ``call()`` raised (None if none): a test then first checks what ran."""
    try:
        call()
    except Exception as e:
        return e
    return None


@pytest.fixture
def safe_mode(monkeypatch):
    """``ULTRALYTICS_SAFE_LOAD=1`` as Ultralytics reads it (once, at import, into ``ultralytics.nn.tasks``)."""
    monkeypatch.setattr(tasks, "SAFE_LOAD", True)


def test_resume_training_never_runs_a_payload_in_safe_mode(safe_mode, tmp_path):
    payload = write_payload(tmp_path / "run/weights/last.pt", tmp_path / "ran")
    for call in (resume_training, SmartCashTrainer.resume):
        error = outcome(partial(call, payload, additional_epochs=1))
        assert not (tmp_path / "ran").exists(), f"{call.__qualname__} ran the payload"
        assert isinstance(error, ValueError) and str(error).startswith(f"{payload}: "), error
    with pytest.raises(TypeError):  # Ultralytics' own refusal
        YOLO(payload)
    assert not (tmp_path / "ran").exists()
    message = str(outcome(lambda: resume_training(payload)))
    assert message == (
        f"{payload}: refused by the restricted load (ULTRALYTICS_SAFE_LOAD=1): it names io.open, which is no "
        "class of a SmartCash, Ultralytics or torch model; nothing in it was run. Load only checkpoints you trust"
    )


@pytest.mark.slow
@pytest.mark.parametrize("safe", [False, True], ids=["default", "safe"])
def test_every_read_of_the_plugin_treats_a_payload_as_yolo_does(safe, monkeypatch, tmp_path):
    """In safe mode no route runs it; in the default mode each reads it as ``YOLO()`` does (a pickle: it runs)."""
    monkeypatch.setattr(tasks, "SAFE_LOAD", safe)
    routes = {
        "YOLO()": lambda path: YOLO(path),
        "resume_training": lambda path: resume_training(path, additional_epochs=1),
        "SmartCashTrainer.resume": lambda path: SmartCashTrainer.resume(path),
        "early stopping's state of an old checkpoint": lambda path: checkpoint_state(str(path)),
        "final_eval's strip of last.pt": lambda path: strip_last(path),
    }
    ran = {}
    for i, (route, call) in enumerate(routes.items()):
        marker = tmp_path / f"{i}.ran"
        outcome(partial(call, write_payload(tmp_path / f"{i}/weights/last.pt", marker)))
        ran[route] = marker.exists()
    env = {"ULTRALYTICS_SAFE_LOAD": "1" if safe else "0"}
    marker = tmp_path / "cli.ran"
    payload = write_payload(tmp_path / "cli/weights/last.pt", marker)
    proc = run_yolo("train", "resume", f"model={payload}", f"project={tmp_path / 'new'}", cwd=tmp_path, env=env)
    ran["yolo train resume"] = marker.exists()
    assert proc.returncode == 1 and not (tmp_path / "new").exists()
    assert ran == dict.fromkeys(ran, not safe)


def strip_last(path: Path):
    """Call Ultralytics' ``strip_optimizer`` on ``last.pt`` as ``final_eval`` does, under :func:`keep_last_whole`."""
    import ultralytics.engine.trainer as engine

    with keep_last_whole(path):
        return engine.strip_optimizer(path)


@pytest.mark.parametrize("run", ["cspdarknet_run", "effb4_run"])
@pytest.mark.parametrize("name", ["best.pt", "last.pt"])
def test_genuine_checkpoints_load_and_predict_in_safe_mode(run, name, safe_mode, tiny_data, request):
    path = request.getfixturevalue(run).result.save_dir / "weights" / name
    model = YOLO(path)
    assert isinstance(model.model, SmartCashDetectionModel)
    assert (run == "effb4_run") == any(isinstance(m, TimmBackbone) for m in model.model.model)
    arrays = sorted((tiny_data.parent / "test/images").glob("*.npy"))
    results = model.predict([str(p) for p in arrays], imgsz=64, verbose=False)
    assert [Path(r.path).name for r in results] == [p.name for p in arrays]


def test_a_checkpoint_from_before_the_layout_loads_in_safe_mode(safe_mode):
    model = YOLO(PRE_LAYOUT)
    assert isinstance(model.model, SmartCashDetectionModel)
    assert any(isinstance(m, TimmBackbone) for m in model.model.model)


@pytest.mark.parametrize("backbone", ["resnet18", "convnext_atto"])
def test_other_timm_backbones_load_in_safe_mode(backbone, safe_mode, tmp_path):
    """Other families pickle other timm classes (``FeatureListNet``, the ``Format`` enum): allowed by the same rule."""
    model = YOLO(effb4_yaml(tmp_path, backbone=backbone)).model
    torch.save({"model": model, "train_args": {}}, tmp_path / "model.pt")
    loaded = YOLO(tmp_path / "model.pt").model
    assert type(loaded) is SmartCashDetectionModel and loaded.model[0].name == backbone


@pytest.mark.slow
def test_a_genuine_last_pt_resumes_in_safe_mode(cspdarknet_run, safe_mode, tiny_data, tmp_path):
    """The resume's reads (its checks, Ultralytics' resume, early stopping's state) pass the restricted load; the
    timm classes an EfficientNet-B4 checkpoint adds are loaded by ``test_genuine_checkpoints_load_...``."""
    run = shutil.copytree(cspdarknet_run.result.save_dir, tmp_path / "cspdarknet")
    result = resume_training(
        run / "weights/last.pt", additional_epochs=1, overrides={"data": str(tiny_data), "save_dir": str(run)}
    )
    assert result.last == run / "weights/last.pt"
    assert tasks.torch_safe_load(result.last, safe_only=True)[0]["epoch"] == 1


@pytest.mark.slow
def test_the_environment_variable_decides_for_the_yolo_command_and_python(effb4_run, tiny_data, tmp_path):
    """``ULTRALYTICS_SAFE_LOAD=1`` set for real: a genuine last.pt is read, a payload is refused, nothing runs."""
    env = {"ULTRALYTICS_SAFE_LOAD": "1"}
    last = effb4_run.result.save_dir / "weights/last.pt"
    proc = run_yolo("train", "resume", f"model={last}", cwd=tmp_path, env=env)
    assert proc.returncode == 1
    assert f"{last}: the run finished its 1 epochs" in proc.stdout + proc.stderr  # read, then refused as finished
    payload = write_payload(tmp_path / "run/weights/last.pt", tmp_path / "ran")
    code = (
        "import sys\n"
        "from smartcash_ultra import resume_training\n"
        "try:\n"
        "    resume_training(sys.argv[1], additional_epochs=1)\n"
        "except ValueError as e:\n"
        "    print(e)\n"
    )
    proc = run_python(code, str(payload), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused by the restricted load" in proc.stdout and not (tmp_path / "ran").exists()


def test_safe_mode_allows_exactly_the_classes_of_the_plugin_and_of_timm_backbones(effb4_run):
    """Only classes: the plugin's two (present and flat-layout paths) and timm's modules a checkpoint names."""
    names = pickled_globals(effb4_run.result.save_dir / "weights/best.pt") + pickled_globals(PRE_LAYOUT)
    allowed = safe_load.allowed_classes(names)
    assert set(allowed) == {n for n in names if n.startswith(("timm.", "smartcash_ultra."))}
    assert {"timm.models._features.FeatureInfo", "timm.models.efficientnet.EfficientNetFeatures"} < set(allowed)
    assert {allowed[n] for n in safe_load.PLUGIN_CLASSES if n in allowed} == {SmartCashDetectionModel, TimmBackbone}
    assert all(isinstance(cls, type) for cls in allowed.values())
    refused = [
        "builtins.open",
        "os.system",
        "timm.create_model",  # functions, of timm too
        "timm.layers.activations.swish",
        "timm.models._builder.load_pretrained",
        "timm.models.efficientnet.nn",  # a module, and a layer of another module under this module's path
        "timm.models.efficientnet.LayerNormAct2d",
        "timm.no_such_module.Thing",
        "timm.data.transforms.ToNumpy",  # a timm class that is no layer
        "smartcash_ultra.engine.trainer.SmartCashTrainer",  # another class of the plugin
    ]
    assert safe_load.allowed_classes(refused) == {}


def pickled_globals(path: Path) -> list[str]:
    """Every global a ``torch.save`` archive's pickle names (torch's own scan leaves out those allowed already)."""
    with zipfile.ZipFile(path) as archive:
        data = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))
    return sorted({arg.replace(" ", ".") for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"})


def test_a_timm_function_in_a_checkpoint_is_refused_in_safe_mode(safe_mode, tmp_path):
    import timm

    path = tmp_path / "weights/last.pt"
    path.parent.mkdir()
    torch.save({"train_args": {}, "epoch": 0, "optimizer": {}, "fn": timm.layers.activations.swish}, path)
    assert "it names timm.layers.activations.swish" in str(outcome(lambda: resume_training(path)))
    with pytest.raises(TypeError, match="references types outside"):
        YOLO(path)


def test_canary_a_restricted_load_enters_safeload_loading_with_the_file(effb4_run, monkeypatch):
    """Reach 13: ``torch_safe_load(..., safe_only=True)`` prepares its load by ``_SafeLoad.loading(file)``.

    The plugin's wrapper of that method is what adds a checkpoint's SmartCash and timm classes; ``_SafeLoad._lock``
    guards the additions. A restricted load that no longer enters it, or a lock that moved, fails here.
    """
    assert getattr(tasks._SafeLoad.loading, "smartcash", False)  # installed with the routing (integration.install)
    assert hasattr(tasks._SafeLoad._lock, "acquire")
    seen = []
    wrapped = tasks._SafeLoad.loading
    monkeypatch.setattr(tasks._SafeLoad, "loading", lambda weight: seen.append(str(weight)) or wrapped(weight))
    best = effb4_run.result.save_dir / "weights/best.pt"
    tasks.torch_safe_load(best, safe_only=True)
    assert seen == [str(best)]


def test_no_module_of_the_package_reads_a_checkpoint_but_through_ultralytics_loader():
    """``torch.load`` and ``torch_load`` (``weights_only=False`` by default) are used nowhere; ``torch_safe_load`` once.

    The one other read is of backbone weights files, by timm's ``load_state_dict(..., weights_only=True)``.
    """
    uses = []
    for path in sorted((ROOT / "smartcash_ultra").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
            if isinstance(node, ast.Attribute) and name == "load" and getattr(node.value, "id", None) == "torch":
                name = "torch.load"
            if name in {"torch_load", "torch_safe_load", "torch.load"}:
                uses.append((path.relative_to(ROOT).as_posix(), name))
    assert uses == [("smartcash_ultra/nn/safe_load.py", "torch_safe_load")]
