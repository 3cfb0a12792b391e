"""The checkpoint files of a SmartCash run: whether one can be resumed or extended, where, and how they are written.

A run killed at any moment leaves a checkpoint it can continue from: every write of ``last.pt``/``best.pt`` goes
through a temp file and a rename (:class:`AtomicPath`), and Ultralytics' final stripping never rewrites ``last.pt``
(:func:`keep_last_whole`). Beside ``best.pt`` a copy is kept under a name that says what it is
(:func:`write_named_best`). A training holds its run folder while it runs (:func:`claim_run_folder`).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import socket
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import unwrap_model

from smartcash_ultra.nn.backbone import TimmBackbone
from smartcash_ultra.nn.safe_load import read_checkpoint, refusal
from smartcash_ultra.utils.errors import CheckpointError, RunFolderBusy, RunFolderError, UnreadableCheckpoint
from smartcash_ultra.utils.files import atomic_target, write_atomic
from smartcash_ultra.utils.settings import model_settings


def resumable(checkpoint: Path, additional_epochs: int = 0, epochs: int | None = None) -> tuple[int, int]:
    """Return the epochs done and planned by the run of ``checkpoint``, or say why it cannot be continued.

    ``epochs`` (the command line's ``yolo train resume epochs=N``) asks for N epochs in all: the epochs beyond the
    run's plan count as ``additional_epochs``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a ``ValueError``, naming the checkpoint: unreadable (torch's own errors name neither the
            file nor the problem), refused by a restricted load (``ULTRALYTICS_SAFE_LOAD=1``), stripped, or finished
            while no ``additional_epochs`` are asked for.
    """
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    try:
        ckpt = read_checkpoint(checkpoint)  # as YOLO() reads it: ULTRALYTICS_SAFE_LOAD=1 runs no pickled code
    except Exception as e:
        if refused := refusal(e):
            raise CheckpointError(f"{checkpoint}: {refused}") from None
        raise unreadable(checkpoint, e) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("train_args"), dict):
        raise CheckpointError(f"{checkpoint}: not a training checkpoint of an Ultralytics run (no train_args)")
    done, planned = ckpt.get("epoch", -1) + 1, int(ckpt["train_args"].get("epochs") or 0)
    if not done or ckpt.get("optimizer") is None:
        raise CheckpointError(
            f"{checkpoint}: holds no optimizer state (a stripped checkpoint such as best.pt); resume from "
            + run_last(checkpoint, "{}", otherwise="the run's weights/last.pt")
        )
    if epochs is not None:
        additional_epochs = max(epochs - max(planned, done), 0)
    if done >= planned and not additional_epochs:
        raise CheckpointError(
            f"{checkpoint}: the run finished its {planned} epochs; pass additional_epochs to extend it "
            f"(resume_training('{checkpoint}', additional_epochs=N); on the command line: yolo train resume "
            f"model={checkpoint} epochs=M, M > {planned})"
        )
    return done, planned


def unreadable(checkpoint: Path, exc: BaseException) -> UnreadableCheckpoint:
    """Return the error for a ``checkpoint`` file that cannot be read, naming it, why and what to use instead."""
    cause = exc.__cause__ or exc.__context__ or exc  # Ultralytics wraps torch's error in a TypeError of its own
    detail = "an empty file" if not checkpoint.stat().st_size else f"{type(cause).__name__}: {first_sentence(cause)}"
    return UnreadableCheckpoint(
        f"{checkpoint}: not a training checkpoint, it cannot be read ({detail}); a truncated or damaged copy?"
        + run_last(checkpoint, " Resume from {}.")
    )


def run_folder(checkpoint: Path, save_dir: str | Path | None = None) -> Path:
    """Return the folder a resume of ``checkpoint`` writes into: the run that holds it, its resolved ``weights/..``.

    Ultralytics takes the ``save_dir`` recorded in the checkpoint, so a resume of a copied or moved run would write
    its checkpoints, ``args.yaml`` and ``results.csv`` rows into the original run. A run belongs to its folder: the
    checkpoint's own. Called before anything is written.

    Raises:
        CheckpointError: a ``ValueError``, naming the checkpoint, when it lies in no ``weights/`` folder (no run to
            continue: its ``results.csv`` and state files are beside ``weights/``), or ``save_dir`` (given to the
            resume) names another folder.
        RunFolderError: a ``PermissionError``, naming the folder, when the run folder or its ``weights/`` cannot be
            written.
    """
    weights = checkpoint.resolve().parent
    if weights.name != "weights":
        raise CheckpointError(
            f"{checkpoint}: not in a run's weights/ folder; a resume continues the run in the folder that holds "
            "weights/ (results.csv and the state files are there): resume from <run>/weights/last.pt"
        )
    run = weights.parent
    if save_dir and Path(save_dir).resolve() != run:
        raise CheckpointError(
            f"{checkpoint}: a resume continues the run in its own folder {run}, not in save_dir={save_dir}; to "
            "continue it elsewhere, copy the run folder there and resume the copy's weights/last.pt"
        )
    for folder in (run, weights):
        if not os.access(folder, os.W_OK):
            raise RunFolderError(
                f"{folder}: read-only, and the resume of {checkpoint} writes its checkpoints and results there; make "
                "it writable, or copy the run folder to a writable place and resume the copy's weights/last.pt"
            )
    return run


def refuse_other_classes(checkpoint: Path, data: str | None) -> None:
    """Refuse a resume of ``checkpoint`` on a ``data=`` whose classes are not the run's; allow one whose are.

    Ultralytics lets a resume take another ``data=`` (a dataset that moved). With other classes the model's head no
    longer fits (a size-mismatch traceback) or, with as many classes, it goes on training under names that are not its
    own. Called before anything is written; the YAML is read as training reads it (``check_det_dataset``).

    Raises:
        CheckpointError: naming the checkpoint, both data YAMLs and the ways out.
    """
    ckpt = read_checkpoint(checkpoint)
    recorded = ckpt["train_args"].get("data")
    if not data or str(data) == str(recorded):
        return
    from ultralytics.data.utils import check_det_dataset

    model = ckpt.get("ema") or ckpt.get("model")
    trained, names = dict(getattr(model, "names", None) or {}), dict(check_det_dataset(str(data))["names"])
    if names == trained:
        LOGGER.info(f"Resuming on data={data}, the same classes as the run's {recorded}")
        return
    shown = f"{len(names)} classes" if len(names) != len(trained) else "other class names"
    raise CheckpointError(
        f"{checkpoint}: the run trained on {recorded} ({len(trained)} classes); data={data} has {shown}. A resume "
        "continues a run on its own classes: resume without data= (or with a data YAML of the same classes, for a "
        f"dataset that moved), or start a new run from these weights: yolo train model={checkpoint} data={data}"
    )


LOCK_NAME = "train.lock"
"""The file in a run folder that says which training holds it: ``{"pid", "host", "token", "started"}`` (JSON)."""
_HELD: dict[Path, list] = {}
"""Lock file -> [token, trainers holding it], for the run folders this process holds (its trainers share a claim)."""


def claim_run_folder(folder: Path, holder: object) -> weakref.finalize:
    """Claim ``folder`` for the training ``holder`` runs; return its release, called at the latest when it is collected.

    Two trainings writing into one folder (``exist_ok=True``, a resume beside a live run) interleave their
    ``results.csv`` rows and overwrite each other's checkpoints. The claim is ``train.lock`` in the folder, made by a
    hard link of a complete temp file (atomic: of two starts, one gets it; :func:`_create`). A lock whose process
    has ended (``kill -9``, a crash, a power cut) is stale and taken over with a warning. The trainers of one process
    share its claim (the lock goes with the last of them), and so does rank 0 of a DDP run, whose launching process
    holds it (the parent of ``torch.distributed.run``, the parent of rank 0). The release is idempotent.

    Raises:
        RunFolderBusy: naming the folder, the owner's pid and host, and the ways out, when a live training holds it.
    """
    lock = folder.resolve() / LOCK_NAME
    if lock not in _HELD:
        token = _take(folder, lock)
        if token is None:  # a DDP worker of the training that holds it
            return weakref.finalize(holder, lambda: None)
        _HELD[lock] = [token, 0]
    _HELD[lock][1] += 1
    return weakref.finalize(holder, _release, lock)


def _take(folder: Path, lock: Path) -> str | None:
    """Write ``lock`` for this process and return its token; None when an ancestor of this process holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "token": uuid.uuid4().hex}
    mine["started"] = time.strftime("%Y-%m-%d %H:%M:%S")
    tmp = lock.with_name(f".{LOCK_NAME}.{mine['token']}.tmp")
    tmp.write_text(json.dumps(mine))
    try:
        while True:
            try:
                _create(tmp, lock)
                return mine["token"]
            except FileExistsError:
                owner = _read_lock(lock)
                if owner is None:  # removed meanwhile: try again
                    continue
                if _is_live(owner):
                    if owner["pid"] in _ancestors() and owner["host"] == mine["host"]:
                        return None
                    raise RunFolderBusy(
                        f"{folder}: another training holds this run folder (pid {owner['pid']} on "
                        f"{owner['host']}, since {owner.get('started', '?')}; {lock}); wait for it to end or stop it, "
                        "or train into another folder (name=..., or exist_ok=False for a new one). If no training "
                        f"runs there, delete {lock}"
                    ) from None
                LOGGER.warning(
                    f"{lock}: taking over the run folder from pid {owner['pid']} on {owner['host']}, which no longer "
                    "runs (killed or crashed)"
                )
                os.replace(tmp, lock)
                if (_read_lock(lock) or {}).get("token") == mine["token"]:  # not replaced by another taker
                    return mine["token"]
                tmp.write_text(json.dumps(mine))
    finally:
        tmp.unlink(missing_ok=True)


