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
import json, os, sys
from ultralytics import YOLO
from ultralytics.utils import YAML, checks


def outcome(call):
    try:
        return ["ok", call()]
    except Exception as e:
        return ["error", f"{type(e).__name__}: {e}"]


empty, users = sys.argv[1:]
out = {}
os.chdir(empty)  # any folder: the names resolve to the package's cfg/
for name in ("smartcash_effb4_yolov5.yaml", "smartcash_cspdarknet_yolov5s.yaml", "smartcash_cspdarknet_yolov5n.yaml"):
    m = YOLO(name)
    out[name] = [type(m.model).__name__, m.model.yaml["scale"], m.model.yaml.get("backbone")[0][2]]
for name in ("smartcash_effb4.yaml", "smartcash_cspdarknet.yaml"):
    cfg = YAML.load(checks.check_yaml(name))
    out["cfg " + name] = [cfg["task"], cfg["model"], "backbone" in cfg]
out["stock"] = [checks.check_yaml("yolov8.yaml"), checks.check_yaml("smartcash_nothing.yaml", hard=False)]
out["missing"] = outcome(lambda: checks.check_yaml("smartcash_nothing.yaml"))
out["training cfg as model"] = outcome(lambda: YOLO("smartcash_defaults.yaml"))
os.chdir(users)  # a folder holding a user's copies
a = YOLO("smartcash_cspdarknet_yolov5n.yaml").model.yaml
b = YOLO("sub/smartcash_effb4_yolov5.yaml").model.yaml
out["users copy"] = [a["smartcash"]["training"]["val_interval"], a["scale"], b["smartcash"]["training"]["val_interval"]]
print(json.dumps(out))
"""
"""What a fresh interpreter resolves YAML names to, from an empty folder and from a folder with a user's copies."""


def last_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def resolved(tmp_path_factory) -> dict:
    """:data:`PROBE` run once, for every test of name resolution."""
    import timm

    tmp_path = tmp_path_factory.mktemp("names")
    # the shipped EfficientNet-B4 YAML asks for timm's weights: a machine that fetched them once has them cached
    hf_home = tmp_path / "hf_home"
    hub_cache(hf_home, "timm/efficientnet_b4.ra2_in1k", timm.create_model("efficientnet_b4").state_dict())
    d = yaml.safe_load((ROOT / "cfg/models/smartcash_cspdarknet_yolov5.yaml").read_text())
    d["smartcash"]["training"]["val_interval"] = 3  # mark the user's copy
    users = tmp_path / "users"
    (users / "sub").mkdir(parents=True)
    (users / "smartcash_cspdarknet_yolov5.yaml").write_text(yaml.safe_dump(d))
    (users / "sub/smartcash_effb4_yolov5.yaml").write_text(yaml.safe_dump(d))
    (tmp_path / "empty").mkdir()
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    return last_json(run_python(PROBE, str(tmp_path / "empty"), str(users), cwd=tmp_path / "empty", env=env))


@pytest.mark.slow
def test_model_yamls_and_training_cfgs_resolve_by_name_from_any_folder(resolved):
    out = resolved
    assert out["smartcash_effb4_yolov5.yaml"] == ["SmartCashDetectionModel", "", "TimmBackbone"]
    assert out["smartcash_cspdarknet_yolov5s.yaml"] == ["SmartCashDetectionModel", "s", "Conv"]
    assert out["smartcash_cspdarknet_yolov5n.yaml"] == ["SmartCashDetectionModel", "n", "Conv"]
    # a training cfg resolves by name too, and names its model YAML
    assert out["cfg smartcash_effb4.yaml"] == ["detect", "smartcash_effb4_yolov5.yaml", False]
    assert out["cfg smartcash_cspdarknet.yaml"] == ["detect", "smartcash_cspdarknet_yolov5s.yaml", False]


@pytest.mark.slow
def test_a_users_copy_given_by_path_wins(resolved):
    assert resolved["users copy"] == [3, "n", 3]


@pytest.mark.slow
def test_stock_names_and_missing_names_resolve_as_stock(resolved):
    stock, soft = resolved["stock"]
    assert stock.endswith("ultralytics/cfg/models/v8/yolov8.yaml")
    assert soft == [] and resolved["missing"] == ["error", "FileNotFoundError: 'smartcash_nothing.yaml' does not exist"]


@pytest.mark.slow
def test_a_training_cfg_given_as_model_says_to_pass_it_as_cfg(resolved):
    outcome, message = resolved["training cfg as model"]
    assert outcome == "error"
    assert "smartcash_defaults.yaml is a training cfg (" in message
    assert "not a model YAML: pass it as cfg=smartcash_defaults.yaml" in message


@pytest.mark.slow
def test_disable_switch_turns_name_resolution_off(plugin_on, plugin_off):
    assert plugin_on["check_yaml"] == ["ok", str(ROOT / "cfg/smartcash_effb4.yaml")]  # checks.check_yaml(name)
    assert plugin_off["check_yaml"] == ["error", "FileNotFoundError: 'smartcash_effb4.yaml' does not exist"]


def build_wheel(dest: Path) -> Path:
    """Build the wheel from the working tree, offline (hatchling from this environment, no build isolation)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", "-w", str(dest), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    return next(dest.glob("smartcash_ultra-*.whl"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of the working tree, built once for every test that reads or installs it."""
    return build_wheel(tmp_path_factory.mktemp("dist"))


@pytest.mark.slow
def test_wheel_carries_every_yaml_of_cfg_unchanged(wheel):
    with zipfile.ZipFile(wheel) as z:
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
def wheel_venv(wheel, tmp_path):
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

    fast = ["epochs=1", "imgsz=64", "batch=4", "workers=0", "plots=False", f"project={work / 'runs'}"]
    run("yolo", "train", "model=smartcash_cspdarknet_yolov5n.yaml", f"data={tiny_data}", *fast, "name=cli")
    best = work / "runs/cli/weights/best.pt"
    assert best.is_file()
    code = (
        "import sys; from ultralytics import YOLO; "
        f"YOLO('smartcash_cspdarknet_yolov5n.yaml').train(data={str(tiny_data)!r}, epochs=1, imgsz=64, batch=4, "
        f"workers=0, plots=False, project={str(work / 'runs')!r}, name='py'); "
        "print(sys.modules['smartcash_ultra'].__file__)"  # the copy the start-up hook imported
    )
    where = run("python", "-c", code).stdout.strip().splitlines()[-1]
    assert where.startswith(str(wheel_venv)), where  # the wheel's copy, not this checkout
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


def test_wheel_carries_the_agpl_licence_text(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        licence = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
        assert licence, names
        assert "GNU AFFERO GENERAL PUBLIC LICENSE" in z.read(licence[0]).decode()
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: AGPL-3.0-only" in metadata
    assert "License-File: LICENSE" in metadata
