"""Image-loading speed of SmartCash ``.npy`` arrays vs. stock Ultralytics on the same images as JPEG, in one run.

A 640×640 SmartCash tree (float32 RGB arrays, 4.9 MB each) is generated, and the same images are saved as JPEG
(quality 95) for stock ``YOLODataset``. Every configuration runs in its own fresh interpreter (so peak RSS figures do
not contaminate each other), after one untimed read of all its files (warm page cache) and one untimed pass:

- single-image loads, ``load_image(i)`` over the whole split, median of ``--repeats`` passes: SmartCash arrays at
  imgsz 640 (no resize) and 320 (resize), the same arrays as float16, stock JPEG at the same sizes, both datasets
  with ``cache=ram`` (after caching), and stock JPEG with ``cache=disk`` (SmartCash arrays take no disk cache: with
  ``cache=disk`` they are read where they are, so they load as in the uncached row);
- the raw read limit: ``Path.read_bytes()`` of each ``.npy`` file, i.e. copying the file's bytes from the warm page
  cache into a new buffer, the least work any loader that reads the whole file does; and a naive array loader
  (``np.load`` + float arithmetic + ``cvtColor``) for reference. Every single-image child also times this raw read
  of the ``.npy`` sources in passes alternating with its own, so "time vs raw read" compares figures taken in the
  same process seconds apart, whatever else the machine is doing;
- the training dataloader as Ultralytics builds it (``build_dataloader``, augmentation on: mosaic, perspective, HSV,
  flips; batch 16, imgsz 640), workers 0 and 2: images/s over whole epochs after one warm-up epoch.

Peak RSS is the child's ``VmHWM`` (and, with workers, the largest worker's ``ru_maxrss``); ``+MB`` is the rise over
the same process after its imports. Configurations run round-robin ``--rounds`` times; figures are medians.

    python bench/loader_speed.py            # 100 originals + 100 aug_* = 200 arrays, 3 rounds
    python bench/loader_speed.py --quick    # smoke run, under a minute
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

ROOT = Path(__file__).resolve().parents[1]

SINGLE = {  # name -> (tree, imgsz, cache, what is timed)
    "raw read .npy": ("npy", 640, None, "raw"),
    "naive np.load + float math": ("npy", 640, None, "naive"),
    "SmartCash .npy @640": ("npy", 640, None, "load_image"),
    "SmartCash .npy float16 @640": ("npy16", 640, None, "load_image"),
    "stock JPEG @640": ("jpeg", 640, None, "load_image"),
    "SmartCash .npy @320 (resize)": ("npy", 320, None, "load_image"),
    "stock JPEG @320 (resize)": ("jpeg", 320, None, "load_image"),
    "SmartCash .npy cache=ram": ("npy", 640, "ram", "load_image"),
    "stock JPEG cache=ram": ("jpeg", 640, "ram", "load_image"),
    "stock JPEG cache=disk": ("jpeg_disk", 640, "disk", "load_image"),
}
LOADER = {  # name -> (tree, workers)
    "SmartCash .npy dataloader, workers 0": ("npy", 0),
    "stock JPEG dataloader, workers 0": ("jpeg", 0),
    "SmartCash .npy dataloader, workers 2": ("npy", 2),
    "stock JPEG dataloader, workers 2": ("jpeg", 2),
}
DEFAULT_OUT = "bench/results/loader_speed.json"


# Child side: one configuration in a fresh interpreter ----------------------------------------------------------------
def vm_hwm_mb() -> float:
    """Return this process's peak resident set size (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warm_page_cache(files: list[str]) -> None:
    """Read every file once so all configurations start from a warm page cache."""
    for f in files:
        Path(f).read_bytes()


