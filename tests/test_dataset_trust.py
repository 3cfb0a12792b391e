"""Hostile and careless data trees (issue 18): loops, deep nesting, FIFOs, forged caches, one YAML read one way."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import tree_digest, write_data_yaml
from test_dataset import NAMES, build, make_tree
from ultralytics.data.utils import check_det_dataset

from smartcash_ultra.data.image_dataset import DatasetError
from smartcash_ultra.data.label_cache import CACHE_DIRNAME
from smartcash_ultra.tools.cli import main
from smartcash_ultra.tools.report import scan_dataset

BOX = (10, 10, 30, 30)


def training_files(data_yaml: Path, split: str = "train") -> list[str]:
    """The image files training lists for a split: Ultralytics resolves the YAML, SmartCashDataset lists the files."""
    ds = build(data_yaml, mode="train" if split == "train" else "val")
    return sorted(ds.im_files)


# High 5: a symlink loop -----------------------------------------------------------------------------------------------
def test_a_symlink_loop_is_searched_once_reported_by_check_and_skipped_by_training(tmp_path, capsys):
    data_yaml = make_tree(tmp_path, n=4)
    images = tmp_path / "train/images"
    (images / "loop").symlink_to(".", target_is_directory=True)
    first = sorted(images.glob("*.npy"))[0]
    (images / "again.npy").symlink_to(first.name)  # one real file under two names
    report = scan_dataset(data_yaml)
    assert [len(report.splits[s].samples) for s in ("train", "valid")] == [4, 4]
    assert report.problems == [
        f"{images / 'again.npy'}: the same file as {first}; used once",
        f"{images / 'loop'}: a folder already searched ({images}, a symlink loop or a second link); not searched again",
    ]
    assert main(["check", str(data_yaml)]) == 1
    assert f"{images / 'loop'}: a folder already searched" in capsys.readouterr().out
    assert len(training_files(data_yaml)) == 4


# High 6: deep nesting -------------------------------------------------------------------------------------------------
def test_a_deeply_nested_sidecar_is_a_named_problem_and_a_deep_yaml_is_exit_2_in_one_line(tmp_path, capsys):
    data_yaml = make_tree(tmp_path, n=2)
    array = sorted((tmp_path / "train/images").glob("*.npy"))[0]
    sidecar = array.with_name(array.stem + ".meta.json")
    sidecar.write_text("[" * 100_000 + "]" * 100_000)
    problems = scan_dataset(data_yaml).problems
    assert problems == [f"{sidecar}: not a readable JSON sidecar (nested too deeply)"]
    assert main(["stats", str(data_yaml)]) == 0
    assert main(["check", str(data_yaml)]) == 1
    capsys.readouterr()
    data_yaml.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    for command in ("check", "stats"):
        assert main([command, str(data_yaml)]) == 2
        err = capsys.readouterr().err
        assert err == f"smartcash-ultra {command}: error: {data_yaml}: cannot be read as YAML (nested too deeply)\n"


def test_check_and_stats_exit_2_with_one_line_for_a_crash_of_their_own(tmp_path, capsys, monkeypatch):
    data_yaml = make_tree(tmp_path, n=2)

    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("smartcash_ultra.tools.report.inspect_samples", crash)
    for command in ("check", "stats"):
        assert main([command, str(data_yaml)]) == 2
        err = capsys.readouterr().err
        assert err == f"smartcash-ultra {command}: error: {data_yaml}: failed (RuntimeError: boom)\n"


# High 7: one data YAML, one tree --------------------------------------------------------------------------------------
def yaml_forms(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    """Data YAMLs of every form over one tree ``ds``: name -> (YAML, working folder)."""
    ds = tmp_path / "ds"
    make_tree(ds, n=3)
    (tmp_path / "cfg").mkdir()
    lists = tmp_path / "lists"
    lists.mkdir()
    train, valid = (sorted((ds / split / "images").glob("*.npy")) for split in ("train", "valid"))
    (lists / "rel.txt").write_text("".join(f"./../ds/train/images/{f.name}\n" for f in train))
    (lists / "abs.txt").write_text("".join(f"{f}\n" for f in valid))

    def write(folder: Path, name: str, **data) -> Path:
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"val": "valid/images", "names": NAMES, **data}))
        return path

    return {
        "no path": (write(ds, "plain", train="train/images"), tmp_path),
        "relative path, from the working folder": (
            write(tmp_path / "cfg", "rel", path="ds", train="train/images"),
            tmp_path,
        ),
        "'.' run in the tree": (write(ds, "dot", path=".", train="train/images"), ds),
        "absolute path": (write(tmp_path / "cfg", "abs", path=str(ds), train="train/images"), tmp_path / "cfg"),
        ".txt lists": (write(ds, "lists", train=str(lists / "rel.txt")), tmp_path),
        "a list of a folder and a .txt list": (
            write(ds, "mixed", train=["train/images", str(lists / "abs.txt")]),
            tmp_path,
        ),
    }


@pytest.mark.parametrize(
    "form",
    [
        "no path",
        "relative path, from the working folder",
        "'.' run in the tree",
        "absolute path",
        ".txt lists",
        "a list of a folder and a .txt list",
    ],
)
def test_check_lists_the_files_training_lists_for_every_form_of_data_yaml(tmp_path, monkeypatch, form):
    data_yaml, cwd = yaml_forms(tmp_path)[form]
    monkeypatch.chdir(cwd)
    report = scan_dataset(data_yaml)
    assert report.ok, report.problems
    for split, key in (("train", "train"), ("valid", "val")):
        checked = sorted(str(s.im_file) for s in report.splits[split].samples)
        assert checked == training_files(data_yaml, key) and checked


def test_check_refuses_a_path_dot_yaml_run_where_training_cannot_find_its_images(tmp_path, monkeypatch, capsys):
    data_yaml, _ = yaml_forms(tmp_path)["'.' run in the tree"]
    monkeypatch.chdir(tmp_path)  # the YAML's parent folder: Ultralytics reads '.' as this folder, not the YAML's
    with pytest.raises(FileNotFoundError, match="images not found"):
        check_det_dataset(str(data_yaml))
    with pytest.raises(DatasetError, match=rf"'val' path {tmp_path / 'valid/images'} does not exist; training reads"):
        scan_dataset(data_yaml)
    assert main(["check", str(data_yaml)]) == 2
    assert f"from the working folder ({tmp_path})" in capsys.readouterr().err


# Medium 14: a whole disk, a FIFO, a strict string ---------------------------------------------------------------------
def check_in_a_subprocess(data_yaml: Path, timeout: int = 60) -> subprocess.CompletedProcess:
    """``smartcash-ultra check`` in a fresh interpreter, killed after ``timeout`` s (a hang fails the test)."""
    cmd = [sys.executable, "-m", "smartcash_ultra.tools.cli", "check", str(data_yaml)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_a_split_that_is_the_whole_file_system_is_refused_at_once(tmp_path):
    data_yaml = tmp_path / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": "/", "train": ".", "val": ".", "names": NAMES}))
    done = check_in_a_subprocess(data_yaml)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        "smartcash-ultra check: error: /: is the root of the file system; a split names a dataset folder, not the "
        "disk\n"
    )
    with pytest.raises(DatasetError, match="is the root of the file system"):
        build(data_yaml, mode="train")


def test_a_fifo_named_like_an_array_is_named_and_never_opened(tmp_path):
    data_yaml = make_tree(tmp_path, n=2)
    fifo = tmp_path / "train/images/pre_fifo.npy"
    os.mkfifo(fifo)
    done = check_in_a_subprocess(data_yaml)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"{fifo}: not a regular file (a FIFO, device or socket); never read" in done.stdout
    assert len(training_files(data_yaml)) == 2


@pytest.mark.parametrize("strict", ["false", "no", 0])
def test_strict_must_be_a_yaml_boolean(tmp_path, strict):
    make_tree(tmp_path, n=2)
    data_yaml = write_data_yaml(tmp_path, NAMES, strict=strict)
    with pytest.raises(DatasetError, match=f"'strict' must be true or false, got {strict!r}"):
        scan_dataset(data_yaml)
    with pytest.raises(DatasetError, match="'strict' must be true or false"):
        build(data_yaml, mode="train")


def test_canary_check_det_dataset_checks_the_font_through_its_module_global(tmp_path, monkeypatch):
    import ultralytics.data.utils

    data_yaml = make_tree(tmp_path, n=2)
    fonts = []
    monkeypatch.setattr(ultralytics.data.utils, "check_font", fonts.append)
    check_det_dataset(str(data_yaml))
    assert fonts == ["Arial.ttf"]


def test_check_fetches_runs_and_writes_nothing_where_training_would_download(tmp_path, monkeypatch):
    import ultralytics.utils.checks
    import ultralytics.utils.downloads

    def no_network(*args, **kwargs):
        raise AssertionError(f"network reached: {args}")

    monkeypatch.setattr(ultralytics.utils.downloads, "is_url", no_network)
    monkeypatch.setattr(ultralytics.utils.downloads, "safe_download", no_network)
    monkeypatch.setattr(ultralytics.utils.checks, "USER_CONFIG_DIR", tmp_path / "no fonts here")
    ultralytics.utils.checks.check_font.__wrapped__.cache_clear()  # an earlier check in this process is remembered
    data_yaml = make_tree(tmp_path, n=2)
    marker = tmp_path / "ran"
    with pytest.raises(AssertionError, match="network reached"):
        check_det_dataset(str(data_yaml))  # training's font check probes the network
    before = tree_digest(tmp_path)
    assert scan_dataset(data_yaml).ok
    assert tree_digest(tmp_path) == before
    data_yaml.write_text(
        yaml.safe_dump(
            {"train": "train/images", "val": "gone", "names": NAMES, "download": f"open({str(marker)!r}, 'w')"}
        )
    )
    before = tree_digest(tmp_path)
    with pytest.raises(DatasetError, match="'val' path .*gone does not exist"):
        scan_dataset(data_yaml)  # training would run the 'download' script
    assert tree_digest(tmp_path) == before and not marker.exists()


# Medium 9 and 14: a forged label cache that keeps the true hash ------------------------------------------------------
def train_cache(root: Path) -> Path:
    return root / "train" / CACHE_DIRNAME / "labels.cache"


def read_cache(path: Path) -> tuple[dict, np.ndarray]:
    with np.load(path, allow_pickle=False) as archive:
        return json.loads(archive["meta"].tobytes()), archive["rows"]


def write_cache(path: Path, meta: dict, rows: np.ndarray, compression: int = zipfile.ZIP_STORED, pad: int = 0) -> None:
    """Write a cache as the plugin does (an NPZ of meta and rows), or deflated, its JSON padded with blanks."""
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, arr in (("meta", np.frombuffer((json.dumps(meta) + " " * pad).encode(), np.uint8)), ("rows", rows)):
            buffer = io.BytesIO()
            np.save(buffer, arr, allow_pickle=False)
            z.writestr(f"{name}.npy", buffer.getvalue())


@pytest.mark.parametrize(("column", "value"), [(0, 99), (0, 0.5), (1, np.nan), (3, 0.0), (2, 7.0)])
def test_a_forged_cache_with_the_true_hash_but_impossible_rows_is_not_used(tmp_path, column, value):
    data_yaml = make_tree(tmp_path, n=3)
    truth = build(data_yaml, mode="train").labels
    meta, rows = read_cache(train_cache(tmp_path))
    rows = rows.copy()
    rows[0, column] = value
    write_cache(train_cache(tmp_path), meta, rows)
    labels = build(data_yaml, mode="train").labels  # verified again: class 99 made `yolo val` fail with IndexError
    assert [lb["cls"].tolist() for lb in labels] == [lb["cls"].tolist() for lb in truth]
    assert [lb["bboxes"].tolist() for lb in labels] == [lb["bboxes"].tolist() for lb in truth]


def test_a_forged_cache_with_escape_sequences_in_its_messages_is_not_used(tmp_path, log_lines):
    data_yaml = make_tree(tmp_path, n=3)
    build(data_yaml, mode="train")
    meta, rows = read_cache(train_cache(tmp_path))
    write_cache(train_cache(tmp_path), {**meta, "problems": ["\x1b]0;owned\x07\x1b[2Jzq-smuggled"]}, rows)
    build(data_yaml, mode="train")
    assert not any("zq-smuggled" in line for line in log_lines)


def test_a_deflated_cache_is_not_inflated(tmp_path):
    import tracemalloc

    data_yaml = make_tree(tmp_path, n=3)
    build(data_yaml, mode="train")
    meta, rows = read_cache(train_cache(tmp_path))
    write_cache(train_cache(tmp_path), meta, rows, zipfile.ZIP_DEFLATED, pad=64 << 20)  # 64 MB of blanks, 64 kB file
    assert train_cache(tmp_path).stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        build(data_yaml, mode="train")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20
    assert read_cache(train_cache(tmp_path))[0] == meta  # verified again and rewritten as the plugin writes it


# Medium 10: a label file edited in place, size and time kept --------------------------------------------------------
def test_a_label_file_edited_with_its_size_and_time_kept_is_read_again(tmp_path):
    data_yaml = make_tree(tmp_path, n=3)
    build(data_yaml, mode="train")
    label = sorted((tmp_path / "train/labels").glob("*.txt"))[0]
    stat = label.stat()
    text = label.read_text()
    label.write_text("1" + text[1:])  # class 0 -> 1, same size
    os.utime(label, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert label.stat().st_size == stat.st_size and label.stat().st_mtime_ns == stat.st_mtime_ns
    ds = build(data_yaml, mode="train")
    assert ds.labels[ds.im_files.index(str(label).replace("labels", "images")[:-3] + "npy")]["cls"].tolist() == [[1.0]]
    assert scan_dataset(data_yaml).class_distribution("train")["002"] == 1  # check and training agree


# Medium 12: a truncated file where cache=disk reads ------------------------------------------------------------------
def test_a_truncated_disk_cache_or_array_is_named_and_left_out_at_the_next_scan_never_mid_epoch(tmp_path):
    import cv2

    data_yaml = make_tree(tmp_path, n=3)
    images = tmp_path / "train/images"
    for stem in ("photo_a", "photo_b"):
        cv2.imwrite(str(images / f"{stem}.png"), np.full((64, 64, 3), 114, np.uint8))
    build(data_yaml, mode="train", cache="disk")  # Ultralytics writes photo_*.npy beside the PNGs
    cache, array = images / "photo_a.npy", sorted(images.glob("pre_*.npy"))[0]
    for f in (cache, array):
        f.write_bytes(f.read_bytes()[:200])
    ds = build(data_yaml, mode="train", cache="disk")
    assert sorted(Path(f).name for f in ds.im_files) == sorted(
        p.name for p in images.iterdir() if p not in (cache, array, images / "photo_a.png") and p.stem != "photo_b"
    ) + ["photo_b.png"]
    for i in range(len(ds)):  # a whole epoch
        ds[i]
    problems = sorted(scan_dataset(data_yaml).problems)
    assert [p.split(": ")[0] for p in problems] == [str(images / "photo_a.png"), str(array)]
    assert all("truncated" in p for p in problems)
