"""SmartCashDataset: arrays become what the Ultralytics pipeline expects, labels stay aligned, user files intact."""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path
from unittest.mock import ANY

import cv2
import numpy as np
import pytest
from conftest import CSP_N_YAML, run_yolo, tree_digest, write_data_yaml
from ultralytics.cfg import get_cfg
from ultralytics.data.utils import check_det_dataset

from smartcash_ultra import arrays
from smartcash_ultra.data.dataset import (
    CORRUPT,
    DatasetProblems,
    SmartCashDataset,
    build_smartcash_dataset,
    inspect_sample,
)
from smartcash_ultra.data.image_dataset import DatasetError
from smartcash_ultra.data.label_cache import CACHE_DIRNAME

GREY = 114 / 255
NAMES = {0: "001", 1: "002"}


def red_box_array(size: int, box: tuple[int, int, int, int], dtype=np.float32, order: str = "RGB") -> np.ndarray:
    """A letterbox-grey square array with one pure red rectangle (x1, y1, x2, y2)."""
    arr = np.full((size, size, 3), GREY, dtype=np.float32)
    x1, y1, x2, y2 = box
    arr[y1:y2, x1:x2] = (1.0, 0.0, 0.0) if order == "RGB" else (0.0, 0.0, 1.0)
    if dtype == np.uint8:
        return (arr * 255).round().astype(np.uint8)
    return arr.astype(dtype)


def label_line(cls: int, box: tuple[int, int, int, int], size: int) -> str:
    x1, y1, x2, y2 = box
    return (
        f"{cls} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} {(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}\n"
    )


