"""The checkpoint files of a SmartCash run: whether one can be resumed or extended, where, and how they are written.

A run killed at any moment leaves a checkpoint it can continue from: every write of ``last.pt``/``best.pt`` goes
through a temp file and a rename (:class:`AtomicPath`), and Ultralytics' final stripping never rewrites ``last.pt``
(:func:`keep_last_whole`). Beside ``best.pt`` a copy is kept under a name that says what it is
(:func:`write_named_best`).
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import unwrap_model

from smartcash_ultra.nn.backbone import TimmBackbone
from smartcash_ultra.nn.safe_load import read_checkpoint, refusal
from smartcash_ultra.utils.files import atomic_target, write_atomic
from smartcash_ultra.utils.settings import model_settings


def resumable(checkpoint: Path, additional_epochs: int = 0) -> tuple[int, int]:
    """Return the epochs done and planned by the run of ``checkpoint``, or say why it cannot be continued.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the checkpoint: unreadable (torch's own errors name neither the file nor the problem),
            refused by a restricted load (``ULTRALYTICS_SAFE_LOAD=1``), stripped, or finished while no
            ``additional_epochs`` are asked for.
    """
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    try:
        ckpt = read_checkpoint(checkpoint)  # as YOLO() reads it: ULTRALYTICS_SAFE_LOAD=1 runs no pickled code
    except Exception as e:
        if refused := refusal(e):
            raise ValueError(f"{checkpoint}: {refused}") from None
        detail = "an empty file" if not checkpoint.stat().st_size else f"{type(e).__name__}: {first_sentence(e)}"
        raise ValueError(
            f"{checkpoint}: not a training checkpoint, it cannot be read ({detail}); a truncated or damaged copy?"
            + run_last(checkpoint, " Resume from {}.")
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("train_args"), dict):
        raise ValueError(f"{checkpoint}: not a training checkpoint of an Ultralytics run (no train_args)")
    done, planned = ckpt.get("epoch", -1) + 1, int(ckpt["train_args"].get("epochs") or 0)
    if not done or ckpt.get("optimizer") is None:
        raise ValueError(
            f"{checkpoint}: holds no optimizer state (a stripped checkpoint such as best.pt); resume from "
            + run_last(checkpoint, "{}", otherwise="the run's weights/last.pt")
        )
    if done >= planned and not additional_epochs:
        raise ValueError(
            f"{checkpoint}: the run finished its {planned} epochs; pass additional_epochs to extend it "
            f"(resume_training('{checkpoint}', additional_epochs=N))"
        )
    return done, planned


def run_folder(checkpoint: Path, save_dir: str | Path | None = None) -> Path:
    """Return the folder a resume of ``checkpoint`` writes into: the run that holds it, its resolved ``weights/..``.

    Ultralytics takes the ``save_dir`` recorded in the checkpoint, so a resume of a copied or moved run would write
    its checkpoints, ``args.yaml`` and ``results.csv`` rows into the original run. A run belongs to its folder: the
    checkpoint's own. Called before anything is written.

    Raises:
        ValueError: naming the checkpoint, when it lies in no ``weights/`` folder (no run to continue: its
            ``results.csv`` and state files are beside ``weights/``), or ``save_dir`` (given to the resume) names
            another folder.
        PermissionError: naming the folder, when the run folder or its ``weights/`` cannot be written.
    """
    weights = checkpoint.resolve().parent
    if weights.name != "weights":
        raise ValueError(
            f"{checkpoint}: not in a run's weights/ folder; a resume continues the run in the folder that holds "
            "weights/ (results.csv and the state files are there): resume from <run>/weights/last.pt"
        )
    run = weights.parent
    if save_dir and Path(save_dir).resolve() != run:
        raise ValueError(
            f"{checkpoint}: a resume continues the run in its own folder {run}, not in save_dir={save_dir}; to "
            "continue it elsewhere, copy the run folder there and resume the copy's weights/last.pt"
        )
    for folder in (run, weights):
        if not os.access(folder, os.W_OK):
            raise PermissionError(
                f"{folder}: read-only, and the resume of {checkpoint} writes its checkpoints and results there; make "
                "it writable, or copy the run folder to a writable place and resume the copy's weights/last.pt"
            )
    return run


def run_last(checkpoint: Path, template: str, otherwise: str = "") -> str:
    """``template`` filled with the last.pt beside ``checkpoint`` when there is one and it is another file."""
    last = checkpoint.with_name("last.pt")
    return template.format(last) if last.is_file() and not last.samefile(checkpoint) else otherwise


def first_sentence(exc: BaseException) -> str:
    """Return the first sentence of an exception's message (torch appends paragraphs of advice to load errors)."""
    return str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""


def backbone_name(model) -> str:
    """Name the backbone of a SmartCash model for file names: the timm model name, or ``cspdarknet_<scale>``."""
    model = unwrap_model(model)
    timm = next((m for m in model.model if isinstance(m, TimmBackbone)), None)
    if timm is not None:
        return timm.name
    return f"cspdarknet_{model.yaml.get('scale') or 'custom'}"


def named_best_path(trainer) -> Path | None:
    """Choose the file name of the named best checkpoint, or None when ``checkpoint_name`` is null.

    Fields: ``{backbone}``, ``{date}`` (YYYYMMDD when the name is chosen) and ``{run}`` (the run folder's name). A
    resumed run keeps the name its first session chose; a new run never takes a file that exists (``_2``, ``_3``...
    are added), so no earlier run's checkpoint is overwritten.
    """
    template = model_settings(trainer.model)["training"]["checkpoint_name"]
    if not template:
        return None
    fields = {"backbone": backbone_name(trainer.model), "run": Path(trainer.save_dir).name}
    try:
        name = template.format(date=time.strftime("%Y%m%d"), **fields)
        pattern = template.format(date="*", **{k: glob.escape(v) for k, v in fields.items()})
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(
            f"smartcash.training.checkpoint_name {template!r}: unknown field {e}; fields: {{backbone}} {{date}} {{run}}"
        ) from None
    wdir = Path(trainer.wdir)
    if trainer.resume:
        stem = Path(pattern).stem
        mine = [p for p in wdir.glob("*.pt") if fnmatch(p.stem, stem) or fnmatch(p.stem, f"{stem}_[0-9]*")]
        earlier = sorted(mine, key=lambda p: p.stat().st_mtime)
        if earlier:
            return earlier[-1]
    path, n = wdir / name, 2
    while path.exists():
        path, n = wdir / f"{Path(name).stem}_{n}.pt", n + 1
    return path


def write_named_best(trainer, path: Path | None) -> Path | None:
    """Copy the trainer's best.pt to ``path``, chosen by :func:`named_best_path` when None; return the path used."""
    path = path or named_best_path(trainer)
    if path is not None:
        write_atomic(path, trainer.best.read_bytes())
    return path


@contextmanager
def keep_last_whole(last: Path) -> Iterator[None]:
    """Put a ``strip_optimizer`` in place of Ultralytics' for its ``final_eval`` that never rewrites ``last``.

    For ``last`` it returns the checkpoint as it is (``final_eval`` reads its ``train_results`` for best.pt); any
    other file is stripped by Ultralytics' own function into a temp file that is then renamed over it, so a kill
    mid-strip leaves the previous best.pt. Scoped, so stock trainers strip as they always do.
    """
    import ultralytics.engine.trainer as engine

    stock = engine.strip_optimizer

    def strip_optimizer(f, updates=None):
        if Path(f) == Path(last):
            return read_checkpoint(f)
        with atomic_target(f) as tmp, _unsaid(f" saved as {tmp},"):  # the temp file is gone once renamed over f
            return stock(f, s=tmp, updates=updates)

    engine.strip_optimizer = strip_optimizer
    try:
        yield
    finally:
        engine.strip_optimizer = stock


@contextmanager
def _unsaid(text: str) -> Iterator[None]:
    """Leave ``text`` out of Ultralytics' log messages meanwhile."""

    def drop(record: logging.LogRecord) -> bool:
        record.msg = str(record.msg).replace(text, "")
        return True

    LOGGER.addFilter(drop)
    try:
        yield
    finally:
        LOGGER.removeFilter(drop)


class AtomicPath(type(Path())):
    """A path whose ``write_bytes`` writes a temp file beside it and renames it into place.

    A run killed mid-save then leaves the previous checkpoint intact instead of a truncated one.
    """

    def write_bytes(self, data: bytes) -> int:
        """Write ``data`` with :func:`smartcash_ultra.utils.files.write_atomic`; on failure the old file stays."""
        return write_atomic(self, data)
