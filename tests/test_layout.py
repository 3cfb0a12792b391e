"""The package layout: checkpoints written before it still load, predict and resume; imports only go down the layers."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from ultralytics import YOLO

from smartcash_ultra import resume_training
from smartcash_ultra._moved import MOVED
from smartcash_ultra.nn import SmartCashDetectionModel, TimmBackbone

FIXTURE = Path(__file__).parent / "fixtures/pre_layout_last.pt"
"""Written at f413e07 by ``fixtures/make_pre_layout_checkpoint.py``: its pickle names the flat layout's paths."""
LAYERS = [
    "utils",
    ("nn", "data"),
    "callbacks",
    "engine",
    "evaluation",
    "tools",
    ("integration", "_startup", "__init__"),
]
"""Bottom to top; a module may import from its own layer and the ones below (``_moved`` sits beside them all)."""


def test_fixture_pickles_the_old_class_paths():
    pickled = FIXTURE.read_bytes()
    assert b"smartcash_ultra.model" in pickled and b"TimmBackbone" in pickled
    assert b"smartcash_ultra.nn.model" not in pickled and b"smartcash_ultra.nn.backbone" not in pickled


def test_checkpoint_from_before_the_layout_loads_and_predicts(tiny_data):
    model = YOLO(FIXTURE)
    assert isinstance(model.model, SmartCashDetectionModel)
    assert any(isinstance(m, TimmBackbone) for m in model.model.model)
    arrays = sorted((tiny_data.parent / "test/images").glob("*.npy"))
    results = model.predict([str(p) for p in arrays], imgsz=64, verbose=False)
    assert [Path(r.path).name for r in results] == [p.name for p in arrays]
    assert all(r.boxes is not None for r in results)


@pytest.mark.slow
def test_checkpoint_from_before_the_layout_resumes(tiny_data, tmp_path):
    last = tmp_path / "old/weights/last.pt"
    last.parent.mkdir(parents=True)
    shutil.copyfile(FIXTURE, last)
    result = resume_training(
        last, additional_epochs=1, overrides={"data": str(tiny_data), "save_dir": str(tmp_path / "old")}
    )
    assert result.last == last and result.best.exists()
    reloaded = YOLO(result.last).ckpt
    assert reloaded["epoch"] == 1 and reloaded["optimizer"] is not None  # the added epoch, kept extendable
    assert np.isfinite(result.metrics["metrics/mAP50(B)"])


def test_every_old_module_path_is_its_new_module():
    import importlib

    for old, new in MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new), old


@pytest.mark.slow
def test_old_module_paths_still_run_with_python_m(tmp_path):
    args = ["--n-train", "1", "--n-valid", "1", "--n-test", "0", "--imgsz", "64"]
    run = subprocess.run(
        [sys.executable, "-m", "smartcash_ultra.sample_data", str(tmp_path / "sample"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "sample/data.yaml").is_file()


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for i, layer in enumerate(LAYERS):
        if top in ((layer,) if isinstance(layer, str) else layer):
            return i
    raise AssertionError(f"{module} is in no layer")


def _package_imports() -> dict[str, set[str]]:
    """Map every module of the package to the package modules it imports, at module level or inside a function.

    Every spelling counts: ``import smartcash_ultra.x``, ``from smartcash_ultra.x import y``, ``from smartcash_ultra
    import x`` (the module ``x``, or the package's ``__init__`` for a name defined there) and relative imports. Only
    the module named is an edge, not the parent packages Python imports on the way.
    """
    package = ROOT / "smartcash_ultra"
    files = {
        ".".join(("smartcash_ultra", *path.relative_to(package).with_suffix("").parts)).removesuffix(".__init__"): path
        for path in package.rglob("*.py")
    }
    graph = {}
    for module, path in files.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]  # what a relative import starts at
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = ".".join(here.split(".")[: len(here.split(".")) - node.level + 1])
                    base = f"{parent}.{base}" if base else parent
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def test_the_import_graph_sees_every_spelling():
    graph = _package_imports()
    assert "smartcash_ultra._moved" in graph["smartcash_ultra"]  # `from smartcash_ultra import _moved`
    assert "smartcash_ultra.integration" in graph["smartcash_ultra"]  # inside a function
    assert {"smartcash_ultra.nn.backbone", "smartcash_ultra.nn.model"} <= graph["smartcash_ultra.nn"]


def test_imports_only_go_down_the_layers():
    upward = [
        f"{module} -> {target}"
        for module, targets in _package_imports().items()
        if not module.endswith("._moved")
        for target in sorted(targets)
        if not target.endswith("._moved") and _layer(target) > _layer(module)
    ]
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_the_package_has_no_import_cycle():
    graph = _package_imports()
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        for target in sorted(graph[module]):
            if target in path:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in done:
                visit(target, [*path, target])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_dir_lists_the_public_names():
    import smartcash_ultra

    assert set(smartcash_ultra.__all__) <= set(dir(smartcash_ultra))  # tab completion offers them