def make_tree(root: Path, n: int = 6, size: int = 64, **array_kwargs) -> Path:
    """train/valid trees of red-box arrays named like SmartCash files; returns the data YAML."""
    rng = np.random.default_rng(0)
    for split in ("train", "valid"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(n):
            w, h = rng.integers(size // 5, size // 2, 2)
            x1, y1 = rng.integers(0, size - w), rng.integers(0, size - h)
            box = (int(x1), int(y1), int(x1 + w), int(y1 + h))
            stem = f"pre_rp_001000_{i:08d}-0000-4000-8000-000000000000" if i % 2 else f"aug_001000_{i:08d}_001"
            np.save(root / split / "images" / f"{stem}.npy", red_box_array(size, box, **array_kwargs))
            (root / split / "labels" / f"{stem}.txt").write_text(label_line(0, box, size))
    return write_data_yaml(root, NAMES)


def build(data_yaml: Path, mode: str = "val", imgsz: int = 64, **overrides) -> SmartCashDataset:
    data = check_det_dataset(str(data_yaml))
    cfg = get_cfg(overrides={"imgsz": imgsz, "task": "detect", **overrides})
    return build_smartcash_dataset(cfg, data["train" if mode == "train" else "val"], 4, data, mode=mode)


def box_pixels(item: dict) -> list[np.ndarray]:
    """RGB pixels inside each labelled box of a dataset item (2-px inset against interpolation at edges)."""
    img = item["img"].numpy().transpose(1, 2, 0)  # CHW RGB uint8 -> HWC
    h, w = img.shape[:2]
    out = []
    for xc, yc, bw, bh in item["bboxes"].numpy():
        x1, x2 = int((xc - bw / 2) * w) + 2, int((xc + bw / 2) * w) - 2
        y1, y2 = int((yc - bh / 2) * h) + 2, int((yc + bh / 2) * h) - 2
        if x2 > x1 and y2 > y1:
            out.append(img[y1:y2, x1:x2].reshape(-1, 3))
    return out


def test_items_have_pipeline_dtype_shape_channel_order_and_aligned_labels(tmp_path):
    data_yaml = make_tree(tmp_path)
    ds = build(data_yaml)
    assert len(ds) == 6
    for i in range(len(ds)):
        item = ds[i]
        assert item["img"].dtype == np.uint8 or str(item["img"].dtype) == "torch.uint8"
        assert tuple(item["img"].shape) == (3, 64, 64)
        label = np.loadtxt(Path(item["im_file"].replace("images", "labels")).with_suffix(".txt"), ndmin=2)
        np.testing.assert_allclose(item["bboxes"].numpy(), label[:, 1:], atol=1e-5)
        (pixels,) = box_pixels(item)
        assert pixels[:, 0].min() >= 250 and pixels[:, 1:].max() <= 5  # pure red in RGB order, not blue


def test_known_boxes_survive_training_augmentation(tmp_path):
    data_yaml = make_tree(tmp_path, n=8)
    ds = build(
        data_yaml,
        mode="train",
        mosaic=1.0,
        fliplr=0.5,
        flipud=0.5,
        degrees=0.0,
        translate=0.1,
        scale=0.3,
        hsv_h=0.0,
        hsv_s=0.0,
        hsv_v=0.0,
    )
    checked = 0
    for i in range(len(ds)):
        item = ds[i]
        assert tuple(item["img"].shape) == (3, 64, 64)
        for pixels in box_pixels(item):
            red = (pixels[:, 0] > 200) & (pixels[:, 1] < 60) & (pixels[:, 2] < 60)
            assert red.mean() > 0.9, f"box of item {i} is not on the red rectangle"
            checked += 1
    assert checked >= 8


@pytest.mark.parametrize(("dtype", "order"), [(np.float16, "RGB"), (np.uint8, "RGB"), (np.float32, "BGR")])
def test_other_valid_dtypes_and_declared_bgr_order(tmp_path, dtype, order):
    make_tree(tmp_path, dtype=dtype, order=order)
    data_yaml = write_data_yaml(tmp_path, NAMES, channel_order=order)
    ds = build(data_yaml)
    (pixels,) = box_pixels(ds[0])
    assert pixels[:, 0].min() >= 250 and pixels[:, 1:].max() <= 5


@pytest.mark.parametrize(
    "direct",
    [
        False,  # the float32 route every OpenCV version has
        pytest.param(
            True, marks=pytest.mark.skipif(not arrays._opencv_scales_float16(), reason="OpenCV has no float16 kernel")
        ),
    ],
)
def test_float16_and_uint8_fast_paths_match_the_reference_conversion(tmp_path, monkeypatch, direct):
    finite = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    finite = finite[np.isfinite(finite)]  # every finite float16: 0..1, negatives, values that saturate
    f16 = np.resize(finite, (len(finite) // 96 + 1, 32, 3))
    np.save(tmp_path / "f16.npy", f16)
    monkeypatch.setattr(arrays, "_FLOAT16_DIRECT", direct)
    # NumPy reference, independent of OpenCV: |x * 255| rounded half to even, saturated to 0..255, RGB -> BGR
    expected = np.clip(np.rint(np.abs(f16.astype(np.float32) * np.float32(255))), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(arrays.load_bgr_uint8(tmp_path / "f16.npy"), expected[..., ::-1])

    u8 = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.save(tmp_path / "u8.npy", u8)
    for order, want in (("RGB", u8[..., ::-1]), ("BGR", u8)):
        source = arrays.open_array(tmp_path / "u8.npy")  # read-only memory map of the user's file
        im = arrays.to_bgr_uint8(source, order)
        np.testing.assert_array_equal(im, want)
        assert im.flags.c_contiguous and im.flags.writeable and not np.shares_memory(im, source)


def test_invalid_channel_order_is_a_clear_error(tmp_path):
    make_tree(tmp_path)
    data_yaml = write_data_yaml(tmp_path, NAMES, channel_order="RBG")
    with pytest.raises(DatasetError, match=re.escape(f"{data_yaml}: 'channel_order' must be RGB or BGR, got 'RBG'")):
        build(data_yaml)


def test_array_resize_equals_stock_load_image_on_a_lossless_twin(tmp_path):
    """Arrays keep their own copy of stock load_image's resize (it reads images through no overridable hook)."""
    data_yaml = make_tree(tmp_path, n=1)
    rgb = np.random.default_rng(0).random((50, 80, 3), dtype=np.float32)
    np.save(tmp_path / "valid/images/twin_a.npy", rgb)  # other stems: stock would read twin.npy as twin.png's cache
    cv2.imwrite(str(tmp_path / "valid/images/twin_b.png"), cv2.cvtColor(arrays.to_uint8(rgb), cv2.COLOR_RGB2BGR))
    ds = build(data_yaml, imgsz=64)
    npy, png = (ds.im_files.index(str(tmp_path / f"valid/images/twin_{s}")) for s in ("a.npy", "b.png"))
    for mode in ((True, False), (True, True), (False, False)):  # long side, short side, stretched to 64x64
        (a, *a_shapes), (b, *b_shapes) = ds.load_image(npy, *mode), ds.load_image(png, *mode)
        assert a_shapes == b_shapes and a.shape != rgb.shape
        np.testing.assert_array_equal(a, b)


def test_arrays_feed_mosaic_through_stock_buffer_as_their_png_twins_do(tmp_path):
    """Canary of ``load_image``'s reach into ``BaseDataset``'s Mosaic buffer (``buffer``, ``max_buffer_length``,
    ``ims``/``im_hw0``/``im_hw``): stock offers no hook to read an image, so arrays keep the recent images where stock
    keeps them and Mosaic (which draws its partners from ``buffer``) must pick the same as for lossless PNG twins.
    """
    import random

    import torch

    npy_yaml = make_tree(tmp_path / "npy", n=40)  # batch 4: a buffer of at most 32, which evicts
    for f in (tmp_path / "npy/train").rglob("*.*"):
        dst = tmp_path / "png" / f.relative_to(tmp_path / "npy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if f.suffix == ".npy":
            cv2.imwrite(str(dst.with_suffix(".png")), arrays.load_bgr_uint8(f))
        else:
            shutil.copyfile(f, dst)
    png_yaml = write_data_yaml(tmp_path / "png", NAMES, val="train/images")
    seen = {}
    for name, data_yaml in (("npy", npy_yaml), ("png", png_yaml)):
        ds = build(data_yaml, mode="train", mosaic=1.0)
        random.seed(0), np.random.seed(0), torch.manual_seed(0)
        images = [ds[i]["img"] for i in range(len(ds))]
        seen[name] = images, list(ds.buffer), [im is None for im in ds.ims], ds.im_hw0, ds.im_hw
    (a, *a_state), (b, *b_state) = seen["npy"], seen["png"]
    assert len(a_state[0]) == 31 and a_state == b_state  # evicting at 32, as stock does
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_ordinary_images_in_the_same_tree(tmp_path):
    data_yaml = make_tree(tmp_path)
    box = (10, 20, 40, 50)
    bgr = (red_box_array(64, box, dtype=np.uint8))[..., ::-1]
    cv2.imwrite(str(tmp_path / "valid/images/photo.png"), bgr)
    (tmp_path / "valid/labels/photo.txt").write_text(label_line(1, box, 64))
    ds = build(data_yaml)
    assert len(ds) == 7
    i = next(k for k, f in enumerate(ds.im_files) if f.endswith("photo.png"))
    item = ds[i]
    assert item["cls"].flatten().tolist() == [1.0]
    (pixels,) = box_pixels(item)
    assert pixels[:, 0].min() >= 250 and pixels[:, 1:].max() <= 5


def test_bad_files_are_skipped_named_and_never_touched(tmp_path, log_lines):
    data_yaml = make_tree(tmp_path)
    images, labels = tmp_path / "train/images", tmp_path / "train/labels"
    good = next(images.glob("pre_*.npy"))
    (images / "pre_rp_002000_truncated.npy").write_bytes(good.read_bytes()[:300])
    (labels / "pre_rp_002000_truncated.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    np.save(images / "pre_rp_002000_object.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    np.save(images / "pre_rp_002000_gray.npy", np.zeros((64, 64), np.float32))
    np.save(images / "pre_rp_002000_badclass.npy", red_box_array(64, (1, 1, 9, 9)))
    (labels / "pre_rp_002000_badclass.txt").write_text("7 0.5 0.5 0.2 0.2\n")
    np.save(images / "pre_rp_002000_nolabel.npy", red_box_array(64, (1, 1, 9, 9)))
    (images / "notes.meta.json").write_text("{}")  # sidecars are not images
    before = tree_digest(tmp_path)

    ds = build(data_yaml, mode="train", cache="disk")
    for i in range(len(ds)):
        ds[i]
    ds_ram = build(data_yaml, mode="train", cache="ram")
    ds_ram[0]

    after = tree_digest(tmp_path)
    assert {k: after.get(k) for k in before} == before  # no byte of the user's tree changed, nothing deleted
    assert all(CACHE_DIRNAME in Path(k).parts for k in after.keys() - before.keys())  # only the cache was added
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*.cache")] == [
        Path("train", CACHE_DIRNAME, "labels.cache")
    ]
    names = {Path(f).name for f in ds.im_files}
    assert "pre_rp_002000_nolabel.npy" in names  # a missing label file is a background image
    assert not names & {
        "pre_rp_002000_truncated.npy",
        "pre_rp_002000_object.npy",
        "pre_rp_002000_gray.npy",
        "pre_rp_002000_badclass.npy",
    }
    assert len(ds) == 7
    for name in ("truncated", "object", "gray"):  # each corrupt array is reported by name
        assert any(f"{CORRUPT}{images / f'pre_rp_002000_{name}.npy'}: " in line for line in log_lines), name
    assert any(f"{labels / 'pre_rp_002000_badclass.txt'}: label line 1: class id 7" in line for line in log_lines)
    assert sum("cache=disk: 7 .npy arrays are read where they are" in line for line in log_lines) == 1
    np.testing.assert_array_equal(ds.load_image(0)[0], arrays.load_bgr_uint8(ds.im_files[0]))


def test_an_array_that_breaks_after_the_scan_is_named_and_left_as_it_is(tmp_path):
    """Stock load_image deletes an '<image>.npy' that fails to load: for a SmartCash tree that is the user's array."""
    data_yaml = make_tree(tmp_path, n=3)
    for cache in ("disk", None):
        ds = build(data_yaml, mode="train", cache=cache)  # verified and its label cache written while intact
        victim = Path(ds.im_files[1])
        good = victim.read_bytes()
        victim.write_bytes(good[:300])
        for _ in range(2):
            with pytest.raises(arrays.ArrayFormatError, match=re.escape(f"{victim}: truncated")):
                ds.load_image(1)
        assert victim.read_bytes() == good[:300]  # never deleted, rewritten or renamed
        victim.write_bytes(good)


def test_verification_reports_each_problem_with_the_file_name(tmp_path):
    arr = tmp_path / "a.npy"
    np.save(arr, red_box_array(32, (1, 1, 9, 9)))
    lb = tmp_path / "a.txt"
    cases = {
        "0 0.5 0.5 0.2\n": "has 4 fields",
        "3 0.5 0.5 0.2 0.2\n": "outside 0-1",
        "0 0.5 1.5 0.2 0.2\n": "outside 0..1",
        "0 nan 0.5 0.2 0.2\n": "NaN or inf",
    }
    for text, problem in cases.items():
        lb.write_text(text)
        result = inspect_sample(str(arr), str(lb), 2, (0.0, 1.0))
        assert result.labels is None and result.shape is None and result.problem  # left out
        assert result.problem.startswith(f"{lb}: ") and problem in result.problem  # naming the label file
    lb.write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")
    result = inspect_sample(str(arr), str(lb), 2, (0.0, 1.0))
    assert len(result.labels) == 1 and "1 duplicate labels removed" in result.fixed and not result.problem
    lb.write_text("")
    result = inspect_sample(str(arr), str(lb), 2, (0.0, 1.0))
    assert result.label_found and len(result.labels) == 0 and not result.problem  # empty label file: a background


def test_a_zip_archive_named_npy_is_not_an_array(tmp_path):
    np.savez(tmp_path / "a.npz", a=red_box_array(32, (1, 1, 9, 9)))  # np.load would open it as an archive
    (tmp_path / "a.npz").rename(tmp_path / "pre_zip.npy")
    with pytest.raises(arrays.ArrayFormatError, match=r"pre_zip\.npy: not a NumPy \.npy file \(a zip archive"):
        arrays.open_array(tmp_path / "pre_zip.npy")


def test_arrays_are_verified_without_pil(tmp_path, monkeypatch):
    arr = tmp_path / "a.npy"
    np.save(arr, red_box_array(32, (1, 1, 9, 9)))
    import smartcash_ultra.data.dataset as dataset_module

    monkeypatch.setattr(dataset_module.Image, "open", lambda *a, **k: pytest.fail("PIL opened an array"))
    result = inspect_sample(str(arr), str(tmp_path / "none.txt"), 2, (0.0, 1.0))
    assert result.shape == (32, 32) and not result.label_found  # shape from the header; label missing


def test_empty_or_wrong_image_path_names_the_path(tmp_path):
    (tmp_path / "train/images").mkdir(parents=True)
    (tmp_path / "valid/images").mkdir(parents=True)
    data = {"names": NAMES, "nc": 2, "channels": 3}
    cfg = get_cfg(overrides={"imgsz": 64})
    with pytest.raises(FileNotFoundError, match="no .npy arrays or images found in .*train/images"):
        build_smartcash_dataset(cfg, str(tmp_path / "train/images"), 4, data)
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        build_smartcash_dataset(cfg, str(tmp_path / "nowhere"), 4, data)


def test_disk_cache_reads_arrays_where_they_are_and_caches_images_beside_them_as_stock(tmp_path, log_lines):
    data_yaml = make_tree(tmp_path, n=2)
    box = (10, 20, 40, 50)
    png = tmp_path / "train/images/photo.png"
    cv2.imwrite(str(png), red_box_array(64, box, dtype=np.uint8)[..., ::-1])
    (tmp_path / "train/labels/photo.txt").write_text(label_line(1, box, 64))
    (tmp_path / "train/images/broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    arrays_before = {k: v for k, v in tree_digest(tmp_path).items() if k.endswith(".npy")}
    ds = build(data_yaml, mode="train", cache="disk")
    assert len(ds) == 3 and "broken.jpg" not in {Path(f).name for f in ds.im_files}  # reported at scan, skipped
    assert sum("cache=disk: 2 .npy arrays are read where they are" in line for line in log_lines) == 1
    np.testing.assert_array_equal(np.load(png.with_suffix(".npy")), cv2.imread(str(png)))  # stock's cache, beside
    after = tree_digest(tmp_path)
    assert {k: v for k, v in after.items() if k.endswith(".npy")} == {**arrays_before, "train/images/photo.npy": ANY}
    again = build(data_yaml, mode="train", cache="disk")  # Ultralytics' cache file is not an image of its own
    assert again.im_files == ds.im_files
    np.testing.assert_array_equal(again.load_image(again.im_files.index(str(png)))[0], cv2.imread(str(png)))

    # an array is read as it is now: changed with its old size and modification time (cp -p, rsync -a), or declared
    # in the old BGR order afterwards
    source = Path(ds.im_files[0])
    st = source.stat()
    np.save(source, red_box_array(64, (5, 5, 30, 30)))
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert source.stat().st_size == st.st_size
    want = cv2.cvtColor(red_box_array(64, (5, 5, 30, 30), dtype=np.uint8), cv2.COLOR_RGB2BGR)
    np.testing.assert_array_equal(build(data_yaml, mode="train", cache="disk").load_image(0)[0], want)
    bgr_yaml = write_data_yaml(tmp_path, NAMES, channel_order="BGR")
    np.testing.assert_array_equal(build(bgr_yaml, mode="train", cache="disk").load_image(0)[0], want[..., ::-1])


def test_an_image_whose_stock_cache_name_is_an_array_is_left_out_and_the_array_never_read_in_its_place(tmp_path):
    data_yaml = make_tree(tmp_path, n=2)
    box = (10, 20, 40, 50)
    for stem in ("photo", "broken"):
        cv2.imwrite(str(tmp_path / "train/images" / f"{stem}.png"), red_box_array(64, box, dtype=np.uint8)[..., ::-1])
        (tmp_path / "train/labels" / f"{stem}.txt").write_text(label_line(1, box, 64))
    assert len(build(data_yaml, mode="train")) == 4  # scanned and its label cache written before the arrays come
    np.save(tmp_path / "train/images/photo.npy", red_box_array(64, box))  # named as stock names the image's cache
    (tmp_path / "train/images/broken.npy").write_bytes(b"not an array")
    before = tree_digest(tmp_path)
    for cache in ("disk", None):
        ds = build(data_yaml, mode="train", cache=cache)
        assert [Path(f).name for f in ds.im_files if not f.endswith(".npy")] == []
        assert len(ds) == 2
        for i in range(len(ds)):
            ds[i]
    after = tree_digest(tmp_path)
    assert {k: after.get(k) for k in before} == before
    for stem, problem in (("photo", "float32"), ("broken", "not a NumPy .npy file")):
        x = inspect_sample(str(tmp_path / f"train/images/{stem}.png"), str(tmp_path / f"train/labels/{stem}.txt"), 2)
        assert x.problem.startswith(f"{tmp_path / 'train/images' / stem}.png: {stem}.npy beside it is not "), x.problem
        assert problem in x.problem and "rename one of the two" in x.problem


def test_predicting_a_folder_skips_bad_arrays_by_name_and_lists_arrays_in_a_folder_named_npy(tmp_path, log_lines):
    from smartcash_ultra.engine.predictor import array_source

    good = red_box_array(32, (1, 1, 9, 9))
    for name in ("a.npy", "c.npy", "x.npy/inner.npy"):  # a folder named like an array holds arrays, as in training
        (tmp_path / name).parent.mkdir(exist_ok=True)
        np.save(tmp_path / name, good)
    (tmp_path / "b.npy").write_bytes(b"not an array")
    np.save(tmp_path / "gray.npy", good[..., 0])
    source = array_source(str(tmp_path), batch=2)
    batches = list(source)
    seen = [Path(p).relative_to(tmp_path).as_posix() for paths, _, _ in batches for p in paths]
    assert seen == ["a.npy", "c.npy", "x.npy/inner.npy"]  # the bad files skipped, the rest predicted
    assert all(len(paths) == len(ims) == len(info) for paths, ims, info in batches)
    assert all(im.shape == (32, 32, 3) and im.dtype == np.uint8 for _, ims, _ in batches for im in ims)
    warnings = "\n".join(log_lines)
    assert f"{tmp_path / 'b.npy'}: not a NumPy .npy file" in warnings
    assert f"{tmp_path / 'gray.npy'}: shape (32, 32), expected (H, W, 3)" in warnings
    with pytest.raises(FileNotFoundError, match=re.escape(f"array source {tmp_path / 'gone.npy'} does not exist")):
        array_source([str(tmp_path / "a.npy"), str(tmp_path / "gone.npy")])
    with pytest.raises(FileNotFoundError, match=re.escape(f"array source {tmp_path / 'x.npy'} is a folder")):
        array_source([str(tmp_path / "a.npy"), str(tmp_path / "x.npy")])


def test_single_cls_collapses_every_class_id_to_0_in_training_and_validation_as_stock_does(tiny_data, tiny_jpeg_data):
    from ultralytics.data import YOLODataset

    for mode in ("train", "val"):
        data = check_det_dataset(str(tiny_data))
        data["names"], data["nc"] = {0: "item"}, 1  # as the trainer rewrites them for single_cls
        cfg = get_cfg(overrides={"imgsz": 64, "task": "detect", "single_cls": True})
        ds = build_smartcash_dataset(cfg, data["train" if mode == "train" else "val"], 4, data, mode, mode == "val")
        stock_data = {**check_det_dataset(str(tiny_jpeg_data)), "names": {0: "item"}, "nc": 1}
        split = "train" if mode == "train" else "val"
        stock = YOLODataset(img_path=stock_data[split], data=stock_data, imgsz=64, single_cls=True, augment=False)
        assert len(ds) == len(stock) == len(list(Path(data[split]).glob("*.npy")))
        ours = {Path(lb["im_file"]).stem: lb for lb in ds.labels}
        for lb in stock.labels:
            mine = ours[Path(lb["im_file"]).stem]
            assert len(mine["cls"]) > 0 and not mine["cls"].any()  # every box kept, as class 0
            np.testing.assert_array_equal(mine["cls"], lb["cls"])
            np.testing.assert_allclose(mine["bboxes"], lb["bboxes"], atol=1e-6)
        assert ds[0]["cls"].numel() > 0


def test_polygon_labels_become_their_boxes_as_in_ultralytics(tmp_path):
    from ultralytics.data.utils import verify_image_label

    arr = red_box_array(64, (8, 8, 40, 40))
    np.save(tmp_path / "a.npy", arr)
    cv2.imwrite(str(tmp_path / "a.png"), arrays.to_uint8(arr)[..., ::-1])  # the stock verifier's twin
    rows = "1 0.1 0.2 0.5 0.15 0.45 0.6 0.2 0.55\n0 0.7 0.7 0.9 0.7 0.9 0.95 0.7 0.95 0.72 0.8\n"
    (tmp_path / "a.txt").write_text(rows)
    x = inspect_sample(str(tmp_path / "a.npy"), str(tmp_path / "a.txt"), 2)
    stock = verify_image_label((str(tmp_path / "a.png"), str(tmp_path / "a.txt"), "", False, 2, 0, 0, False))
    assert x.problem is None and x.fixed is None and stock[8] == 0
    np.testing.assert_array_equal(x.labels, stock[1])  # segments2boxes, in float32 as stock computes it
    (tmp_path / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n" + rows)  # box and polygon rows in one file: each row read
    assert len(inspect_sample(str(tmp_path / "a.npy"), str(tmp_path / "b.txt"), 2).labels) == 3
    for text, problem in (
        (
            "0 0.1 0.2 0.5 0.15 0.45 0.6 0.2\n",
            "label line 1 has 8 fields: a polygon needs x y pairs after the class id",
        ),
        (
            "0 0.5 0.5 0.2 0.2 0.3\n",
            "label line 1 has 6 fields, expected 5 (cls xc yc w h) or a polygon (cls x1 y1 x2 y2 x3 y3 ...)",
        ),
        ("0 0.1 0.2 1.5 0.15 0.45 0.6\n", "label line 1: polygon coordinates outside 0..1 (labels must be normalised)"),
    ):
        (tmp_path / "c.txt").write_text(text)
        bad = inspect_sample(str(tmp_path / "a.npy"), str(tmp_path / "c.txt"), 2)
        assert bad.problem == f"{tmp_path / 'c.txt'}: {problem}", bad.problem


def test_zero_size_boxes_are_removed_and_reported(tmp_path):
    np.save(tmp_path / "a.npy", red_box_array(64, (8, 8, 40, 40)))
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0 0.2\n1 0.3 0.3 0.2 0\n0 0.5 0.5 0.2 0.2\n")
    x = inspect_sample(str(tmp_path / "a.npy"), str(tmp_path / "a.txt"), 2)
    np.testing.assert_array_equal(x.labels, np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32))
    assert x.problem is None
    assert x.fixed == f"{tmp_path / 'a.txt'}: 1 duplicate labels removed; 2 zero-size boxes removed"


def test_big_endian_arrays_load_as_their_native_twins(tmp_path):
    data_yaml = make_tree(tmp_path, n=2)
    native = sorted((tmp_path / "valid/images").glob("*.npy"))
    for f in native:
        twin = f.with_name(f"{f.stem}_be.npy")
        np.save(twin, np.load(f).astype(">f4"))
        (tmp_path / "valid/labels" / f"{twin.stem}.txt").write_bytes(
            (tmp_path / "valid/labels" / f"{f.stem}.txt").read_bytes()
        )
    ds = build(data_yaml)
    assert len(ds) == 4
    for f in native:
        a, b = ds.im_files.index(str(f)), ds.im_files.index(str(f.with_name(f"{f.stem}_be.npy")))
        np.testing.assert_array_equal(ds.load_image(a)[0], ds.load_image(b)[0])
    be = np.load(native[0]).astype(">f2")
    np.testing.assert_array_equal(arrays.to_uint8(be), arrays.to_uint8(np.load(native[0]).astype(np.float16)))


def test_disk_cache_works_on_the_rectangular_loaders_of_validation_and_rect_training(tmp_path):
    from smartcash_ultra.engine.validator import SmartCashValidator

    data_yaml = make_tree(tmp_path, n=5)
    np.save(tmp_path / "valid/images/pre_wide.npy", np.full((40, 64, 3), GREY, np.float32))  # batches of two shapes
    np.save(tmp_path / "train/images/pre_wide.npy", np.full((40, 64, 3), GREY, np.float32))
    data = check_det_dataset(str(data_yaml))
    cfg = get_cfg(overrides={"imgsz": 64, "task": "detect", "cache": "disk"})
    before = tree_digest(tmp_path)
    loaders = {  # the trainer's validation loader is rectangular, as is a rect=True training loader
        "trainer val": build_smartcash_dataset(cfg, data["val"], 4, data, mode="val", rect=True, stride=32),
        "rect train": build_smartcash_dataset(get_cfg(cfg, {"rect": True}), data["train"], 4, data, stride=32),
    }
    validator = SmartCashValidator(args={"imgsz": 64, "task": "detect", "cache": "disk", "rect": True})
    validator.data, validator.stride = data, 32  # what `yolo val` sets before building its loader
    loaders["yolo val"] = validator.build_dataset(data["val"], batch=4)
    for name, ds in loaders.items():
        assert ds.rect and ds.cache == "disk" and len(ds) == 6, name
        for i in range(len(ds)):
            assert ds[i]["img"].shape[0] == 3
        i = next(k for k, f in enumerate(ds.im_files) if f.endswith("pre_wide.npy"))
        np.testing.assert_array_equal(ds.load_image(i, rect_mode=True)[0], np.full((40, 64, 3), 114, np.uint8))
    assert tree_digest(tmp_path) == before  # nothing written but the label caches


class Payload:
    """Unpickling this creates the marker file: stands for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_label_cache_brought_by_a_dataset_is_never_unpickled(tmp_path, log_lines):
    data_yaml = make_tree(tmp_path, n=3)
    marker = tmp_path.parent / f"{tmp_path.name}-unpickled"
    stock, ours = {}, {}
    for split in ("train", "valid"):
        stock[split] = tmp_path / split / "labels.cache"  # where Ultralytics keeps (and unpickles) its label cache
        with open(stock[split], "wb") as f:
            np.save(f, np.array({"version": "1.0.12", "x": Payload(marker)}, dtype=object), allow_pickle=True)
        ours[split] = tmp_path / split / CACHE_DIRNAME / "labels.cache"  # and where the plugin keeps its own
        ours[split].parent.mkdir()
        ours[split].write_bytes(pickle.dumps(Payload(marker)))
    planted = {p: p.read_bytes() for p in stock.values()}
    for strict in (False, True):
        data_yaml = write_data_yaml(tmp_path, NAMES, strict=strict)
        assert len(build(data_yaml, mode="train")) == len(build(data_yaml, mode="val")) == 3
    assert not marker.exists()
    assert {p: p.read_bytes() for p in stock.values()} == planted  # left as it was, never loaded
    assert sum(f"ignoring {stock['train']}: " in line for line in log_lines) == 2
    for path in ours.values():  # replaced by a cache that loads without pickle
        with np.load(path, allow_pickle=False) as archive:
            assert sorted(archive.files) == ["meta", "rows"]
            assert archive["meta"].dtype == np.uint8 and archive["rows"].dtype == np.float32


def test_strict_refuses_on_a_read_only_tree_whatever_cache_it_holds(tmp_path, monkeypatch):
    import ultralytics.data.utils

    import smartcash_ultra.data.label_cache as label_cache_module

    data_yaml = make_tree(tmp_path, n=4)
    data_yaml = write_data_yaml(tmp_path, NAMES, strict=True)
    assert len(build(data_yaml, mode="train")) == 4  # clean: its label cache is written
    (tmp_path / "train/labels/aug_001000_00000000_001.txt").write_text("5 0.5 0.5 0.2 0.2\n")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(ultralytics.data.utils, "is_dir_writeable", lambda path: False)
    monkeypatch.setattr(label_cache_module, "write_atomic", read_only)
    for _ in range(2):  # also when a second run finds the same stale cache
        with pytest.raises(DatasetProblems, match=r"aug_001000_00000000_001.txt: label line 1: class id 5 outside"):
            build(data_yaml, mode="train")


def test_training_refuses_names_that_most_label_files_go_beyond(tmp_path):
    data_yaml = make_tree(tmp_path, n=7)
    for i, f in enumerate(sorted((tmp_path / "train/labels").glob("*.txt"))):
        f.write_text(f"{i} 0.5 0.5 0.2 0.2\n")  # class ids 0..6
    names = {i: f"c{i}" for i in range(3)}
    data_yaml = write_data_yaml(tmp_path, names)
    message = (
        rf"{data_yaml}: 'names' has 3 classes \(ids 0-2\), but 4 of the 7 label files with boxes in "
        rf"{tmp_path / 'train/images'} use higher class ids \(e.g. 6 in .*\.txt\)"
    )
    with pytest.raises(DatasetError, match=message):
        build(data_yaml, mode="train")
    write_data_yaml(tmp_path, {**names, 3: "c3"})  # 3 of 7 beyond: bad files, left out and named, as usual
    assert len(build(data_yaml, mode="train")) == 4


@pytest.mark.slow
def test_yolo_train_val_predict_on_disk_cache_single_cls_a_planted_label_cache_and_bad_arrays(tiny_data, tmp_path):
    root = Path(shutil.copytree(tiny_data.parent, tmp_path / "data"))
    marker = tmp_path / "unpickled"
    for split in ("train", "valid"):
        with open(root / split / "labels.cache", "wb") as f:
            np.save(f, np.array({"version": "1.0.12", "x": Payload(marker)}, dtype=object), allow_pickle=True)
    common = ("imgsz=64", "batch=4", "workers=0", "cache=disk", "single_cls=True", "plots=False", f"project={tmp_path}")
    train = run_yolo("train", f"model={CSP_N_YAML}", f"data={root / 'data.yaml'}", "epochs=1", "name=t", *common)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    val = run_yolo("val", f"model={tmp_path / 't/weights/best.pt'}", f"data={root / 'data.yaml'}", "name=v", *common)
    assert val.returncode == 0, val.stdout[-3000:] + val.stderr[-3000:]
    assert not marker.exists()
    for run, split in ((train, "train"), (val, "valid")):  # every item kept (single_cls), read where it is
        arrays = len(list((root / split / "images").glob("*.npy")))
        assert f"cache=disk: {arrays} .npy arrays are read where they are" in run.stdout + run.stderr
    assert {p.relative_to(root) for p in root.rglob("*.npy")} == {  # no copy of an array written anywhere
        p.relative_to(tiny_data.parent) for p in tiny_data.parent.rglob("*.npy")
    }
    assert (
        f"{len(sorted((root / 'valid/images').glob('*.npy')))} images, 0 backgrounds, 0 corrupt"
        in val.stdout + val.stderr
    )

    folder = tmp_path / "predict"  # yolo predict on a folder: a bad array is named and skipped, the rest predicted
    (folder / "x.npy").mkdir(parents=True)
    good = sorted((root / "test/images").glob("*.npy"))
    shutil.copy(good[0], folder / "x.npy" / good[0].name)
    shutil.copy(good[1], folder / good[1].name)
    (folder / "bad.npy").write_bytes(b"not an array")
    best = tmp_path / "t/weights/best.pt"
    pred = run_yolo("predict", f"model={best}", f"source={folder}", "imgsz=64", f"project={tmp_path}", "name=p")
    out = pred.stdout + pred.stderr
    assert pred.returncode == 0, out[-3000:]
    assert f"skipping {folder / 'bad.npy'}: not a NumPy .npy file" in out
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(f.with_suffix(".jpg").name for f in good[:2])
