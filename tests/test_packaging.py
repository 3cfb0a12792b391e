"""The package carries its YAMLs: they resolve by name from any folder, in the wheel and in a clone; a wheel installs.

A name resolves as Ultralytics resolves its own (``yolov8n.yaml``): a file that exists as given wins, then the
package's ``cfg/`` (the repository's ``cfg/``, copied into the wheel as ``smartcash_ultra/cfg``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, hub_cache, run_python

PROBE = """
import json
from ultralytics import YOLO
from ultralytics.utils import YAML, checks
out = {}
for name in ("smartcash_effb4_yolov5.yaml", "smartcash_cspdarknet_yolov5s.yaml", "smartcash_cspdarknet_yolov5n.yaml"):
    m = YOLO(name)
    out[name] = [type(m.model).__name__, m.model.yaml["scale"], m.model.yaml.get("backbone")[0][2]]
for name in ("smartcash_effb4.yaml", "smartcash_cspdarknet.yaml"):
    cfg = YAML.load(checks.check_yaml(name))
    out["cfg " + name] = [cfg["task"], cfg["model"], "backbone" in cfg]
print(json.dumps(out))
"""


def last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_model_yamls_and_training_cfgs_resolve_by_name_from_any_folder(tmp_path):
    import timm

    # the shipped EfficientNet-B4 YAML asks for timm's weights: a machine that fetched them once has them cached
    hf_home = tmp_path / "hf_home"
    hub_cache(hf_home, "timm/efficientnet_b4.ra2_in1k", timm.create_model("efficientnet_b4").state_dict())
    (tmp_path / "work").mkdir()
    out = last_json(run_python(PROBE, cwd=tmp_path / "work", env={"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}))
    assert out["smartcash_effb4_yolov5.yaml"] == ["SmartCashDetectionModel", "", "TimmBackbone"]
    assert out["smartcash_cspdarknet_yolov5s.yaml"] == ["SmartCashDetectionModel", "s", "Conv"]
    assert out["smartcash_cspdarknet_yolov5n.yaml"] == ["SmartCashDetectionModel", "n", "Conv"]
    # a training cfg resolves by name too, and names its model YAML
    assert out["cfg smartcash_effb4.yaml"] == ["detect", "smartcash_effb4_yolov5.yaml", False]
    assert out["cfg smartcash_cspdarknet.yaml"] == ["detect", "smartcash_cspdarknet_yolov5s.yaml", False]


@pytest.mark.slow
def test_a_users_copy_given_by_path_wins(tmp_path):
    d = yaml.safe_load((ROOT / "cfg/models/smartcash_cspdarknet_yolov5.yaml").read_text())
    d["smartcash"]["training"]["val_interval"] = 3  # mark the user's copy
    (tmp_path / "smartcash_cspdarknet_yolov5.yaml").write_text(yaml.safe_dump(d))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/smartcash_effb4_yolov5.yaml").write_text(yaml.safe_dump(d))
    code = """
import json
from ultralytics import YOLO
a = YOLO("smartcash_cspdarknet_yolov5n.yaml").model.yaml
b = YOLO("sub/smartcash_effb4_yolov5.yaml").model.yaml
print(json.dumps([a["smartcash"]["training"]["val_interval"], a["scale"], b["smartcash"]["training"]["val_interval"]]))
"""
    assert last_json(run_python(code, cwd=tmp_path)) == [3, "n", 3]


@pytest.mark.slow
def test_stock_names_and_missing_names_resolve_as_stock(tmp_path):
    code = """
import json
from ultralytics.utils import checks
out = [checks.check_yaml("yolov8.yaml"), checks.check_yaml("smartcash_nothing.yaml", hard=False)]
try:
    checks.check_yaml("smartcash_nothing.yaml")
except FileNotFoundError as e:
    out.append(str(e))
print(json.dumps(out))
"""
    stock, soft, error = last_json(run_python(code, cwd=tmp_path))
    assert stock.endswith("ultralytics/cfg/models/v8/yolov8.yaml")
    assert soft == [] and error == "'smartcash_nothing.yaml' does not exist"


@pytest.mark.slow
def test_a_training_cfg_given_as_model_says_to_pass_it_as_cfg(tmp_path):
    proc = run_python("from ultralytics import YOLO; YOLO('smartcash_defaults.yaml')", cwd=tmp_path)
    assert proc.returncode != 0
    assert "smartcash_defaults.yaml is a training cfg (" in proc.stderr
    assert "not a model YAML: pass it as cfg=smartcash_defaults.yaml" in proc.stderr


@pytest.mark.slow
def test_disable_switch_turns_name_resolution_off(tmp_path):
    code = "from ultralytics.utils import checks; checks.check_yaml('smartcash_effb4.yaml')"
    proc = run_python(code, cwd=tmp_path, env={"SMARTCASH_ULTRA_DISABLE": "1"})
    assert proc.returncode != 0 and "'smartcash_effb4.yaml' does not exist" in proc.stderr


def build_wheel(dest: Path) -> Path:
    """Build the wheel from the working tree, offline (hatchling from this environment, no build isolation)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(dest), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    return next(dest.glob("smartcash_ultra-*.whl"))


