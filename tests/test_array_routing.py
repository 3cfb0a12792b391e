""".npy everywhere: exported models and stock checkpoints read SmartCash arrays, and arrays are read as declared.

A model carries the data declarations it was trained with (``channel_order``, ``value_range``) in its checkpoint and
its export metadata, and the predictor reads arrays with them; a data YAML given as ``data=`` declares the arrays at
hand instead. Any model whose source or data holds ``.npy`` files takes the SmartCash data path; every other run of a
stock model stays stock (``test_training.py::test_stock_ultralytics_run_is_unaffected``).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import CSP_N_YAML, run_python, run_yolo
from ultralytics import YOLO
from ultralytics.models.yolo.detect import DetectionPredictor, DetectionTrainer, DetectionValidator

from smartcash_ultra.data.arrays import load_bgr_uint8
from smartcash_ultra.engine.declarations import KEY, carried, record
from smartcash_ultra.engine.predictor import SmartCashPredictor
from smartcash_ultra.engine.trainer import SmartCashDataTrainer
from smartcash_ultra.engine.validator import SmartCashValidator

IMGSZ = 64
BGR_255 = {"channel_order": "BGR", "value_range": [0, 255]}
RECORDED = {"channel_order": "BGR", "value_range": [0.0, 255.0]}
"""How a model trained on BGR_255 data carries the declarations."""


def bgr_255_tree(tiny_data: Path, dst: Path) -> Path:
    """The tiny tree written as the old SmartCash augmentation did: BGR, float 0..255; its data YAML says so."""
    src = tiny_data.parent
    for npy in src.glob("*/images/*.npy"):
        split = npy.parts[-3]
        (dst / split / "images").mkdir(parents=True, exist_ok=True)
        np.save(dst / split / "images" / npy.name, np.ascontiguousarray(np.load(npy)[..., ::-1] * 255, np.float32))
        label = src / split / "labels" / f"{npy.stem}.txt"
        if label.exists():
            (dst / split / "labels").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(label, dst / split / "labels" / label.name)
    data = yaml.safe_load(tiny_data.read_text())
    (dst / "data.yaml").write_text(yaml.safe_dump({**data, **BGR_255}))
    return dst / "data.yaml"


@pytest.fixture(scope="module")
def bgr_data(tiny_data, tmp_path_factory) -> Path:
    return bgr_255_tree(tiny_data, tmp_path_factory.mktemp("bgr255"))


def canonical(tiny_data: Path, name: str, split: str = "test") -> np.ndarray:
    """What an array of the tiny tree is as an image: uint8 BGR, as cv2.imread gives a photo."""
    return load_bgr_uint8(tiny_data.parent / split / "images" / name)


def test_arrays_are_read_as_the_model_declares_and_data_overrides(tiny_data, bgr_data, tmp_path):
    model = YOLO(CSP_N_YAML)
    record(model.model, {**BGR_255, "yaml_file": str(bgr_data)})
    files = sorted((bgr_data.parent / "test/images").glob("*.npy"))
    kw = {"imgsz": IMGSZ, "verbose": False}
    by_path = model.predict(str(files[0]), **kw)[0]
    by_folder = model.predict(str(files[0].parent), **kw)
    by_array = model.predict(np.load(files[0]), **kw)[0]
    for result in (by_path, by_folder[0], by_array):
        np.testing.assert_allclose(result.orig_img, canonical(tiny_data, files[0].name), atol=1)
    assert [Path(r.path).name for r in by_folder] == [f.name for f in files]
    rgb = tmp_path / "rgb.yaml"  # the arrays at hand are SmartCash's own RGB 0..1: say so with data=
    rgb.write_text(yaml.safe_dump({"names": {0: "x"}, "channel_order": "RGB", "value_range": [0, 1]}))
    original = tiny_data.parent / "test/images" / files[0].name
    overridden = model.predict(str(original), data=str(rgb), **kw)[0]
    np.testing.assert_allclose(overridden.orig_img, canonical(tiny_data, files[0].name), atol=1)


def test_a_model_without_declarations_reads_rgb_0_1(tiny_data):
    npy = sorted((tiny_data.parent / "test/images").glob("*.npy"))[0]
    result = YOLO(CSP_N_YAML).predict(str(npy), imgsz=IMGSZ, verbose=False)[0]
    np.testing.assert_array_equal(result.orig_img, canonical(tiny_data, npy.name))


def test_bad_declarations_name_the_data_yaml(tiny_data, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"names": {0: "x"}, "channel_order": "GRB"}))
    npy = sorted((tiny_data.parent / "test/images").glob("*.npy"))[0]
    with pytest.raises(ValueError, match="bad.yaml: 'channel_order' must be RGB or BGR, got 'GRB'"):
        YOLO(CSP_N_YAML).predict(str(npy), imgsz=IMGSZ, data=str(bad), verbose=False)


def test_a_checkpoint_reads_arrays_as_it_recorded_whatever_yaml_lies_at_its_training_data_path(
    tiny_data, bgr_data, tmp_path, monkeypatch
):
    """A model trained on ``data=data/data.yaml`` (BGR 0..255), predicting where another, RGB 0..1 ``data/data.yaml``
    lies: Ultralytics passes the checkpoint's ``data`` on to the predictor, but only the user's ``data=`` decides."""
    model = YOLO(CSP_N_YAML)
    record(model.model, BGR_255)
    model.ckpt = {"train_args": {"data": "data/data.yaml", "imgsz": IMGSZ, "task": "detect"}}
    model.save(tmp_path / "best.pt")
    (tmp_path / "data").mkdir()
    rgb = {"names": {0: "x"}, "channel_order": "RGB", "value_range": [0, 1]}
    (tmp_path / "data/data.yaml").write_text(yaml.safe_dump(rgb))
    monkeypatch.chdir(tmp_path)
    npy = sorted((bgr_data.parent / "test/images").glob("*.npy"))[0]
    trained = YOLO(tmp_path / "best.pt")
    assert trained.overrides["data"] == "data/data.yaml"  # what Ultralytics hands the predictor
    for source in (str(npy), np.load(npy)):
        result = trained.predict(source, imgsz=IMGSZ, verbose=False)[0]
        np.testing.assert_allclose(result.orig_img, canonical(tiny_data, npy.name), atol=1)
    original = tiny_data.parent / "test/images" / npy.name  # RGB 0..1, as the user's data= says
    result = trained.predict(str(original), data="data/data.yaml", imgsz=IMGSZ, verbose=False)[0]
    np.testing.assert_allclose(result.orig_img, canonical(tiny_data, npy.name), atol=1)


def refused_arrays(tiny_data: Path) -> dict[str, tuple[np.ndarray, str]]:
    """Arrays training leaves out of an RGB 0..1 tree, each with the problem it is named for."""
    good = np.load(sorted((tiny_data.parent / "test/images").glob("*.npy"))[0])
    return {
        "nan.npy": (np.full_like(good, np.nan), "NaN/inf values"),
        "x255.npy": (good * 255, "outside the declared range 0..1; the values look like 0..255"),
        "negative.npy": (good - 0.5, "outside the declared range 0..1"),
    }


def test_arrays_training_refuses_are_an_error_alone_and_named_and_skipped_in_a_folder(tiny_data, tmp_path, log_lines):
    model = YOLO(CSP_N_YAML)
    kw = {"imgsz": IMGSZ, "verbose": False}
    folder = tmp_path / "folder"
    folder.mkdir()
    good = sorted((tiny_data.parent / "test/images").glob("*.npy"))[0]
    shutil.copyfile(good, folder / good.name)
    for name, (arr, problem) in refused_arrays(tiny_data).items():
        np.save(folder / name, arr.astype(np.float32))
        with pytest.raises(ValueError, match=re.escape(f"{folder / name}: ") + ".*" + re.escape(problem)):
            model.predict(str(folder / name), **kw)
        with pytest.raises(ValueError, match="in-memory array source: .*" + re.escape(problem)):
            model.predict(arr, **kw)
    results = model.predict(str(folder), **kw)
    assert [Path(r.path).name for r in results] == [good.name]
    for name, (_, problem) in refused_arrays(tiny_data).items():
        assert any(str(folder / name) in line and problem in line for line in log_lines), (name, log_lines)


def test_a_stock_model_leaves_in_memory_arrays_to_ultralytics_whatever_it_read_before(tiny_data):
    """A model that carries no declarations reads an in-memory float array as Ultralytics does (float BGR 0..255,
    kept as given), before and after it has read ``.npy`` files (which made its predictor SmartCash's)."""
    npy = sorted((tiny_data.parent / "test/images").glob("*.npy"))[0]
    arr = np.ascontiguousarray(np.load(npy)[..., ::-1] * 255)
    kw = {"imgsz": IMGSZ, "verbose": False}
    model = YOLO("yolov8n.yaml")
    first = model.predict(arr, **kw)[0].orig_img
    model.predict(str(npy), **kw)
    assert type(model.predictor) is SmartCashPredictor
    again = model.predict(arr, **kw)[0].orig_img
    np.testing.assert_array_equal(first, arr)
    np.testing.assert_array_equal(again, arr)


@pytest.fixture(scope="module")
def bgr_onnx(bgr_data, tmp_path_factory) -> Path:
    """A SmartCash model declaring BGR 0..255 arrays, exported to ONNX (read it, never write beside it)."""
    pytest.importorskip("onnxruntime")
    return smartcash_export(tmp_path_factory.mktemp("bgr_onnx"), "onnx", bgr_data)


@pytest.mark.parametrize("first", ["in-memory", "path"])
def test_an_exported_model_reads_in_memory_arrays_and_npy_paths_alike_from_its_first_call(
    first, bgr_onnx, bgr_data, tiny_data
):
    npy = sorted((bgr_data.parent / "test/images").glob("*.npy"))[0]
    model = YOLO(bgr_onnx, task="detect")
    sources = {"in-memory": np.load(npy), "path": str(npy)}
    order = [first, *(k for k in sources if k != first)]
    for key in order:
        result = model.predict(sources[key], imgsz=IMGSZ, verbose=False)[0]
        assert type(model.predictor) is SmartCashPredictor, key
        np.testing.assert_allclose(result.orig_img, canonical(tiny_data, npy.name), atol=1, err_msg=key)


def test_predict_log_names_each_array_file_as_stock_names_images(tiny_data, log_lines, tmp_path):
    """Canary of ``ArraySource``'s reach: Ultralytics takes a loader of its own classes (``LOADERS``) as it is, and
    reads its protocol (batches of paths, images and log lines; ``source_type``, ``mode``, ``count``, ``len``)."""
    from ultralytics.data import load_inference_source
    from ultralytics.data.loaders import SourceTypes

    from smartcash_ultra.engine.predictor import array_source

    files = sorted((tiny_data.parent / "test/images").glob("*.npy"))
    source = array_source([str(f) for f in files], batch=2)
    assert load_inference_source(source) is source and source.source_type == SourceTypes()
    results = YOLO(CSP_N_YAML).predict(
        [str(f) for f in files], imgsz=IMGSZ, batch=2, save=True, project=str(tmp_path), name="p"
    )
    lines = "\n".join(log_lines).splitlines()  # a batch logs its images in one message
    for k, f in enumerate(files, 1):
        assert any(line.startswith(f"image {k}/{len(files)} {f}: 64x64") for line in lines), (f, lines)
    assert [r.path for r in results] == [str(f) for f in files]
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [f"{f.stem}.jpg" for f in files]


def test_stock_model_predicts_npy_with_the_smartcash_predictor_and_images_with_its_own(tiny_data, tiny_jpeg_data):
    model = YOLO("yolov8n.yaml")
    npy = sorted((tiny_data.parent / "test/images").glob("*.npy"))[0]
    result = model.predict(str(npy), imgsz=IMGSZ, verbose=False)[0]
    assert type(model.predictor) is SmartCashPredictor and result.path == str(npy)
    np.testing.assert_array_equal(result.orig_img, canonical(tiny_data, npy.name))
    jpg = tiny_jpeg_data.parent / "test/images" / f"{npy.stem}.jpg"
    stock = YOLO("yolov8n.yaml")
    stock.predict(str(jpg), imgsz=IMGSZ, verbose=False)
    assert type(stock.predictor) is DetectionPredictor


def smartcash_export(tmp_path: Path, fmt: str, data: Path) -> Path:
    """An untrained SmartCash model carrying declarations, exported; returns the exported model's path."""
    model = YOLO(CSP_N_YAML)
    model.model.names = {i: f"class_{i}" for i in range(17)}
    record(model.model, {**BGR_255, "yaml_file": str(data)})
    path = tmp_path / "model.pt"
    model.save(path)
    return Path(YOLO(path).export(format=fmt, imgsz=IMGSZ, verbose=False))


EXPORTS = ["onnx", "torchscript", pytest.param("openvino", marks=pytest.mark.slow)]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", EXPORTS)
def test_exported_model_predicts_npy_as_declared_and_validates_npy_data(fmt, tiny_data, bgr_data, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    if fmt == "openvino":
        pytest.importorskip("openvino")
    exported = smartcash_export(tmp_path, fmt, bgr_data)
    model = YOLO(exported, task="detect")
    npy = sorted((bgr_data.parent / "test/images").glob("*.npy"))[0]
    result = model.predict(str(npy), imgsz=IMGSZ, verbose=False)[0]
    assert type(model.predictor) is SmartCashPredictor
    np.testing.assert_allclose(result.orig_img, canonical(tiny_data, npy.name), atol=1)
    assert result.names[16] == "class_16"  # from the export metadata
    assert carried(model.predictor.model) == RECORDED  # read back from the export's own metadata
    metrics = YOLO(exported, task="detect").val(data=str(bgr_data), imgsz=IMGSZ, batch=1, plots=False, verbose=False)
    assert "metrics/mAP75(B)" in metrics.results_dict  # SmartCash's validator read the arrays


def test_routing_decides_by_source_and_data(tiny_data, tiny_jpeg_data, tmp_path):
    from smartcash_ultra import integration

    assert integration.source_holds_arrays(str(sorted((tiny_data.parent / "test/images").glob("*.npy"))[0]))
    assert integration.source_holds_arrays(str(tiny_data.parent / "test/images"))
    assert not integration.source_holds_arrays(str(tiny_jpeg_data.parent / "test/images"))
    assert not integration.source_holds_arrays(np.zeros((64, 64, 3), np.float32))  # in memory: stock decides
    assert integration.data_holds_arrays(str(tiny_data)) and not integration.data_holds_arrays(str(tiny_jpeg_data))
    assert not integration.data_holds_arrays("coco8.yaml")  # a name Ultralytics resolves (and downloads) itself
    for data, smartcash in ((tiny_data, True), (tiny_jpeg_data, False)):
        model, seen = YOLO("yolov8n.yaml"), []

        def stop(obj, seen=seen):  # the first event of a validation or a training: which class runs it
            seen.append(type(obj))
            raise InterruptedError

        model.add_callback("on_val_start", stop)
        model.add_callback("on_pretrain_routine_start", stop)
        for run in (model.val, model.train):
            with pytest.raises(InterruptedError):
                run(data=str(data), imgsz=IMGSZ, batch=2, workers=0, epochs=1, project=str(tmp_path), exist_ok=True)
        want = [SmartCashValidator, SmartCashDataTrainer] if smartcash else [DetectionValidator, DetectionTrainer]
        assert seen == want


@pytest.mark.slow
def test_routing_is_off_with_the_disable_switch(plugin_on, plugin_off):
    outcome, message = plugin_off["predict_npy"]  # YOLO("yolov8n.yaml").predict(<an .npy file>) (conftest's probe)
    assert outcome == "error" and "No images or videos found" in message
    assert plugin_on["predict_npy"][0] == "ok"  # what the switch turns off


@pytest.mark.slow
def test_stock_checkpoint_fine_tunes_on_npy_data_and_its_exports_read_npy(bgr_data, tiny_data, tmp_path):
    """`yolo train model=yolov5nu.pt data=<npy data.yaml>`, then val, predict and an ONNX export on arrays."""
    YOLO("yolov5n.yaml").save(tmp_path / "yolov5nu.pt")  # a stock checkpoint, made here: nothing is downloaded
    fast = [f"imgsz={IMGSZ}", "batch=4", "workers=0", "plots=False", f"project={tmp_path}", "name=ft"]
    proc = run_yolo("train", f"model={tmp_path / 'yolov5nu.pt'}", f"data={bgr_data}", "epochs=1", *fast, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = tmp_path / "ft/weights/best.pt"
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    assert type(ckpt["model"]).__name__ == "DetectionModel"  # still the stock model
    assert getattr(ckpt["model"], KEY) == RECORDED
    npy = sorted((bgr_data.parent / "test/images").glob("*.npy"))[0]
    out = tmp_path / "out.json"
    code = f"""
import json
from pathlib import Path
from ultralytics import YOLO
m = YOLO({str(best)!r})
img = m.predict({str(npy)!r}, imgsz={IMGSZ}, verbose=False)[0].orig_img
onnx = YOLO({str(best)!r}).export(format="onnx", imgsz={IMGSZ}, verbose=False)
img2 = YOLO(onnx, task="detect").predict({str(npy)!r}, imgsz={IMGSZ}, verbose=False)[0].orig_img
val = YOLO({str(best)!r}).val(data={str(bgr_data)!r}, imgsz={IMGSZ}, batch=4, plots=False, verbose=False)
Path({str(out)!r}).write_text(json.dumps([img.tolist(), img2.tolist(), val.results_dict["metrics/mAP50(B)"]]))
"""
    proc = run_python(code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    img, img2, map50 = json.loads(out.read_text())
    np.testing.assert_allclose(np.array(img), canonical(tiny_data, npy.name), atol=1)
    np.testing.assert_allclose(np.array(img2), canonical(tiny_data, npy.name), atol=1)
    assert np.isfinite(map50)


@pytest.mark.slow
def test_declarations_travel_from_training_into_checkpoint_export_and_cli_predict(bgr_data, tiny_data, tmp_path):
    fast = [f"imgsz={IMGSZ}", "batch=4", "workers=0", "plots=False", f"project={tmp_path}", "name=bgr"]
    proc = run_yolo("train", f"model={CSP_N_YAML}", f"data={bgr_data}", "epochs=1", *fast, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best = tmp_path / "bgr/weights/best.pt"
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    assert getattr(ckpt["model"], KEY) == RECORDED
    moved = tmp_path / "moved"  # the training data YAML gone: the checkpoint alone says how arrays were written
    shutil.copytree(bgr_data.parent / "test", moved)
    bgr_data.rename(bgr_data.with_suffix(".gone"))
    try:
        npy = sorted((moved / "images").glob("*.npy"))[0]
        img = YOLO(best).predict(str(npy), imgsz=IMGSZ, verbose=False)[0].orig_img
        np.testing.assert_allclose(img, canonical(tiny_data, npy.name), atol=1)
        proc = run_yolo("export", f"model={best}", "format=onnx", f"imgsz={IMGSZ}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        onnx = best.with_suffix(".onnx")
        proc = run_yolo(
            "predict", f"model={onnx}", f"source={npy.parent}", f"imgsz={IMGSZ}", "save=False", cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"image 1/2 {npy}: 64x64" in proc.stdout + proc.stderr
    finally:
        bgr_data.with_suffix(".gone").rename(bgr_data)
    proc = run_yolo(
        "val", f"model={onnx}", f"data={bgr_data}", f"imgsz={IMGSZ}", "batch=1", "plots=False", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mAP75" in proc.stdout + proc.stderr
