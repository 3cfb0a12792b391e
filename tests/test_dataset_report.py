"""Bad input named and survived: `check`, `stats`, strict mode and declared value ranges on real generated trees."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml
from conftest import CSP_N_YAML, run_yolo, tree_digest, write_data_yaml
from test_dataset import NAMES, build, label_line, make_tree, red_box_array

from smartcash_ultra.data.dataset import DatasetProblems
from smartcash_ultra.data.image_dataset import DatasetError
from smartcash_ultra.tools.cli import main
from smartcash_ultra.tools.report import get_class_distribution, get_dataset_info, scan_dataset
from smartcash_ultra.utils.classes import LAYERS

BOX = (10, 10, 30, 30)
GOOD_LABEL = label_line(0, BOX, 64)


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, arr, allow_pickle=allow_pickle)
    return buffer.getvalue()


def mixed_tree(root):
    """A tree of good files plus one file per bad-input case; returns its YAML and {stem: expected problem}."""
    data_yaml = make_tree(root, n=4)
    good = red_box_array(64, BOX)
    with_nan, with_inf = good.copy(), good.copy()
    with_nan[3, 3, 0], with_inf[5, 5, 1] = np.nan, np.inf
    arrays = {  # stem -> (array file bytes, expected problem or None when it must load)
        "pre_truncated": (npy_bytes(good)[:300], "truncated: 300 of 49280 bytes for shape (64, 64, 3) float32"),
        "pre_cut_header": (npy_bytes(good)[:40], "not a NumPy .npy file"),
        "pre_not_numpy": (b"this is no array", "not a NumPy .npy file"),
        "pre_object": (npy_bytes(np.array([{"evil": 1}], dtype=object), allow_pickle=True), "never unpickled"),
        "pre_rank2": (npy_bytes(good[..., 0]), "expected (H, W, 3)"),
        "pre_four_channels": (npy_bytes(np.concatenate([good, good[..., :1]], axis=2)), "expected (H, W, 3)"),
        "pre_float64": (npy_bytes(good.astype(np.float64)), "dtype float64"),
        "pre_nan": (npy_bytes(with_nan), "1 NaN/inf values"),
        "pre_inf": (npy_bytes(with_inf), "1 NaN/inf values"),
        "pre_0_255": (npy_bytes(good * 255), "declare 'value_range: [0, 255]'"),
        "pre_uint8": (npy_bytes(red_box_array(64, BOX, dtype=np.uint8)), None),
        "pre_float16": (npy_bytes(good.astype(np.float16)), None),
        "pre_big_endian": (npy_bytes(good.astype(">f4")), None),
    }
    labels = {  # stem -> (label text or None for no file, expected problem or None)
        "pre_no_label": (None, None),
        "pre_empty_label": ("", None),
        "pre_malformed": ("0 0.5 0.5\n", "label line 1 has 3 fields"),
        "pre_bad_class": ("5 0.5 0.5 0.2 0.2\n", "class id 5 outside 0-1 (nc=2)"),
        "pre_outside": ("0 0.5 1.5 0.2 0.2\n", "box coordinates outside 0..1"),
        "pre_duplicate": (GOOD_LABEL * 2, "1 duplicate labels removed"),
        "pre_polygon": ("0 0.1 0.1 0.3 0.1 0.3 0.3 0.1 0.3\n", None),
        "pre_zero_size": (GOOD_LABEL + "1 0.5 0.5 0 0.1\n", "1 zero-size boxes removed"),
    }
    expected = {}
    images, label_dir = root / "train/images", root / "train/labels"
    for stem, (data, problem) in arrays.items():
        (images / f"{stem}.npy").write_bytes(data)
        (label_dir / f"{stem}.txt").write_text(GOOD_LABEL)
        expected[stem] = problem
    for stem, (text, problem) in labels.items():
        np.save(images / f"{stem}.npy", good)
        if text is not None:
            (label_dir / f"{stem}.txt").write_text(text)
        expected[stem] = problem
    (images / "pre_uint8.meta.json").write_text('{"original_shape": [480, 640], "scale": 0.1, "padding": [8, 8, 0, 0]}')
    (images / "pre_float16.meta.json").write_text("{not json")
    return data_yaml, expected


def test_check_names_every_bad_file_and_its_problem_and_touches_nothing(tmp_path, capsys):
    data_yaml, expected = mixed_tree(tmp_path)
    before = tree_digest(tmp_path)
    report = scan_dataset(data_yaml)
    problems = report.problems
    for stem, problem in expected.items():
        mine = [p for p in problems if f"/{stem}." in p]
        if problem is None:
            assert not [p for p in mine if ".meta.json: not a readable JSON sidecar" not in p], stem
        else:
            assert len(mine) == 1 and problem in mine[0], (stem, mine)
    assert any("pre_float16.meta.json: not a readable JSON sidecar" in p for p in problems)
    counts = report.splits["train"].counts()
    assert counts["skipped"] == 13 and counts["corrected"] == 2 and counts["backgrounds"] == 1
    assert counts["empty_label_files"] == 1 and counts["sidecars"] == 1 and counts["images"] == 4 + 21
    assert not report.ok and report.splits["valid"].counts()["skipped"] == 0
    assert main(["check", str(data_yaml)]) == 1
    out = capsys.readouterr().out
    assert "16 problem(s)" in out and "pre_object.npy: holds Python objects (dtype object)" in out
    assert tree_digest(tmp_path) == before


def test_training_leaves_the_bad_files_out_and_loads_the_rest(tmp_path):
    data_yaml, expected = mixed_tree(tmp_path)
    before = tree_digest(tmp_path)
    ds = build(data_yaml, mode="train")
    skipped = {stem for stem, problem in expected.items() if problem and "removed" not in problem}
    assert len(ds) == 4 + 21 - len(skipped)
    assert not {s for s in skipped if any(f"/{s}.npy" in f for f in ds.im_files)}
    for i in range(len(ds)):
        assert tuple(ds[i]["img"].shape) == (3, 64, 64)
    assert tree_digest(tmp_path) == before  # the label cache aside (in .smartcash_cache)


@pytest.mark.slow
def test_strict_dataset_refuses_to_train_and_lists_every_problem(tmp_path):
    data_yaml, expected = mixed_tree(tmp_path)
    write_data_yaml(tmp_path, NAMES, strict=True)
    with pytest.raises(DatasetProblems) as e:
        build(data_yaml, mode="train")
    assert len(e.value.problems) == sum(p is not None for p in expected.values())
    result = run_yolo(  # the CLI stops before its first epoch, with a non-zero exit
        "train", f"model={CSP_N_YAML}", f"data={data_yaml}", "epochs=1", "imgsz=64", f"project={tmp_path}"
    )
    assert result.returncode != 0 and "problem(s) in a strict dataset" in result.stdout + result.stderr
    assert not (tmp_path / "train/weights").exists()


def test_declared_value_range_trains_0_255_float_arrays_as_their_0_1_twins(tmp_path):
    make_tree(tmp_path / "unit", n=3)
    make_tree(tmp_path / "wide", n=3)
    for f in (tmp_path / "wide").rglob("*.npy"):
        np.save(f, np.load(f) * 255)
    wide = write_data_yaml(tmp_path / "wide", NAMES, value_range=[0, 255])
    assert scan_dataset(wide).ok
    a, b = build(tmp_path / "unit/data.yaml"), build(wide)
    for i in range(3):
        np.testing.assert_array_equal(a.load_image(i)[0], b.load_image(i)[0])
    write_data_yaml(tmp_path / "wide", NAMES)
    assert "outside the declared range 0..1" in scan_dataset(tmp_path / "wide/data.yaml").problems[0]


def test_dataset_level_errors_name_the_yaml_and_the_path(tmp_path):
    make_tree(tmp_path, n=2)
    write_data_yaml(tmp_path, NAMES, nc=3)
    with pytest.raises(DatasetError, match=r"data.yaml: 'nc' is 3 but 'names' has 2 classes"):
        scan_dataset(tmp_path / "data.yaml")
    write_data_yaml(tmp_path, {-1: "001", 1: "002"})  # Ultralytics' check_class_names lets these ids pass
    with pytest.raises(DatasetError, match=r"data.yaml: 'names' keys must be class ids 0..n-1, got \[-1, 1\]"):
        scan_dataset(tmp_path / "data.yaml")
    write_data_yaml(tmp_path, [])
    with pytest.raises(DatasetError, match=r"data.yaml: 'names' must be a non-empty list or mapping, got \[\]"):
        scan_dataset(tmp_path / "data.yaml")
    write_data_yaml(tmp_path, NAMES, value_range="0-255")
    with pytest.raises(DatasetError, match=r"data.yaml: value_range must be \[low, high\]"):
        scan_dataset(tmp_path / "data.yaml")
    write_data_yaml(tmp_path, NAMES, channel_order="BRG")
    with pytest.raises(DatasetError, match=r"data.yaml: 'channel_order' must be RGB or BGR, got 'BRG'"):
        scan_dataset(tmp_path / "data.yaml")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "train/images", "val": "nowhere", "names": NAMES}))
    with pytest.raises(DatasetError, match="'val' path .*nowhere does not exist"):
        scan_dataset(tmp_path / "data.yaml")
    assert main(["check", str(tmp_path / "data.yaml")]) == 2
    (tmp_path / "empty/images").mkdir(parents=True)
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "train/images", "val": "empty", "names": NAMES}))
    assert scan_dataset(tmp_path / "data.yaml").problems == [
        f"{tmp_path}/data.yaml: split 'valid' holds no .npy arrays or images"
    ]


def test_stats_count_classes_layers_backgrounds_boxes_and_sidecars(tiny_data, capsys):
    info = get_dataset_info(tiny_data)
    train = info["splits"]["train"]
    counted = np.concatenate(
        [np.loadtxt(f, ndmin=2)[:, 0] for f in (tiny_data.parent / "train/labels").glob("*.txt") if f.stat().st_size]
    )
    assert train["instances"] == len(counted) == train["box_sizes"]["boxes"]
    per_class = get_class_distribution(tiny_data, "train")
    assert list(per_class.values()) == [int((counted == i).sum()) for i in range(17)]
    assert train["instances_per_layer"] == {k: int(np.isin(counted, ids).sum()) for k, ids in LAYERS.items()}
    boxes = train["box_sizes"]
    assert boxes["small"] + boxes["medium"] + boxes["large"] == boxes["boxes"]
    sidecars = sorted((tiny_data.parent / "train/images").glob("*.meta.json"))
    assert train["sidecars"] == train["sidecar_geometry"]["sidecars"] == len(sidecars) > 0
    total = get_class_distribution(tiny_data)
    assert sum(total.values()) == sum(s["instances"] for s in info["splits"].values())
    with pytest.raises(DatasetError, match="has no split 'val'"):
        get_class_distribution(tiny_data, "val")
    assert main(["stats", str(tiny_data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["train"]["instances"] == train["instances"]
    assert main(["stats", str(tiny_data)]) == 0
    assert "layer_1" in capsys.readouterr().out


def test_dataset_exposes_the_sidecar_geometry(tiny_data):
    ds = build(tiny_data)
    with_meta = [i for i in range(len(ds)) if ds.meta(i) is not None]
    assert with_meta and all(len(ds.meta(i)["padding"]) == 4 for i in with_meta)
    i = with_meta[0]
    h, w = ds.meta(i)["original_shape"]
    assert max(h, w) * ds.meta(i)["scale"] == pytest.approx(96, abs=1)  # letterboxed to the tree's 96 px


def test_check_names_what_training_refuses_and_only_warns_about_a_missing_optional_split(tmp_path, capsys):
    data_yaml = make_tree(tmp_path, n=3)
    data_yaml.write_text(yaml.safe_dump({"train": "train/images", "names": NAMES}))  # no val: training refuses
    assert scan_dataset(data_yaml).problems == [
        f"{data_yaml}: no 'val' split; training refuses a data YAML without one"
    ]
    assert main(["check", str(data_yaml)]) == 1
    assert "no 'val' split" in capsys.readouterr().out

    data_yaml.write_text(
        yaml.safe_dump({"train": "train/images", "val": "valid/images", "test": "test/images", "names": NAMES})
    )
    report = scan_dataset(data_yaml)  # an optional split that is missing: a warning, the rest is checked
    assert report.ok and sorted(report.splits) == ["train", "valid"]
    assert report.warnings == [
        f"{data_yaml}: 'test' path {tmp_path / 'test/images'} does not exist; the optional split is skipped "
        "(training does not need it)"
    ]
    assert main(["check", str(data_yaml)]) == 0
    out = capsys.readouterr().out
    assert "no problems" in out and f"warning: {report.warnings[0]}" in out


def test_check_refuses_names_that_most_label_files_go_beyond_as_training_does(tmp_path):
    data_yaml = make_tree(tmp_path, n=7)
    for i, f in enumerate(sorted((tmp_path / "train/labels").glob("*.txt"))):
        f.write_text(f"{i} 0.5 0.5 0.2 0.2\n")  # class ids 0..6
    data_yaml = write_data_yaml(tmp_path, {i: f"c{i}" for i in range(3)})
    problems = scan_dataset(data_yaml).problems
    assert problems[0].startswith(
        f"{data_yaml}: 'names' has 3 classes (ids 0-2), but 4 of the 7 label files with boxes in split 'train' use "
        "higher class ids (e.g. 6 in "
    )
    assert len(problems) == 1 + 4  # and each file it would leave out
    with pytest.raises(DatasetError, match="'names' has 3 classes"):
        build(data_yaml, mode="train")


def test_check_reports_label_files_without_an_image_and_a_pickled_label_cache(tmp_path):
    data_yaml = make_tree(tmp_path, n=2)
    lost = tmp_path / "train/labels/pre_lost.txt"
    lost.write_text(GOOD_LABEL)
    (tmp_path / "train/labels/classes.txt").write_text("001\n002\n")  # LabelImg's class list: no label file
    (tmp_path / "valid/labels.cache").write_bytes(b"\x80\x04N.")  # Ultralytics' pickle: never loaded
    report = scan_dataset(data_yaml)
    assert report.problems == [f"{lost}: label file without an image; training does not read it"]
    assert report.warnings == [
        f"{tmp_path / 'valid/labels.cache'}: Ultralytics' label cache, a pickle; SmartCash never loads it (it could "
        "run code), delete it unless you made it"
    ]
