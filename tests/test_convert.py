"""smartcash-ultra convert: YOLO image datasets become SmartCash arrays whose labels sit on the same pixels."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import ROOT, tree_digest
from PIL import Image

from smartcash_ultra.data.image_dataset import DatasetError
from smartcash_ultra.tools.cli import main
from smartcash_ultra.tools.convert import convert_dataset, output_stem
from smartcash_ultra.utils.classes import NAMES as SMARTCASH_NAMES

SIZE = 128
GREY = 114 / 255
NAMES = {0: "red", 1: "blue"}
RED, BLUE, BACKGROUND = (220, 30, 40), (20, 40, 210), (60, 140, 70)
UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
LANDSCAPE = f"rp_001000_{UUID}.png"  # 300 x 180, a red box: the letterbox pads top and bottom
PORTRAIT = "IMG_42.png"  # 120 x 200, a blue box: padding left and right


def draw(path: Path, width: int, height: int, boxes: dict[int, tuple[int, int, int, int]]) -> str:
    """Write a PNG of flat background with filled boxes {cls: (x0, y0, x1, y1)}; return its YOLO label text."""
    rgb = np.full((height, width, 3), BACKGROUND, np.uint8)
    rows = []
    for cls, (x0, y0, x1, y1) in boxes.items():
        rgb[y0:y1, x0:x1] = (RED, BLUE)[cls]
        xc, yc, w, h = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height
        rows.append(f"{cls} {xc:.6f} {yc:.6f} {w:.6f} {h:.6f}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return "".join(rows)


def add_image(root: Path, split: str, name: str, label: str | bool = True, size=(64, 48), boxes=None) -> Path:
    """Add an image to a YOLO tree with a label file: its true boxes (True), ``label`` as text, or none (False)."""
    image = root / split / "images" / name
    text = draw(image, *size, boxes or {0: (8, 8, 40, 30)})
    if label is not False:
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        (root / split / "labels" / f"{Path(name).stem}.txt").write_text(text if label is True else label)
    return image


def write_yaml(root: Path, names: dict | list = NAMES) -> Path:
    """Write the data YAML of a YOLO tree, listing the splits it has."""
    splits = {key: f"{folder}/images" for key, folder in (("train", "train"), ("val", "valid"), ("test", "test"))}
    data = {key: path for key, path in splits.items() if (root / path).is_dir()}
    (root / "data.yaml").write_text(yaml.safe_dump({**data, "names": names}))
    return root / "data.yaml"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A two-split YOLO dataset of PNGs with known boxes; returns its data YAML."""
    root = tmp_path / "yolo"
    add_image(root, "train", LANDSCAPE, size=(300, 180), boxes={0: (60, 40, 150, 120)})
    add_image(root, "train", PORTRAIT, size=(120, 200), boxes={1: (30, 50, 90, 170)})
    add_image(root, "valid", "frame_7.png", size=(160, 96), boxes={0: (10, 10, 50, 40), 1: (100, 50, 150, 90)})
    return write_yaml(root)


def convert(src: Path, dst: Path, **kwargs):
    return convert_dataset(src, dst, size=SIZE, workers=kwargs.pop("workers", 0), **kwargs)


def label_boxes(path: Path) -> list[tuple[int, np.ndarray]]:
    """(cls, pixel x0 y0 x1 y1 in the letterboxed frame) of each row of a converted label file."""
    boxes = []
    for line in path.read_text().splitlines():
        cls, xc, yc, w, h = (float(v) for v in line.split())
        boxes.append((int(cls), np.array([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2]) * SIZE))
    return boxes


