"""Cost of the disk-cache key: fingerprinting a source (size, mtime, 64 KiB of sampled content) against what it guards.

``cache=disk`` names each cache file after its source's fingerprint (``smartcash_ultra.utils.files.file_fingerprint``),
computed once per image and run, when the dataset is built. This times it per file on 640x640 float32 SmartCash
arrays (4.9 MB), warm page cache, against a ``stat`` (what an mtime-only key costs), hashing the whole file (the
exact alternative), converting the array (what the cache saves each epoch) and loading its uint8 cache file.

    python bench/cache_key_cost.py            # 200 arrays, median of 5 passes; --files N
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import ROOT, machine, write_json  # sets the offline guards before Ultralytics is imported

from smartcash_ultra.data.arrays import load_bgr_uint8
from smartcash_ultra.utils.files import file_fingerprint


def whole_file_sha1(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha1(f.read(), usedforsecurity=False).hexdigest()


def per_file_us(fn, files: list[Path], passes: int) -> float:
    """Median over passes of the mean microseconds per file (one untimed pass first)."""
    times = []
    for k in range(passes + 1):
        start = time.perf_counter()
        for f in files:
            fn(f)
        if k:
            times.append((time.perf_counter() - start) / len(files) * 1e6)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/cache_key_cost.json")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp, f"pre_{i}.npy") for i in range(args.files)]
        for f in files:
            np.save(f, rng.random((640, 640, 3), dtype=np.float32))
        cache = Path(tmp, "cache.npy")
        np.save(cache, np.zeros((640, 640, 3), np.uint8))
        figures = {
            "stat (mtime-only key)": per_file_us(os.stat, files, args.passes),
            "file_fingerprint (the key)": per_file_us(file_fingerprint, files, args.passes),
            "sha1 of the whole file": per_file_us(whole_file_sha1, files, args.passes),
            "array to uint8 BGR (what the cache saves)": per_file_us(load_bgr_uint8, files, args.passes),
            "np.load of the uint8 cache file": per_file_us(lambda _: np.load(cache), files, args.passes),
        }
    for name, us in figures.items():
        print(f"{name:45s} {us:9.1f} us/file")
    write_json(args.out, {"us_per_file": figures, "files": args.files, "passes": args.passes, "machine": machine()})


if __name__ == "__main__":
    main()