@pytest.mark.slow
def test_wheel_carries_every_yaml_of_cfg_unchanged(tmp_path):
    with zipfile.ZipFile(build_wheel(tmp_path)) as z:
        names = set(z.namelist())
        shipped = {p.relative_to(ROOT / "cfg").as_posix(): p for p in (ROOT / "cfg").rglob("*.yaml")}
        assert shipped, "cfg/ holds no YAML"
        for rel, path in shipped.items():
            assert f"smartcash_ultra/cfg/{rel}" in names, rel
            assert z.read(f"smartcash_ultra/cfg/{rel}") == path.read_bytes(), rel
        assert "smartcash_ultra.pth" in names
        assert not [n for n in names if n.startswith("cfg/")]


def test_editable_install_reads_the_checkouts_cfg_in_place(tmp_path):
    from hatchling.build import build_editable

    from smartcash_ultra.utils.shipped import cfg_dir

    with zipfile.ZipFile(tmp_path / build_editable(str(tmp_path))) as z:
        names = z.namelist()
    assert "smartcash_ultra.pth" in names
    assert not [n for n in names if "cfg/" in n]  # no second copy of cfg/ in site-packages
    assert cfg_dir() == ROOT / "cfg"


@pytest.fixture
def wheel_venv(tmp_path):
    """A fresh venv holding only the built wheel; the project's dependencies come from this environment's packages.

    A ``.pth`` line puts this environment's site-packages after the venv's own, so torch is not installed twice. Its
    ``.pth`` files (the editable install of this checkout among them) are not run: only the wheel's copy is found.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin/python"
    site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    (site / "_project_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    wheel = build_wheel(tmp_path / "dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    # the `yolo` command, as pip writes it for Ultralytics' console script into the environment that installs it
    yolo = venv / "bin/yolo"
    yolo.write_text(f"#!{python}\nimport sys\nfrom ultralytics.cfg import entrypoint\nsys.exit(entrypoint())\n")
    yolo.chmod(0o755)
    yield venv
    shutil.rmtree(venv)


@pytest.mark.slow
def test_installed_wheel_trains_by_model_name_and_predicts_from_an_empty_folder(wheel_venv, tiny_data, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "SMARTCASH_ULTRA_DISABLE"}}
    env["PATH"] = f"{wheel_venv / 'bin'}{os.pathsep}{env['PATH']}"

    def run(*cmd):
        proc = subprocess.run(cmd, cwd=work, env=env, text=True, capture_output=True, timeout=900)
        assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-3000:])
        return proc

    where = run("python", "-c", "import smartcash_ultra; print(smartcash_ultra.__file__)").stdout.strip()
    assert where.startswith(str(wheel_venv)), where  # the wheel's copy, not this checkout
    fast = ["epochs=1", "imgsz=64", "batch=4", "workers=0", "plots=False", f"project={work / 'runs'}"]
    run("yolo", "train", "model=smartcash_cspdarknet_yolov5n.yaml", f"data={tiny_data}", *fast, "name=cli")
    best = work / "runs/cli/weights/best.pt"
    assert best.is_file()
    code = (
        "from ultralytics import YOLO; "
        f"YOLO('smartcash_cspdarknet_yolov5n.yaml').train(data={str(tiny_data)!r}, epochs=1, imgsz=64, batch=4, "
        f"workers=0, plots=False, project={str(work / 'runs')!r}, name='py')"
    )
    run("python", "-c", code)
    assert (work / "runs/py/weights/best.pt").is_file()
    run(
        "yolo",
        "train",
        "cfg=smartcash_cspdarknet.yaml",
        "model=smartcash_cspdarknet_yolov5n.yaml",
        f"data={tiny_data}",
        *fast,
        "name=cfg",
    )
    npy = sorted((tiny_data.parent / "test/images").glob("*.npy"))[0]
    pred = run("yolo", "predict", f"model={best}", f"source={npy}", "imgsz=64", "save=False")
    assert f"image 1/1 {npy}: 64x64" in pred.stdout + pred.stderr
    onnx = run("yolo", "export", f"model={best}", "format=onnx", "imgsz=64")
    assert (best.parent / "best.onnx").is_file(), onnx.stderr[-2000:]
    pred = run("yolo", "predict", f"model={best.parent / 'best.onnx'}", f"source={npy}", "imgsz=64", "save=False")
    assert f"image 1/1 {npy}: 64x64" in pred.stdout + pred.stderr