def build(tree: Path, imgsz: int, cache: str | None, mode: str, batch: int = 16):
    """Build the SmartCash dataset for an array tree, stock ``YOLODataset`` for a JPEG tree, as the trainers do."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    from smartcash_ultra.data.dataset import build_smartcash_dataset

    data = check_det_dataset(str(tree / "data.yaml"))
    cfg = get_cfg(overrides={"imgsz": imgsz, "task": "detect", "cache": cache or False})
    builder = build_smartcash_dataset if tree.name.startswith("npy") else build_yolo_dataset
    return builder(cfg, data["train"], batch, data, mode=mode)


def naive_load(path: str):
    """Load an array the careless way the issue warns about: full read, float arithmetic copies, then the swap."""
    import cv2
    import numpy as np

    return cv2.cvtColor((np.load(path) * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)


def child_single(cfg: dict) -> dict:
    """Time ``load_image`` (or the raw/naive read) over the split, passes alternating with raw reads of the arrays."""
    tree, imgsz, cache, what = Path(cfg["tree"]), cfg["imgsz"], cfg["cache"], cfg["what"]
    base = vm_hwm_mb()
    ds = build(tree, imgsz, cache, mode="val")
    files, sources = list(ds.im_files), cfg["sources"]
    warm_page_cache(files + sources)
    if what == "raw":
        step = lambda i: Path(files[i]).read_bytes()  # noqa: E731
    elif what == "naive":
        step = lambda i: naive_load(files[i])  # noqa: E731
    else:
        step = ds.load_image
    times, raw_times = [], []
    for _ in range(cfg["repeats"] + 1):  # the first pair of passes is untimed warm-up
        t = time.perf_counter()
        for f in sources:
            Path(f).read_bytes()
        t1 = time.perf_counter()
        for i in range(len(files)):
            step(i)
        raw_times.append(t1 - t)
        times.append(time.perf_counter() - t1)
    return {
        "images": len(files),
        "ms_per_image": statistics.median(times[1:]) / len(files) * 1e3,
        "raw_ms_per_image": statistics.median(raw_times[1:]) / len(sources) * 1e3,
        "peak_rss_mb": vm_hwm_mb(),
        "base_rss_mb": base,
    }


def child_loader(cfg: dict) -> dict:
    """Run the augmented training dataloader for a warm-up epoch and ``epochs`` timed epochs."""
    import torch
    from ultralytics.data import build_dataloader

    torch.manual_seed(0)
    tree, workers, batch = Path(cfg["tree"]), cfg["workers"], cfg["batch"]
    base = vm_hwm_mb()
    ds = build(tree, 640, None, mode="train", batch=batch)
    warm_page_cache(ds.im_files)
    loader = build_dataloader(ds, batch=batch, workers=workers, shuffle=True, rank=-1, device="cpu")
    times = []
    for _ in range(cfg["epochs"] + 1):  # the first epoch (worker start, empty mosaic buffer) is untimed
        t = time.perf_counter()
        n = sum(len(b["img"]) for b in loader)
        times.append(time.perf_counter() - t)
    loader.close()  # joins the workers, so their peak RSS is in RUSAGE_CHILDREN
    ms = statistics.median(times[1:]) / n * 1e3
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if loader.num_workers else None
    return {"images": n, "ms_per_image": ms, "peak_rss_mb": vm_hwm_mb(), "base_rss_mb": base, "worker_rss_mb": worker}


# Parent side: data, round-robin children, report ---------------------------------------------------------------------
def prepare(workdir: Path, n_train: int) -> dict[str, Path]:
    """Generate the 640 px array tree, a float16 copy, and its JPEG twin (twice: stock cache=disk pollutes one)."""
    import cv2
    import numpy as np

    from smartcash_ultra.tools.sample_data import generate_sample_dataset

    shutil.rmtree(workdir / "npy", ignore_errors=True)  # a tree of another size would leave extra arrays behind
    npy_yaml = generate_sample_dataset(
        workdir / "npy", n_train=n_train, n_valid=4, n_test=0, imgsz=640, aug_per_image=1, seed=0, overwrite=True
    )
    trees = {"npy": npy_yaml.parent}
    for name in ("npy16", "jpeg", "jpeg_disk"):  # stock cache=disk writes <image>.npy beside each JPEG, which stock
        dst = workdir / name  # no-cache loading would then read instead of decoding: keep it in its own tree
        shutil.rmtree(dst, ignore_errors=True)
        for npy in sorted(npy_yaml.parent.glob("*/images/*.npy")):
            split = npy.parts[-3]
            (dst / split / "images").mkdir(parents=True, exist_ok=True)
            (dst / split / "labels").mkdir(parents=True, exist_ok=True)
            if name == "npy16":
                np.save(dst / split / "images" / npy.name, np.load(npy).astype(np.float16))
            else:
                bgr = cv2.cvtColor((np.load(npy) * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
                cv2.imwrite(str(dst / split / "images" / f"{npy.stem}.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
            label = npy_yaml.parent / split / "labels" / f"{npy.stem}.txt"
            shutil.copyfile(label, dst / split / "labels" / label.name)
        (dst / "data.yaml").write_text(npy_yaml.read_text())
        trees[name] = dst
    return trees


def run_child(kind: str, cfg: dict) -> dict:
    """Run one configuration in a fresh interpreter and return its figures."""
    out = Path(cfg["result"])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, json.dumps(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"{kind} {cfg} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    out.unlink()
    return result


def cpu_model() -> str:
    """Return the CPU model name as ``lscpu`` shows it."""
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> str:
    """Return the 1/5/15-minute load averages, as ``uptime`` shows them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def summarise(runs: list[dict]) -> dict:
    """Median of every figure over the rounds; the time vs the raw read is the median of each round's own ratio."""
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0] if runs[0][k] is not None}
    out["ms_per_image_rounds"] = [round(r["ms_per_image"], 4) for r in runs]
    if "raw_ms_per_image" in runs[0]:
        out["time_vs_raw_read"] = statistics.median(r["ms_per_image"] / r["raw_ms_per_image"] for r in runs)
    return out


