"""Real training on tiny generated SmartCash data: Python API and `yolo` CLI, checkpoint round trip, ONNX export."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_python, run_yolo

from smartcash_ultra.engine.checkpoints import AtomicPath
from smartcash_ultra.engine.trainer import SmartCashTrainer
from smartcash_ultra.utils.classes import NAMES

IMGSZ = 64
BACKBONES = ["effb4", "cspdarknet"]  # each has a session run of its own, in-process and by `yolo` (conftest)


@pytest.fixture(params=BACKBONES)
def trained(request):
    """The session's real 1-epoch SmartCashTrainer run of each backbone, from the shipped training cfg (conftest)."""
    return request.param, *request.getfixturevalue(f"{request.param}_run")


def read_results_csv(save_dir: Path) -> list[dict[str, str]]:
    with open(save_dir / "results.csv", newline="") as f:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_train_returns_metrics_with_map75_and_per_class_ap(trained):
    name, trainer, result = trained
    assert result.best == result.save_dir / "weights/best.pt" and result.best.is_file()
    assert result.last.is_file()
    assert isinstance(trainer.last, AtomicPath) and isinstance(trainer.best, AtomicPath)
    for key in ("metrics/mAP50(B)", "metrics/mAP75(B)", "metrics/mAP50-95(B)", "AP50(B)/001", "AP50-95(B)/l3_thread"):
        assert key in result.metrics
    assert trainer.metrics.keys() == result.metrics.keys()
    assert len([k for k in result.metrics if k.startswith("AP50(B)/")]) == 17
    rows = read_results_csv(result.save_dir)
    assert len(rows) == 1 and rows[0]["epoch"] == "1"
    for key in ("metrics/mAP50(B)", "metrics/mAP75(B)", "metrics/mAP50-95(B)", "AP50(B)/001"):
        assert key in rows[0]
    # one epoch: best.pt is that epoch's weights, so its final validation equals the epoch's row
    for key in ("metrics/mAP50(B)", "metrics/mAP75(B)", "metrics/mAP50-95(B)"):
        assert float(rows[0][key]) == pytest.approx(result.metrics[key], abs=1e-5)
    args = yaml.safe_load((result.save_dir / "args.yaml").read_text())
    assert args["optimizer"] == "Adam" and args["lr0"] == 0.001 and args["epochs"] == 1  # cfg, then overrides