@pytest.mark.parametrize(
    ("split", "name", "shape", "box"),
    [("train", LANDSCAPE, (180, 300), (60, 40, 150, 120)), ("train", PORTRAIT, (200, 120), (30, 50, 90, 170))],
)
def test_round_trip_labels_land_on_the_same_pixels(source, tmp_path, split, name, shape, box):
    dst = tmp_path / "out"
    assert convert(source, dst).ok
    stem = output_stem(name)
    arr = np.load(dst / split / "images" / f"{stem}.npy", allow_pickle=False)
    meta = json.loads((dst / split / "images" / f"{stem}.meta.json").read_text())
    assert arr.dtype == np.float32 and arr.shape == (SIZE, SIZE, 3) and 0 <= arr.min() and arr.max() <= 1

    # The sidecar: source geometry, and scale/padding that place the content exactly in the frame.
    h, w = shape
    assert meta["original_shape"] == [h, w] and meta["imgsz"] == SIZE
    assert meta["source"] == f"{split}/images/{name}"
    assert meta["scale"] == pytest.approx(min(SIZE / h, SIZE / w))
    top, bottom, left, right = meta["padding"]
    assert top + bottom + round(h * meta["scale"]) == SIZE and left + right + round(w * meta["scale"]) == SIZE
    content = arr[top : SIZE - bottom, left : SIZE - right]
    assert np.all(np.delete(arr, np.s_[top : SIZE - bottom], axis=0) == np.float32(GREY))  # padding rows
    assert np.all(np.delete(arr, np.s_[left : SIZE - right], axis=1) == np.float32(GREY))  # padding columns
    assert np.abs(content[1, 1] * 255 - BACKGROUND).max() < 1  # a content corner is the photo's background

    # The label, mapped into the frame, covers the box's pixels; the sidecar's scale/padding map the box there too.
    [(cls, (x0, y0, x1, y1))] = label_boxes(dst / split / "labels" / f"{stem}.txt")
    colour = (RED, BLUE)[cls]
    inside = arr[math.ceil(y0) + 1 : math.floor(y1) - 1, math.ceil(x0) + 1 : math.floor(x1) - 1]
    assert inside.size and np.abs(inside * 255 - colour).max() < 1
    for px, py in ((x0 - 2, (y0 + y1) / 2), (x1 + 1, (y0 + y1) / 2), ((x0 + x1) / 2, y0 - 2), ((x0 + x1) / 2, y1 + 1)):
        assert np.abs(arr[int(py), int(px)] * 255 - colour).max() > 50  # just outside the box: not its colour
    mapped = np.array(box) * meta["scale"] + [left, top, left, top]
    assert np.abs(mapped - [x0, y0, x1, y1]).max() < 1  # under a pixel (the content size is rounded)


def test_output_names_follow_the_smartcash_convention(source, tmp_path):
    assert output_stem(f"raw/rp_050000_{UUID}.JPG") == f"pre_rp_050000_{UUID}"
    assert output_stem("photos/IMG_42.png") == "pre_IMG_42"
    assert output_stem(f"x/aug_001000_{UUID}_002.png") == f"aug_001000_{UUID}_002"  # already SmartCash names
    assert output_stem(f"x/pre_rp_001000_{UUID}.png") == f"pre_rp_001000_{UUID}"
    convert(source, tmp_path / "out")
    files = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert files == {
        "data.yaml",
        *(f"train/{f}" for stem in (f"pre_rp_001000_{UUID}", "pre_IMG_42") for f in _outputs(stem)),
        *(f"valid/{f}" for f in _outputs("pre_frame_7")),
    }


def _outputs(stem: str) -> tuple[str, str, str]:
    return f"images/{stem}.npy", f"images/{stem}.meta.json", f"labels/{stem}.txt"


def test_same_stem_twice_in_a_split_keeps_the_first_and_reports_the_other(tmp_path):
    root = tmp_path / "yolo"
    add_image(root, "train", "a.jpg")
    clash = add_image(root, "train", "a.png")
    report = convert(write_yaml(root), tmp_path / "out")
    assert report.converted == 1 and [p.path for p in report.problems] == [clash]
    assert "pre_a.npy is taken by" in report.problems[0].problem
    assert json.loads((tmp_path / "out/train/images/pre_a.meta.json").read_text())["source"] == "train/images/a.jpg"


