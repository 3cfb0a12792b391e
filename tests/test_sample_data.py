"""Tests of the synthetic SmartCash sample generator: layout, names, arrays, labels, learnability cues, determinism."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from smartcash_ultra.tools.sample_data import ensure_sample_dataset, generate_sample_dataset, main
from smartcash_ultra.utils.classes import NAMES, nominal_code

os.environ.setdefault("YOLO_OFFLINE", "1")  # before ultralytics is first imported (inside a test): no network

IMGSZ = 128
TINY = {"n_train": 6, "n_valid": 2, "n_test": 2, "imgsz": IMGSZ}
PRE = re.compile(r"^pre_(rp_)?(\d{6})_[0-9a-f-]{36}$")
AUG = re.compile(r"^aug_(\d{6})_[0-9a-f-]{36}_\d{3}$")
ROW = re.compile(r"^\d+( [01]\.\d{6}){4}$")
TOL = 1e-5  # labels carry 6 decimals


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_sample_dataset(tmp_path_factory.mktemp("sample") / "ds", **TINY)


def read_labels(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    assert lines and all(ROW.match(line) for line in lines), lines
    return np.array([[float(v) for v in line.split()] for line in lines])


def xyxy(row: np.ndarray) -> np.ndarray:
    _, x, y, w, h = row
    return np.array([x - w / 2, y - h / 2, x + w / 2, y + h / 2])


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_layout_and_names(sample: Path) -> None:
    root = sample.parent
    assert sample == root / "data.yaml"
    for split, n_pre, n_aug in (("train", 6, 6), ("valid", 2, 0), ("test", 2, 0)):
        stems = [p.stem for p in (root / split / "images").glob("*.npy")]
        assert sum(bool(PRE.match(s)) for s in stems) == n_pre
        assert sum(bool(AUG.match(s)) for s in stems) == n_aug
        assert len(stems) == n_pre + n_aug
        assert sorted(p.stem for p in (root / split / "labels").glob("*.txt")) == sorted(stems)
        for meta_path in (root / split / "images").glob("*.meta.json"):
            assert (root / split / "images" / meta_path.name.replace(".meta.json", ".npy")).is_file()
    # Every aug_* belongs to a pre_* original with the same nominal and uuid.
    train = [p.stem for p in (root / "train" / "images").glob("*.npy")]
    originals = {s.split("_")[-1] for s in train if s.startswith("pre_")}
    assert {s.split("_")[-2] for s in train if s.startswith("aug_")} == originals


def test_filename_nominal_is_largest_note(sample: Path) -> None:
    for label_path in sample.parent.glob("*/labels/*.txt"):
        rows = read_labels(label_path)
        notes = rows[rows[:, 0] < 7]
        main_cls = int(notes[np.argmax(notes[:, 3] * notes[:, 4]), 0])
        m = PRE.match(label_path.stem) or AUG.match(label_path.stem)
        assert m and m.groups()[-1] == nominal_code(main_cls)


def test_arrays_are_letterboxed_float_rgb(sample: Path) -> None:
    for npy in sample.parent.glob("*/images/*.npy"):
        arr = np.load(npy, allow_pickle=False)
        assert arr.dtype == np.float32 and arr.shape == (IMGSZ, IMGSZ, 3)
        assert arr.min() >= 0.0 and arr.max() <= 1.0
        # Photos are never square, so a full padding row or column of grey 114 exists on a border.
        pad = np.all(np.abs(arr - 114 / 255) < 1e-6, axis=2)
        assert pad[0].all() or pad[-1].all() or pad[:, 0].all() or pad[:, -1].all(), npy.name


def test_meta_sidecar_matches_array(sample: Path) -> None:
    metas = list(sample.parent.glob("*/images/pre_*.meta.json"))
    assert metas
    for meta_path in metas:
        meta = json.loads(meta_path.read_text())
        assert set(meta) == {"original_shape", "scale", "padding", "imgsz", "source"}
        top, bottom, left, right = meta["padding"]
        h, w = meta["original_shape"]
        assert meta["imgsz"] == IMGSZ and h != w
        assert abs(round(h * meta["scale"]) + top + bottom - IMGSZ) == 0
        assert abs(round(w * meta["scale"]) + left + right - IMGSZ) == 0
        stem = meta_path.name.removesuffix(".meta.json")
        nominal, uid = PRE.match(stem).group(2), stem.split("_")[-1]
        assert meta["source"] == f"rp_{nominal}_{uid}.jpg"
        arr = np.load(meta_path.with_name(f"{stem}.npy"))
        if top:
            assert np.allclose(arr[:top], 114 / 255, atol=1e-6)
        if left:
            assert np.allclose(arr[:, :left], 114 / 255, atol=1e-6)


def test_labels_are_consistent_across_layers(sample: Path) -> None:
    seen = set()
    for label_path in sample.parent.glob("*/labels/*.txt"):
        rows = read_labels(label_path)
        assert np.all((rows[:, 0] >= 0) & (rows[:, 0] < 17))
        boxes = np.array([xyxy(r) for r in rows])
        assert np.all(boxes >= -TOL) and np.all(boxes <= 1 + TOL) and np.all(rows[:, 3:] > 0)
        notes = [(int(r[0]), b) for r, b in zip(rows, boxes, strict=True) if r[0] < 7]
        for r, b in zip(rows, boxes, strict=True):
            cls = int(r[0])
            seen.add(cls)
            if cls < 7:
                continue
            owners = [c for c, nb in notes if np.all(b[:2] >= nb[:2] - TOL) and np.all(b[2:] <= nb[2:] + TOL)]
            assert owners, (label_path.name, r)
            if cls < 14:
                assert cls - 7 in owners
        # One nominal area and one of each security feature per note.
        counts = np.bincount(rows[:, 0].astype(int), minlength=17)
        assert counts[7:14].tolist() == counts[:7].tolist()
        assert set(counts[14:].tolist()) == {len(notes)}
    assert set(range(14, 17)) <= seen


def test_note_colours_differ_between_denominations(sample: Path) -> None:
    colours: dict[int, list[np.ndarray]] = {}
    for label_path in sample.parent.glob("*/labels/pre_*.txt"):
        arr = np.load(label_path.parent.parent / "images" / f"{label_path.stem}.npy")
        for row in read_labels(label_path):
            if row[0] < 7:
                x0, y0, x1, y1 = (xyxy(row) * IMGSZ).round().astype(int)
                colours.setdefault(int(row[0]), []).append(arr[y0:y1, x0:x1].reshape(-1, 3).mean(0))
    assert len(colours) >= 5  # balanced main notes: 6 train originals cover 6 denominations
    means = {c: np.mean(v, axis=0) for c, v in colours.items()}
    for a, mean_a in means.items():
        for b, mean_b in means.items():
            if a < b:
                assert np.abs(mean_a - mean_b).max() > 0.04, (NAMES[a], NAMES[b], mean_a, mean_b)


def test_deterministic(tmp_path: Path) -> None:
    a = tree_digest(generate_sample_dataset(tmp_path / "a", **TINY).parent)
    b = tree_digest(generate_sample_dataset(tmp_path / "b", **TINY).parent)
    c = tree_digest(generate_sample_dataset(tmp_path / "c", **TINY, seed=1).parent)
    assert a == b
    assert a.keys() != c.keys()


def test_refuses_non_empty_folder_and_overwrite_keeps_other_files(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    (root / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="ds"):
        generate_sample_dataset(root, **TINY)
    assert sorted(p.name for p in root.iterdir()) == ["mine.txt"]
    first = tree_digest(generate_sample_dataset(root, **TINY, overwrite=True).parent)
    assert (root / "mine.txt").read_text() == "user data"
    assert tree_digest(generate_sample_dataset(root, **TINY, overwrite=True).parent) == first
    assert not list(root.rglob("*.tmp"))
    with pytest.warns(UserWarning, match="did not write"):
        generate_sample_dataset(root, **TINY, seed=1, overwrite=True)
    assert first.keys() < tree_digest(root).keys()  # nothing deleted


@pytest.mark.parametrize(
    "kwargs",
    [{"imgsz": 100}, {"imgsz": 32}, {"n_train": 0}, {"n_valid": -1}, {"aug_per_image": -1}, {"classes": "layer_2"}],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_sample_dataset(tmp_path / "ds", **{**TINY, **kwargs})
    assert not (tmp_path / "ds").exists()


def test_layer_1_scheme(tmp_path: Path) -> None:
    yaml_path = generate_sample_dataset(tmp_path / "ds", **TINY, classes="layer_1")
    data = yaml.safe_load(yaml_path.read_text())
    assert data["nc"] == 7 and data["names"] == {i: NAMES[i] for i in range(7)}
    ids = np.concatenate([read_labels(p)[:, 0] for p in (tmp_path / "ds").glob("*/labels/*.txt")])
    assert set(ids.astype(int).tolist()) <= set(range(7))


def test_data_yaml_and_ultralytics_accepts_it(sample: Path) -> None:
    data = yaml.safe_load(sample.read_text())
    assert "path" not in data
    assert data["train"] == "train/images" and data["val"] == "valid/images" and data["test"] == "test/images"
    assert data["nc"] == 17 and data["names"] == NAMES
    assert all(isinstance(n, str) for n in data["names"].values())

    from ultralytics.data.utils import check_det_dataset

    checked = check_det_dataset(str(sample))
    assert checked["nc"] == 17 and checked["names"] == NAMES
    assert Path(checked["val"]) == (sample.parent / "valid" / "images").resolve()


def test_ensure_reuses_finished_sample(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    yaml_path = ensure_sample_dataset(root, **TINY)
    before = tree_digest(root)
    assert ensure_sample_dataset(root, **TINY, seed=5) == yaml_path
    assert tree_digest(root) == before
    with pytest.raises(ValueError, match="nc=17"):
        ensure_sample_dataset(root, classes="layer_1")


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "cli"
    assert (
        main([str(root), "--n-train", "2", "--n-valid", "1", "--n-test", "1", "--imgsz", "64", "--aug-per-image", "2"])
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(root / "data.yaml")
    assert out[1:] == ["train: 6 images", "valid: 1 images", "test: 1 images"]
    assert len(list((root / "train" / "images").glob("aug_*_002.npy"))) == 2
    with pytest.raises(SystemExit):
        main([str(root)])
