"""The label cache of a SmartCash split, in a format that cannot run code: JSON and a float32 array, in one NPZ.

Ultralytics keeps its label cache as a pickle (``<split>/labels.cache``, read with ``np.load(allow_pickle=True)``), so
a dataset that brings such a file runs whatever code the pickle holds when training starts. The plugin never loads
that file. Its own cache, ``<split>/.smartcash_cache/labels.cache``, is an uncompressed NPZ (a zip archive) of two
plain arrays: ``meta``, the UTF-8 bytes of a JSON document (version, hash, counts, messages, and per image its path,
shape and number of label rows), and ``rows``, every label row ``cls xc yc w h`` as float32. It is read with
``np.load(allow_pickle=False)``, which refuses any object array, and ``json.loads``, which builds only plain data, so
even a hostile file there can do no more than fail to load (then every file is verified again and the cache
rewritten). A cache is used only when its hash matches the files (paths, sizes, modification times, and the label
files' contents), the verifier and the scan settings of this run, when its archive members are stored (a deflated
member could inflate to gigabytes before the hash is read), and when what it holds is what the verifier can write:
label rows it would pass, messages without control characters (a forged cache with the true hash cannot smuggle class
99, NaN or terminal escape sequences in).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smartcash_ultra.data.labels import COORD_TOLERANCE
from smartcash_ultra.utils.files import write_atomic

CACHE_DIRNAME = ".smartcash_cache"
"""The plugin's folder beside a split's ``images/`` and ``labels/``; hidden, so image discovery never reads it."""
MEMBERS = {"meta.npy", "rows.npy"}
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""Characters no message of the verifier holds (tab and newline aside): terminal escapes among them."""


@dataclass
class Scan:
    """A verified split: what training uses, what it left out or corrected, and why."""

    labels: list[dict]
    """Ultralytics label dicts (``im_file``, ``shape``, ``cls``, ``bboxes``, ...) of the items training uses."""
    results: tuple[int, int, int, int, int]
    """Label files found, missing, empty; items left out; items in all (Ultralytics' ``results``)."""
    problems: list[str] = field(default_factory=list)
    """``file: problem`` of each item left out."""
    fixes: list[str] = field(default_factory=list)
    """``file: what was fixed`` of each item used with a correction."""
    refusal: str | None = None
    """Why the whole split is refused (``names`` that most label files go beyond), or None."""
    hash: str = ""


def label_cache_path(label_file: str | Path) -> Path:
    """Return the label cache of the split a label file belongs to: ``<split>/.smartcash_cache/labels.cache``.

    Ultralytics' own pickle sits at ``<split>/labels.cache``; this one lives in the plugin's hidden folder.
    """
    labels_dir = Path(label_file).parent
    return labels_dir.parent / CACHE_DIRNAME / f"{labels_dir.name}.cache"


def label_dict(im_file: str, shape: tuple[int, int], lb: np.ndarray) -> dict:
    """Return the label dict Ultralytics' ``YOLODataset.result_to_label`` makes of one verified detection item."""
    return {
        "im_file": im_file,
        "shape": shape,
        "cls": lb[:, 0:1],
        "bboxes": lb[:, 1:],
        "segments": [],
        "keypoints": None,
        "normalized": True,
        "bbox_format": "xywh",
    }


def write_label_cache(path: Path, scan: Scan, version: str) -> None:
    """Write ``scan`` to ``path`` atomically (no pickle anywhere); raises OSError when the folder is not writable."""
    rows = [np.hstack((lb["cls"], lb["bboxes"])) for lb in scan.labels]
    meta = {
        "version": version,
        "hash": scan.hash,
        "results": list(scan.results),
        "problems": scan.problems,
        "fixes": scan.fixes,
        "refusal": scan.refusal,
        "files": [[lb["im_file"], *map(int, lb["shape"]), len(lb["cls"])] for lb in scan.labels],
    }
    buffer = io.BytesIO()
    np.savez(
        buffer,
        meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
        rows=np.concatenate(rows, dtype=np.float32) if rows else np.zeros((0, 5), np.float32),
        allow_pickle=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())


def read_label_cache(path: Path, version: str, expected_hash: str, num_cls: int | None) -> Scan | None:
    """Return the scan cached at ``path`` if it is a cache of this version for these files, else None.

    Nothing is unpickled and nothing is inflated: a file that is not such a cache, whatever it holds, reads as None.
    ``num_cls`` is the number of classes a row may use (None: any, ``single_cls``).
    """
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
        if {m.filename for m in members} != MEMBERS or any(m.compress_type != zipfile.ZIP_STORED for m in members):
            return None
        archive = np.load(path, allow_pickle=False)
    except Exception:  # missing, not a zip, truncated: verify again
        return None
    try:
        with archive:
            meta = json.loads(archive["meta"].tobytes())
            if meta["version"] != version or meta["hash"] != expected_hash:
                return None
            rows = archive["rows"]
        return _scan(meta, rows, num_cls)
    except Exception:  # a broken or foreign archive: verify again
        return None


def contents_hash(files: list[str]) -> str:
    """Return a hash of the files' bytes; what is no regular file (missing, a FIFO) counts by that alone, unread.

    For label files, which are tiny: a file edited in place with its size and modification time kept (a sync tool,
    ``touch -r``) changes no stat-based hash, and training read its old boxes while ``check`` showed the new ones.
    """
    h = hashlib.sha256()
    for f in files:
        try:
            regular = stat.S_ISREG(os.stat(f).st_mode)
            with open(f, "rb") if regular else contextlib.nullcontext() as handle:
                h.update(handle.read() if regular else b"\0not a file")
        except OSError:
            h.update(b"\0unreadable")
        h.update(b"\0")
    return h.hexdigest()


def _scan(meta: dict, rows: np.ndarray, num_cls: int | None) -> Scan:
    """Rebuild the label dicts from the cached JSON and rows, checking that they fit together and could be true."""
    if rows.dtype != np.float32 or rows.ndim != 2 or rows.shape[1] != 5:
        raise ValueError(f"rows {rows.dtype} {rows.shape}")
    cls, xywh = rows[:, 0], rows[:, 1:]
    if not (
        np.isfinite(rows).all()
        and ((cls >= 0) & (cls % 1 == 0) & (cls < (num_cls or np.inf))).all()
        and ((xywh >= 0) & (xywh <= 1 + COORD_TOLERANCE)).all()
        and (xywh[:, 2:] > 0).all()
    ):
        raise ValueError("rows the verifier never passes")
    labels, start = [], 0
    for im_file, h, w, n in meta["files"]:
        lb = rows[start : start + int(n)].copy()
        if not isinstance(im_file, str) or len(lb) != n:
            raise ValueError("files and rows disagree")
        start += int(n)
        labels.append(label_dict(im_file, (int(h), int(w)), lb))
    if start != len(rows):
        raise ValueError("files and rows disagree")
    nf, nm, ne, nc, n = (int(x) for x in meta["results"])
    problems, fixes, refusal = meta["problems"], meta["fixes"], meta["refusal"]
    if not all(isinstance(m, str) for m in problems + fixes) or not isinstance(refusal, (str, type(None))):
        raise ValueError("messages are not text")
    if any(CONTROL.search(m) for m in [*problems, *fixes, refusal or ""]):
        raise ValueError("control characters in messages")
    return Scan(labels, (nf, nm, ne, nc, n), problems, fixes, refusal, meta["hash"])