def test_data_yaml_is_read_by_ultralytics_and_the_smartcash_dataset(source, tmp_path):
    from ultralytics.cfg import get_cfg
    from ultralytics.data.build import build_dataloader
    from ultralytics.data.utils import check_det_dataset

    from smartcash_ultra.data.dataset import build_smartcash_dataset

    dst = tmp_path / "out"
    report = convert(source, dst)
    assert report.data_yaml == dst / "data.yaml"
    assert yaml.safe_load(report.data_yaml.read_text()) == {
        "train": "train/images",
        "val": "valid/images",
        "nc": 2,
        "names": NAMES,
    }
    data = check_det_dataset(str(report.data_yaml))
    cfg = get_cfg(overrides={"imgsz": SIZE, "task": "detect"})
    dataset = build_smartcash_dataset(cfg, data["train"], 2, data, mode="val")
    batch = next(iter(build_dataloader(dataset, batch=2, workers=0, shuffle=False)))
    assert batch["img"].shape == (2, 3, SIZE, SIZE)
    assert sorted(batch["cls"].flatten().tolist()) == [0.0, 1.0]  # one box per image, both read back


def test_resume_skips_finished_images_and_redoes_missing_outputs(source, tmp_path):
    before = tree_digest(source.parent)
    dst = tmp_path / "out"
    first = convert(source, dst)
    assert (first.converted, first.up_to_date, first.images) == (3, 0, 3)
    converted = tree_digest(dst)

    second = convert(source, dst)
    assert (second.converted, second.up_to_date) == (0, 3) and second.ok
    assert tree_digest(dst) == converted

    # An interrupted run: one image lost its array, another its sidecar (written last, it marks an image finished).
    (dst / "train/images/pre_IMG_42.npy").unlink()
    (dst / "valid/images/pre_frame_7.meta.json").unlink()
    third = convert(source, dst)
    assert (third.converted, third.up_to_date) == (2, 1)
    assert tree_digest(dst) == converted
    assert tree_digest(source.parent) == before  # the source was only read


def test_changed_source_never_silently_replaces_a_different_output(source, tmp_path):
    dst = tmp_path / "out"
    convert(source, dst)
    converted = tree_digest(dst)
    image = source.parent / "train/images" / PORTRAIT
    draw(image, 120, 200, {1: (10, 10, 60, 60)})  # same label file, other pixels, newer file
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))

    report = convert(source, dst)
    [problem] = report.problems
    assert problem.path == dst / "train/images/pre_IMG_42.npy" and "exists with other content" in problem.problem
    assert tree_digest(dst) == converted
    assert convert(source, dst, overwrite=True).converted == 1
    assert tree_digest(dst) != converted


def test_bad_inputs_are_reported_and_skipped_the_rest_converted(tmp_path, capsys):
    root = tmp_path / "yolo"
    (root / "train/images").mkdir(parents=True)
    broken = root / "train/images/broken.jpg"
    broken.write_bytes(b"not a jpeg")
    (root / "train/labels").mkdir()
    (root / "train/labels/broken.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    bad_labels = {
        "fields.png": ("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n", "label line 2 has 4 fields"),
        "class.png": ("2 0.5 0.5 0.2 0.2\n", "class id 2 outside 0-1"),
        "coords.png": ("0 1.5 0.5 0.2 0.2\n", "outside 0..1"),
        "word.png": ("0 0.5 abc 0.2 0.2\n", "'abc' is not a number"),
    }
    for name, (text, _) in bad_labels.items():
        add_image(root, "train", name, text)
    add_image(root, "train", "good.png")
    add_image(root, "train", "background.png", False)
    src, dst = write_yaml(root), tmp_path / "out"

    assert main(["convert", str(src), str(dst), "--size", str(SIZE), "--workers", "0"]) == 1
    err = capsys.readouterr().err
    assert f"skipped {broken}: cannot be read as an image" in err
    for name, (_, problem) in bad_labels.items():
        assert f"skipped {root / 'train/labels' / Path(name).with_suffix('.txt')}: " in err and problem in err
    report = convert(src, dst)  # the same again, through the Python API
    assert (report.up_to_date, len(report.problems), report.unlabelled) == (2, 5, 1)
    assert (dst / "train/labels/pre_background.txt").read_bytes() == b""
    assert sorted(p.name for p in (dst / "train/images").glob("*.npy")) == ["pre_background.npy", "pre_good.npy"]