def table(results: dict[str, dict], jpeg_ref: str) -> list[str]:
    """Markdown rows: ms/image, images/s, speed vs JPEG (>1 is faster), time vs the paired raw read, peak RSS."""
    lines = [
        "| configuration | ms/image | images/s | speed vs JPEG | time vs raw read | peak RSS MB (+ over imports) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        ms = r["ms_per_image"]
        vs_jpeg = results[jpeg_ref]["ms_per_image"] / ms
        vs_raw = f"{r['time_vs_raw_read']:.2f}×" if "time_vs_raw_read" in r else "–"
        rss = f"{r['peak_rss_mb']:.0f} (+{r['peak_rss_mb'] - r['base_rss_mb']:.0f})"
        if r.get("worker_rss_mb"):
            rss += f"; workers ≤ {r['worker_rss_mb']:.0f}"
        lines.append(f"| {name} | {ms:.3f} | {1e3 / ms:.0f} | {vs_jpeg:.2f}× | {vs_raw} | {rss} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 16+16 arrays, 1 round, 2 repeats, 1 epoch")
    p.add_argument("--n-train", type=int, default=100, help="originals in train; each also gets one aug_* variant")
    p.add_argument("--rounds", type=int, default=3, help="round-robin passes over all configurations")
    p.add_argument("--repeats", type=int, default=5, help="timed passes over the split per single-image child")
    p.add_argument("--epochs", type=int, default=2, help="timed dataloader epochs per child (after one warm-up)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workdir", type=Path, default=ROOT / "runs/bench_loader")
    p.add_argument("--out", type=Path, help="JSON file (default bench/results/loader_speed.json, --quick: in workdir)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        import ultralytics.data  # noqa: F401  (imports first, so base_rss_mb is the interpreter with its libraries)

        import smartcash_ultra.data.dataset  # noqa: F401

        kind, cfg = args.child[0], json.loads(args.child[1])
        result = (child_single if kind == "single" else child_loader)(cfg)
        Path(cfg["result"]).write_text(json.dumps(result))
        return
    if args.quick:
        args.n_train, args.rounds, args.repeats, args.epochs = 16, 1, 2, 1
    args.out = args.out or (args.workdir / "loader_speed_quick.json" if args.quick else ROOT / DEFAULT_OUT)

    start, load_before = time.perf_counter(), load_average()
    trees = prepare(args.workdir, args.n_train)
    result_file = str(args.workdir / "child_result.json")
    sources = sorted(str(f) for f in (trees["npy"] / "train/images").glob("*.npy"))
    jobs = [
        ("single", name, dict(zip(("tree", "imgsz", "cache", "what"), spec, strict=True)))
        for name, spec in SINGLE.items()
    ]
    jobs += [("loader", name, {"tree": spec[0], "workers": spec[1]}) for name, spec in LOADER.items()]
    runs: dict[str, list[dict]] = {name: [] for _, name, _ in jobs}
    for r in range(args.rounds):
        order = jobs[r % len(jobs) :] + jobs[: r % len(jobs)]  # rotate, so no configuration always runs first
        for kind, name, spec in order:
            cfg = {**spec, "tree": str(trees[spec["tree"]]), "result": result_file, "sources": sources}
            cfg.update(repeats=args.repeats, epochs=args.epochs, batch=args.batch)
            runs[name].append(run_child(kind, cfg))
            print(f"round {r + 1}/{args.rounds}: {name}: {runs[name][-1]['ms_per_image']:.3f} ms/image", flush=True)
    single = {name: summarise(runs[name]) for name in SINGLE}
    loader = {name: summarise(runs[name]) for name in LOADER}

    lines = ["### Single-image loads (`load_image`)", "", *table(single, "stock JPEG @640"), ""]
    lines += ["### Training dataloader (augmentation on, batch 16, imgsz 640)", ""]
    lines += table({k: v for k, v in loader.items() if "workers 0" in k}, "stock JPEG dataloader, workers 0")
    lines += table({k: v for k, v in loader.items() if "workers 2" in k}, "stock JPEG dataloader, workers 2")[2:]
    npy, jpeg = (single[k]["ms_per_image"] for k in ("SmartCash .npy @640", "stock JPEG @640"))
    targets = {
        "npy_vs_jpeg_speedup (target >= 2)": jpeg / npy,
        "npy_vs_raw_time (target <= 2)": single["SmartCash .npy @640"]["time_vs_raw_read"],
        **{
            f"dataloader_workers_{w}_npy_vs_jpeg_speedup (target >= 1)": loader[f"stock JPEG dataloader, workers {w}"][
                "ms_per_image"
            ]
            / loader[f"SmartCash .npy dataloader, workers {w}"]["ms_per_image"]
            for w in (0, 2)
        },
    }
    lines += ["", *(f"- {k}: {v:.2f}" for k, v in targets.items())]
    wall, load_after = time.perf_counter() - start, load_average()
    print("\n" + "\n".join(lines))
    print(f"\nload average before/after: {load_before} / {load_after}; wall {wall:.0f} s")

    import cv2
    import numpy as np
    import torch
    import ultralytics

    document = {
        "command": "python bench/loader_speed.py" + (" --quick" if args.quick else ""),
        "settings": {k: v for k, v in vars(args).items() if k in {"n_train", "rounds", "repeats", "epochs", "batch"}},
        "images": single["SmartCash .npy @640"]["images"],
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs",
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "torch": torch.__version__,
            "ultralytics": ultralytics.__version__,
        },
        "load_average_before_after": [load_before, load_after],
        "date": time.strftime("%Y-%m-%d"),
        "wall_s": round(wall, 1),
        "single_image": single,
        "dataloader": loader,
        "targets": targets,
        "markdown": lines,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