def _create(tmp: Path, lock: Path) -> None:
    """Make ``lock`` hold ``tmp``'s content if there is no ``lock`` yet (else ``FileExistsError``), at once if it can.

    A hard link is atomic; a file system without them (some FUSE mounts, such as Google Drive's) gets an exclusive
    create, which a reader may meanwhile see empty (an unknown owner, so it would be taken over: a narrow window).
    """
    try:
        os.link(tmp, lock)
    except FileExistsError:
        raise
    except OSError:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(tmp.read_text())


def _release(lock: Path) -> None:
    """Let go of one trainer's share of ``lock``; the last one removes the file, if it is still this process's."""
    held = _HELD.get(lock)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _HELD[lock]
        if (_read_lock(lock) or {}).get("token") == held[0]:
            lock.unlink(missing_ok=True)


def _read_lock(lock: Path) -> dict | None:
    """Return a lock's owner, None when there is no lock; an unreadable lock has an unknown, dead owner."""
    try:
        owner = json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": -1, "host": "?"}
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else {"pid": -1, "host": "?"}


def _is_live(owner: dict) -> bool:
    """Tell whether the lock's process runs: on this host, whether its pid is a process (not this one's earlier life).

    On another host (a shared file system) nothing here can tell: a lock from there counts as live.
    """
    if owner.get("host") != socket.gethostname():
        return owner.get("host") != "?"
    pid = owner["pid"]
    if pid <= 0 or pid == os.getpid():  # this process holds none it has not recorded: an earlier life's, pid reused
        return False
    if os.name == "nt":  # os.kill(pid, 0) would end the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _ancestors() -> set[int]:
    """Return the pids of this process's parents up the tree (Linux ``/proc``; elsewhere the parent only)."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return pids | {os.getppid()}
        pids.add(pid)
    return pids


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