def test_cli_exit_codes_and_one_line_errors(source, tmp_path, capsys):
    dst = tmp_path / "out"
    assert main(["convert", str(source), str(dst), "--size", str(SIZE), "--workers", "0"]) == 0
    assert "3 images, 3 converted, 0 already up to date, 0 skipped" in capsys.readouterr().out

    missing = tmp_path / "nowhere"
    assert main(["convert", str(missing), str(dst)]) == 2
    assert capsys.readouterr().err.strip() == f"smartcash-ultra convert: error: {missing}: does not exist"
    assert main(["convert", str(source), str(source.parent / "out")]) == 2  # inside the source
    assert "overlaps the source dataset folder" in capsys.readouterr().err
    assert main(["convert", str(source), str(dst), "--size", "100"]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert not (source.parent / "out").exists()


@pytest.mark.slow
def test_console_script_is_registered_and_runs_as_a_process(source, tmp_path):
    assert (
        '[project.scripts]\nsmartcash-ultra = "smartcash_ultra.tools.cli:main"\n'
        in (ROOT / "pyproject.toml").read_text()
    )
    script = Path(sys.executable).with_name("smartcash-ultra")  # what pip installed from [project.scripts]
    cmd = [str(script), "convert", str(source), str(tmp_path / "out"), "--size", "128"]
    done = subprocess.run([*cmd, "--workers", "0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 images, 3 converted" in done.stdout and (tmp_path / "out/train/images/pre_IMG_42.npy").is_file()


def test_worker_processes_write_the_same_bytes(source, tmp_path):
    convert(source, tmp_path / "serial", workers=0)
    report = convert(source, tmp_path / "parallel", workers=2)
    assert report.converted == 3
    assert tree_digest(tmp_path / "parallel") == tree_digest(tmp_path / "serial")


def test_bare_split_folders_use_val_as_valid_and_the_smartcash_classes(tmp_path):
    root = tmp_path / "bare"
    add_image(root, "train", "a.png", "16 0.5 0.5 0.2 0.2\n")  # l3_thread: only in the 17-class scheme
    add_image(root, "val", "b.png")
    report = convert(root, tmp_path / "out")
    assert report.ok and (tmp_path / "out/valid/images/pre_b.npy").is_file()
    data = yaml.safe_load(report.data_yaml.read_text())
    assert data["val"] == "valid/images" and data["names"] == SMARTCASH_NAMES
    add_image(root, "valid", "c.png")
    with pytest.raises(DatasetError, match="both valid/ and val/"):
        convert(root, tmp_path / "out2")


def test_roboflow_style_yaml_paths_resolve_like_ultralytics(tmp_path):
    root = tmp_path / "export"
    add_image(root, "train", "a.png")
    (root / "data.yaml").write_text("train: ../train/images\nval: ../train/images\nnc: 2\nnames: ['red', 'blue']\n")
    report = convert(root, tmp_path / "out")  # the folder: its data.yaml is found
    assert report.ok and report.converted == 2  # train and valid both list a.png
    assert yaml.safe_load(report.data_yaml.read_text())["names"] == NAMES


def test_exif_orientation_is_applied_as_ultralytics_reads_images(tmp_path):
    root = tmp_path / "yolo"
    (root / "train/images").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 90 wide x 60 tall, shown rotated: 60 wide x 90 tall
    Image.new("RGB", (90, 60), BACKGROUND).save(root / "train/images/phone.jpg", exif=exif)
    report = convert(write_yaml(root), tmp_path / "out")
    meta = json.loads((tmp_path / "out/train/images/pre_phone.meta.json").read_text())
    assert report.unlabelled == 1 and meta["original_shape"] == [90, 60]


def test_destination_data_yaml_of_another_dataset_is_kept(source, tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "data.yaml").write_text("names: [other]\n")
    with pytest.raises(DatasetError, match="exists with other content"):
        convert(source, dst)
    assert [p.name for p in dst.iterdir()] == ["data.yaml"]
    report = convert(source, dst, overwrite=True)
    assert report.ok and yaml.safe_load(report.data_yaml.read_text())["names"] == NAMES


def test_foreign_files_in_the_destination_are_reported_not_deleted(source, tmp_path):
    dst = tmp_path / "out"
    convert(source, dst)
    stray = dst / "train/images/old_run.npy"
    stray.write_bytes(b"x")
    report = convert(source, dst)
    assert report.foreign_files == [stray] and stray.exists()
    assert "1 file(s) in the destination's split folders were not written" in report.summary()


def test_a_destination_where_listed_images_live_is_refused_even_with_overwrite(tmp_path):
    images = tmp_path / "photos"  # the split is a list file elsewhere naming images here
    add_image(images, "train", "pre_a.png")  # a SmartCash name: its output name is its own, pre_a
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "train.txt").write_text(f"{images / 'train/images/pre_a.png'}\n")
    (lists / "data.yaml").write_text(yaml.safe_dump({"train": "train.txt", "val": "train.txt", "names": NAMES}))
    before = tree_digest(images)
    for dst in (images, images / "train/images", images / "train/labels"):
        with pytest.raises(DatasetError, match="overlaps the source dataset folder"):
            convert(lists / "data.yaml", dst, overwrite=True)
    assert tree_digest(images) == before  # the source label pre_a.txt was never rewritten


def symlinked_source(work: Path, real_yaml: bool) -> Path:
    """The layout of issue 18: ``real/`` a YOLO tree of 10 SmartCash-named images (their output names are their own),
    ``link -> real``, and ``lists/data.yaml`` whose split lists name the images as ``link/...`` (relative to the
    working folder, as Ultralytics reads them); ``real/data.yaml`` only with ``real_yaml``. Returns ``real``."""
    real = work / "real"
    for i in range(5):
        add_image(real, "train", f"pre_t{i}.png")
        add_image(real, "valid", f"pre_v{i}.png")
    if real_yaml:
        write_yaml(real)
    (work / "link").symlink_to("real", target_is_directory=True)
    (work / "lists").mkdir()
    for split in ("train", "valid"):
        listed = sorted(p.name for p in (real / split / "images").iterdir())
        (work / "lists" / f"{split}.txt").write_text("".join(f"link/{split}/images/{name}\n" for name in listed))
    (work / "lists/data.yaml").write_text(yaml.safe_dump({"train": "train.txt", "val": "valid.txt", "names": NAMES}))
    return real


def snapshot(root: Path) -> dict[str, str]:
    """Every entry below ``root``, symlinks not followed, hidden ones too: a file's SHA-256, a link's target, 'dir'."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            key = str(path.relative_to(root))
            if path.is_symlink():
                entries[key] = f"-> {os.readlink(path)}"
            elif path.is_dir():
                entries[key] = "dir"
            else:
                entries[key] = tree_digest(path.parent)[name]
    return entries


def assert_refused(err: str, dst: Path, source: Path) -> None:
    """The one error line names the resolved destination and a source path at or below ``source``."""
    [line] = err.strip().splitlines()
    prefix = f"smartcash-ultra convert: error: {dst}: overlaps the source dataset "
    assert line.startswith(prefix), line
    named = Path(line[len(prefix) :].split(" ", 1)[1].split(";")[0])
    assert named == source or source in named.parents, line


@pytest.mark.parametrize(
    ("src", "flags", "real_yaml"),
    [
        ("lists/data.yaml", ["--overwrite"], True),  # rewrote the 10 source labels and real/data.yaml
        ("lists/data.yaml", [], False),  # wrote .npy, .meta.json and data.yaml into real/
        ("real/data.yaml", ["--overwrite"], True),  # DST is the source itself
    ],
)
def test_a_destination_that_is_the_source_behind_a_symlink_is_refused_by_the_cli(tmp_path, src, flags, real_yaml):
    work = tmp_path.resolve()
    real = symlinked_source(work, real_yaml)
    before = snapshot(work)
    cmd = [sys.executable, "-m", "smartcash_ultra.tools.cli", "convert", src, "real", "--size", str(SIZE), *flags]
    done = subprocess.run([*cmd, "--workers", "0"], cwd=work, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr  # EXIT_ERROR: a usage error, nothing converted
    assert_refused(done.stderr, real, real)
    assert snapshot(work) == before  # no source byte changed, nothing new anywhere


def test_every_way_into_the_source_is_refused_even_with_overwrite(tmp_path, monkeypatch, capsys):
    work = tmp_path.resolve()
    real = symlinked_source(work, real_yaml=True)
    (work / "cfg").mkdir()  # a data YAML alone in its folder, naming its dataset by 'path'
    data = {"path": "../real", **yaml.safe_load((real / "data.yaml").read_text())}
    (work / "cfg/data.yaml").write_text(yaml.safe_dump(data))
    (work / "earlier").mkdir()  # an earlier conversion whose split folder links into the source
    (work / "earlier/train").symlink_to(real / "train", target_is_directory=True)
    monkeypatch.chdir(work)  # the lists name link/... relative to the working folder
    before = snapshot(work)
    cases = [
        ("lists/data.yaml", "link", real),  # DST named through the link
        ("lists/data.yaml", "link/train/labels", real / "train"),  # DST inside a source folder, through the link
        ("lists/data.yaml", "earlier", real / "train"),  # the written split folder resolves into the source
        ("cfg/data.yaml", "cfg", work / "cfg"),  # DST/data.yaml would replace the source data YAML
        ("real", ".", real),  # DST containing the source
    ]
    for src, dst, source in cases:
        assert main(["convert", src, dst, "--size", str(SIZE), "--workers", "0", "--overwrite"]) == 2, (src, dst)
        assert_refused(capsys.readouterr().err, (work / dst).resolve(), source)
    assert snapshot(work) == before


def test_a_non_empty_destination_is_refused_unless_it_is_an_earlier_conversion(source, tmp_path, capsys):
    busy = tmp_path / "busy"  # e.g. /tmp or a home folder
    (busy / "photos").mkdir(parents=True)
    (busy / "notes.txt").write_text("mine")
    before = tree_digest(busy)
    with pytest.raises(
        DatasetError, match=rf"{busy}: is not empty and holds no earlier conversion \(notes.txt, photos\)"
    ):
        convert(source, busy, overwrite=True)
    assert main(["convert", str(source), str(busy), "--size", str(SIZE), "--workers", "0"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert tree_digest(busy) == before and sorted(p.name for p in busy.iterdir()) == ["notes.txt", "photos"]

    dst = tmp_path / "out"  # an interrupted conversion: split folders, no data.yaml yet; it resumes
    convert(source, dst)
    (dst / "data.yaml").unlink()
    (dst / "valid/images/pre_frame_7.meta.json").unlink()
    (dst / ".hidden").write_text("")  # hidden files (.DS_Store, ...) do not count
    report = convert(source, dst)
    assert (report.converted, report.up_to_date) == (1, 2) and (dst / "data.yaml").is_file()


def test_a_missing_optional_test_split_is_a_warning_and_the_rest_converts(source, tmp_path):
    data = yaml.safe_load(source.read_text())
    source.write_text(yaml.safe_dump({**data, "test": "test/images"}))
    report = convert(source, tmp_path / "out")
    assert report.ok and report.converted == 3
    assert "'test' path" in report.summary() and "the optional split is skipped" in report.summary()
    assert "test" not in yaml.safe_load(report.data_yaml.read_text())


def test_polygon_labels_convert_to_their_boxes(tmp_path):
    root = tmp_path / "yolo"
    add_image(root, "train", "box.png")  # its true box (8, 8, 40, 30) in a 64 x 48 image
    x0, y0, x1, y1 = 8 / 64, 8 / 48, 40 / 64, 30 / 48
    add_image(root, "train", "polygon.png", f"0 {x0} {y0} {x1} {y0} {x1} {y1} {x0} {y1}\n")  # the same box's corners
    report = convert(write_yaml(root), tmp_path / "out")
    assert report.ok
    (box,), (polygon,) = (label_boxes(tmp_path / f"out/train/labels/pre_{n}.txt") for n in ("box", "polygon"))
    assert box[0] == polygon[0] and np.abs(box[1] - polygon[1]).max() < 1e-3