@pytest.mark.slow
def test_checkpoint_reloads_in_a_fresh_process_and_predicts_arrays_and_images(trained, tiny_data, tiny_jpeg_data):
    name, _, result = trained
    npy = sorted((tiny_data.parent / "valid/images").glob("*.npy"))[0]
    jpg = tiny_jpeg_data.parent / "valid/images" / f"{npy.stem}.jpg"
    code = f"""
import json, numpy as np, cv2
from ultralytics import YOLO
m = YOLO({str(result.best)!r})
kw = dict(imgsz={IMGSZ}, conf=0.001, verbose=False)
by_path = m.predict({str(npy)!r}, **kw)[0]
by_array = m.predict(np.load({str(npy)!r}), **kw)[0]
by_bgr = m.predict(cv2.cvtColor((np.load({str(npy)!r}) * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR), **kw)[0]
by_jpg = m.predict({str(jpg)!r}, **kw)[0]
folder = m.predict({str(npy.parent)!r}, **kw)
metrics = m.val(data={str(tiny_data)!r}, imgsz={IMGSZ}, batch=4, workers=0, plots=False, verbose=False)
print(json.dumps(dict(
    model=type(m.model).__name__, names=m.names, path=by_path.path, shape=list(by_path.orig_shape),
    n=len(by_path.boxes), same_array=bool(np.allclose(by_path.boxes.data, by_array.boxes.data)),
    same_bgr=bool(np.allclose(by_path.boxes.data, by_bgr.boxes.data)), jpg=list(by_jpg.orig_shape),
    folder=[r.path for r in folder], map75=metrics.results_dict["metrics/mAP75(B)"],
    map50=metrics.results_dict["metrics/mAP50(B)"])))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["model"] == "SmartCashDetectionModel"
    assert {int(k): v for k, v in out["names"].items()} == NAMES
    assert out["path"] == str(npy) and out["shape"] == [96, 96]
    assert out["same_array"] and out["same_bgr"]  # a path, a float RGB array and a uint8 BGR image agree
    assert out["jpg"] == [96, 96]  # ordinary images still predict
    assert out["folder"] == sorted(str(p) for p in npy.parent.glob("*.npy"))
    assert out["map50"] == pytest.approx(result.metrics["metrics/mAP50(B)"], abs=1e-4)
    assert out["map75"] == pytest.approx(result.metrics["metrics/mAP75(B)"], abs=1e-4)


@pytest.mark.slow
def test_onnx_export_gives_the_same_outputs(trained, tiny_data, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from ultralytics import YOLO

    _, _, result = trained
    model = YOLO(shutil.copy(result.best, tmp_path))  # the export is written beside it, not into the shared run
    onnx_path = Path(model.export(format="onnx", imgsz=IMGSZ, simplify=False, verbose=False))
    assert onnx_path.is_file()
    x = torch.rand(1, 3, IMGSZ, IMGSZ)
    net = model.model.float().eval()
    with torch.no_grad():
        expected = net(x)[0].numpy()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    npy = sorted((tiny_data.parent / "valid/images").glob("*.npy"))[0]
    a = YOLO(result.best).predict(str(npy), imgsz=IMGSZ, conf=0.01, verbose=False)[0].boxes
    b = (
        YOLO(onnx_path, task="detect")
        .predict((np.load(npy) * 255).round().astype(np.uint8)[..., ::-1], imgsz=IMGSZ, conf=0.01, verbose=False)[0]
        .boxes
    )
    assert len(a) == len(b)
    np.testing.assert_allclose(a.xyxy.numpy(), b.xyxy.numpy(), atol=0.5)


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BACKBONES)
def test_yolo_cli_trains_with_smartcash_classes_and_overrides(backbone, tiny_data, request):
    proc, save_dir = request.getfixturevalue(f"{backbone}_cli_run")  # cfg=cfg/smartcash_<backbone>.yaml (conftest)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = save_dir / "weights/best.pt"
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    assert type(ckpt["model"]).__name__ == "SmartCashDetectionModel"
    assert ckpt["model"].yaml["smartcash"] is not None
    args = ckpt["train_args"]
    assert (args["epochs"], args["imgsz"], args["optimizer"], args["data"]) == (1, IMGSZ, "Adam", str(tiny_data))
    log = proc.stdout + proc.stderr
    assert "mAP75" in log
    assert f"Optimizer stripped from {best}," in log  # best.pt is stripped, last.pt kept whole and not said otherwise
    assert "Optimizer stripped from" not in log.replace(f"Optimizer stripped from {best},", "")
    assert f"Kept {best.parent / 'last.pt'} whole" in log


@pytest.mark.slow
def test_stock_ultralytics_run_is_unaffected(tiny_jpeg_data, tmp_path):
    """The same stock `yolo train` with the plugin installed and switched off gives identical results."""
    outputs = {}
    for label, env in (("plugin", {}), ("no_plugin", {"SMARTCASH_ULTRA_DISABLE": "1"})):
        proc = run_yolo(
            "train",
            "model=yolov8n.yaml",
            f"data={tiny_jpeg_data}",
            "epochs=1",
            f"imgsz={IMGSZ}",
            "batch=4",
            "workers=0",
            "plots=False",
            "seed=0",
            "deterministic=True",
            f"project={tmp_path}",
            f"name={label}",
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        ckpt = torch.load(tmp_path / label / "weights/last.pt", map_location="cpu", weights_only=False)
        assert type(ckpt["model"]).__name__ == "DetectionModel"
        rows = read_results_csv(tmp_path / label)
        outputs[label] = (
            {k: v for k, v in rows[0].items() if k != "time"},
            {k: v for k, v in ckpt["train_args"].items() if k not in {"name", "save_dir"}},
            "mAP75" in proc.stdout + proc.stderr,
        )
    assert outputs["plugin"] == outputs["no_plugin"]
    assert outputs["plugin"][2] is False  # the stock table, not the SmartCash one


def test_training_cfg_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="training cfg .*missing.yaml does not exist"):
        SmartCashTrainer(tmp_path / "missing.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text("- epochs\n- 3\n")
    with pytest.raises(ValueError, match="list.yaml' is not a valid YAML mapping"):
        SmartCashTrainer(listed)
    misplaced = tmp_path / "misplaced.yaml"
    misplaced.write_text("epochs: 3\nsmartcash:\n  backbone_weights: x.pth\n")
    with pytest.raises(ValueError, match="misplaced.yaml: 'smartcash:' settings belong in the model YAML"):
        SmartCashTrainer(misplaced)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    target = AtomicPath(tmp_path / "last.pt")
    target.write_bytes(b"epoch 1")

    def crash(fd):
        raise OSError("killed mid-write")

    monkeypatch.setattr("os.fsync", crash)
    with pytest.raises(OSError, match="killed mid-write"):
        target.write_bytes(b"epoch 2" * 1000)
    assert target.read_bytes() == b"epoch 1"  # the previous checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # and no temp file is left behind


@pytest.mark.slow
def test_predict_folder_of_arrays_and_images_skips_hidden_cache(trained, tiny_data, tmp_path):
    """A folder source keeps its images beside the arrays and never reads the hidden disk cache."""
    import cv2
    from ultralytics import YOLO

    _, _, result = trained
    src = sorted((tiny_data.parent / "valid/images").glob("*.npy"))[:2]
    folder = tmp_path / "mixed"
    (folder / ".smartcash_cache").mkdir(parents=True)
    for npy in src:
        (folder / npy.name).write_bytes(npy.read_bytes())
        (folder / ".smartcash_cache" / npy.name).write_bytes(npy.read_bytes())
    photo = cv2.cvtColor((np.load(src[0]) * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(folder / "photo.png"), photo)
    model = YOLO(result.best)
    results = model.predict(str(folder), imgsz=IMGSZ, conf=0.001, verbose=False)
    assert [Path(r.path).name for r in results] == sorted([*(p.name for p in src), "photo.png"])
    by_name = {Path(r.path).name: r for r in results}
    np.testing.assert_allclose(by_name["photo.png"].boxes.data, by_name[src[0].name].boxes.data)  # png is lossless
    with pytest.raises(ValueError, match="in-memory array source: shape \\(96, 96\\)"):
        model.predict(np.zeros((96, 96), np.float32), imgsz=IMGSZ, verbose=False)
