"""``SmartCashTrainer``: Ultralytics' ``DetectionTrainer`` with the SmartCash model, dataset and validator.

``SmartCashDataTrainer`` is the data path alone, for stock models trained on SmartCash arrays.

Only what differs is here; the loop, loss, assigner, augmentation, EMA, schedulers, plots and loggers are
Ultralytics'. The settings merge is in :mod:`smartcash_ultra.utils.settings`, the resume checks and checkpoint files
in :mod:`smartcash_ultra.engine.checkpoints`. The ``(cfg, overrides, _callbacks)`` signature is kept, as
Ultralytics' DDP launcher rebuilds the trainer with it in every worker.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from copy import copy
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from torch import optim
from ultralytics.cfg import get_save_dir
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils import DEFAULT_CFG, LOGGER, RANK
from ultralytics.utils.torch_utils import unwrap_model

from smartcash_ultra.callbacks import RunState, UICallbacks, add_smartcash_callbacks, has_smartcash_callbacks
from smartcash_ultra.callbacks.epoch_record import trim_results
from smartcash_ultra.data.dataset import build_smartcash_dataset
from smartcash_ultra.engine.checkpoints import (
    AtomicPath,
    claim_run_folder,
    keep_last_whole,
    refuse_other_classes,
    resumable,
    run_folder,
    write_named_best,
)
from smartcash_ultra.engine.declarations import record
from smartcash_ultra.engine.precision import offline_check_amp, settle
from smartcash_ultra.engine.schedules import Schedule
from smartcash_ultra.engine.stopping import Signals, stop_on_signals, stopped_by
from smartcash_ultra.engine.validator import SmartCashValidator
from smartcash_ultra.nn.model import SmartCashDetectionModel
from smartcash_ultra.nn.safe_load import read_checkpoint
from smartcash_ultra.utils.errors import ArgumentError, DataYamlError
from smartcash_ultra.utils.settings import SECTION, load_train_cfg, model_settings, with_smartcash_defaults


@dataclass(frozen=True)
class TrainResult:
    """What ``SmartCashTrainer.train()`` returns: final validation metrics of the best weights and where things are."""

    metrics: dict[str, float]
    best: Path | None
    last: Path | None
    save_dir: Path


class SmartCashDataTrainer(DetectionTrainer):
    """Ultralytics' ``DetectionTrainer`` on SmartCash data: any model, a stock checkpoint too, trains on ``.npy`` trees.

    Only the data path differs: :class:`SmartCashDataset` (arrays read as the data YAML declares them) and the
    validator over it. The declarations are recorded on the model, so its checkpoints and exports predict on arrays
    as they trained. The model, its settings and everything else stay Ultralytics' own.
    """

    def __init__(self, cfg=DEFAULT_CFG, overrides: dict[str, Any] | None = None, _callbacks: dict | None = None):
        """Initialise Ultralytics' trainer; a failure after the run folder was claimed releases it."""
        self.release_run_folder: Callable[[], Any] = lambda: None  # set when the run folder is claimed
        try:
            super().__init__(cfg, overrides, _callbacks)
        except BaseException:
            self.release_run_folder()
            raise

    def check_resume(self, overrides):
        """Take the checkpoint's arguments as Ultralytics does, continue in the run folder that holds it, claim it.

        Ultralytics keeps the ``save_dir`` recorded in the checkpoint, and ``BaseTrainer.__init__`` then makes that
        folder, writes its ``args.yaml`` and appends to its ``results.csv``: a copied or moved run would write into
        the original. Here it becomes the checkpoint's own ``weights/..`` (:func:`run_folder`, which also refuses a
        checkpoint outside a ``weights/`` folder and a read-only run), and a ``data=`` of other classes is refused
        (:func:`refuse_other_classes`). Then, new run or resume, the folder is claimed
        for this training (:func:`claim_run_folder`, refused while another live training holds it), before
        ``BaseTrainer.__init__`` writes ``args.yaml`` or deletes an old ``results.csv`` there. DDP: the launching
        process claims it; its workers share the claim.
        """
        super().check_resume(overrides)
        if self.resume:
            self.args.save_dir = str(run_folder(Path(self.args.resume), overrides.get("save_dir")))
            refuse_other_classes(Path(self.args.resume), overrides.get("data"))
        if RANK in {-1, 0}:
            self.args.save_dir = str(get_save_dir(self.args))  # what BaseTrainer.__init__ takes next
            self.release_run_folder = claim_run_folder(Path(self.args.save_dir), self)  # every ending calls it

    def get_dataset(self):
        """Check the data YAML as Ultralytics does; its refusal is the user's to fix, so it is a known error.

        Ultralytics wraps whatever its check raised in a ``RuntimeError`` that names the YAML and the cause; as a
        :class:`DataYamlError` the ``yolo`` command prints it as one message, not a traceback.
        """
        try:
            return super().get_dataset()
        except RuntimeError as e:
            raise DataYamlError(str(e)) from None

    def train(self):
        """Train as Ultralytics does; the run folder is released however the training ends."""
        try:
            return super().train()
        finally:
            self.release_run_folder()

    def set_model_attributes(self):
        """Attach class count, names and arguments as Ultralytics does, and the data declarations (before the EMA)."""
        super().set_model_attributes()
        record(self.model, self.data)

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None):
        """Build a :class:`SmartCashDataset` (training, and the validation loader during training)."""
        gs = max(int(unwrap_model(self.model).stride.max()), 32)
        return build_smartcash_dataset(self.args, img_path, batch, self.data, mode=mode, rect=mode == "val", stride=gs)

    def get_validator(self) -> SmartCashValidator:
        """Return the SmartCash validator; class names are set now so per-class metric columns exist from epoch 1."""
        validator = SmartCashValidator(
            self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks
        )
        validator.metrics.names = self.data["names"]
        return validator


class SmartCashTrainer(SmartCashDataTrainer):
    """Train a SmartCash detector: ``SmartCashTrainer("cfg/smartcash_effb4.yaml", overrides={"epochs": 3}).train()``.

    ``cfg`` is a training cfg YAML (path or shipped name) or dict (Ultralytics keys, as for ``yolo train cfg=...``);
    ``overrides`` win over it, and both over the SmartCash training settings (``cfg/smartcash_defaults.yaml``). The
    model must be a SmartCash model YAML (any Ultralytics model YAML with a ``smartcash:`` section).
    """

    def __init__(
        self,
        cfg: str | Path | dict | SimpleNamespace = DEFAULT_CFG,
        overrides: dict[str, Any] | None = None,
        _callbacks: dict | None = None,
        **ui,
    ):
        """Merge the cfg YAML/dict under ``overrides``, initialise the Ultralytics trainer, add the SmartCash callbacks.

        The callbacks' settings come from the model YAML's ``smartcash.callbacks`` section (see
        :mod:`smartcash_ultra.callbacks`); the UI callbacks passed here (:class:`UICallbacks`, by name) receive their
        events.
        """
        UICallbacks(**ui)  # an unknown keyword is a TypeError naming it, before Ultralytics' setup
        args = with_smartcash_defaults({**load_train_cfg(cfg), **(overrides or {})})
        pretrained = args.get("pretrained")  # refused before anything is made (a run folder) or built
        if isinstance(pretrained, (str, Path)) and Path(pretrained).suffix.lower() in {".safetensors", ".pth", ".bin"}:
            raise ArgumentError(
                f"pretrained={pretrained}: pretrained= takes an Ultralytics checkpoint (.pt) whose matching layers are "
                "transferred (e.g. yolov5su.pt for CSPDarknet); timm backbone weights go in the model YAML: "
                "smartcash.backbone_weights: <file> (smartcash-ultra copy-cfg smartcash_effb4_yolov5.yaml writes a "
                "copy to edit)"
            )
        super().__init__(DEFAULT_CFG, args, _callbacks)
        self.wdir = AtomicPath(self.wdir)  # every checkpoint write_bytes() below goes through a temp file + rename
        self.last, self.best = self.wdir / "last.pt", self.wdir / "best.pt"
        if not has_smartcash_callbacks(self.callbacks):  # a DDP worker or YOLO.add_callback user brought them
            add_smartcash_callbacks(self, **ui)
        elif any(fn is not None for fn in ui.values()):
            raise ValueError("these callbacks already carry SmartCash callbacks: pass the UI callbacks to that call")
        self.run_state = RunState.of(self)  # a DDP worker's came with the parent's callbacks
        self._schedule_epochs: int | None = None  # set by extend(): the LR schedule keeps its original length
        self.extended_from: int | None = None  # set by extend(): the epochs planned before
        self._named_best: Path | None = None
        if self.extend_to:
            self.extend(self.extend_to, schedule_epochs=self.args.epochs)

    def check_resume(self, overrides):
        """Resume as :class:`SmartCashDataTrainer` does; an ``epochs=`` beyond the run's plan extends it.

        Ultralytics ignores ``epochs`` on resume and refuses a finished run. ``yolo train resume model=last.pt
        epochs=N`` plans N epochs in all, as ``SmartCashTrainer.resume(last.pt, additional_epochs=...)`` does (the
        integration's ``refuse_unresumable`` checks it as that call does). A DDP worker rebuilt with the extended
        ``epochs`` extends it alike.
        """
        asked = overrides.get("epochs") if overrides.get("resume") else None
        super().check_resume({k: v for k, v in overrides.items() if k != "epochs"} if asked is not None else overrides)
        planned = self.args.epochs
        self.extend_to = asked if self.resume and asked is not None and asked > planned else None
        if self.resume and asked is not None and asked < planned:
            LOGGER.warning(f"Resume ignores epochs={asked}: the run plans {planned}; more would extend it")

    @classmethod
    def resume(
        cls, checkpoint: str | Path, additional_epochs: int = 0, overrides: dict[str, Any] | None = None, **ui
    ) -> SmartCashTrainer:
        """Return a trainer that continues the run of ``checkpoint`` (its ``last.pt``); call ``.train()`` on it.

        Model, dataset, settings and callbacks are the run's own, and so is its folder: the one that holds the
        checkpoint's ``weights/``, also for a copied or moved run (never the ``save_dir`` recorded inside it).
        ``overrides`` may change what Ultralytics lets a resume change (data, device, batch, workers, ...).
        ``additional_epochs`` extends the run beyond its plan, also a finished one: optimizer, EMA and early-stopping
        state carry on and the added epochs run at the learning rate the schedule ended at
        (``smartcash.training.schedule_epochs`` keeps the original length).
        ``ui`` takes the UI callbacks of :class:`SmartCashTrainer` (:class:`UICallbacks`, by name).

        Raises:
            FileNotFoundError: no such file.
            ValueError: naming the checkpoint, when it is not a readable training checkpoint (truncated, empty, not
                a checkpoint), holds no optimizer state (a stripped best.pt, or a last.pt Ultralytics stripped),
                the run is finished and no epochs are added, or the checkpoint lies in no run's ``weights/`` folder.
            PermissionError: naming the run folder (or its ``weights/``) when it is read-only; nothing is written.
        """
        UICallbacks(**ui)  # an unknown keyword is a TypeError naming it, before the checkpoint is read
        if isinstance(additional_epochs, bool) or not isinstance(additional_epochs, int) or additional_epochs < 0:
            raise ValueError(f"additional_epochs must be an integer >= 0, got {additional_epochs!r}")
        checkpoint = Path(checkpoint)
        done, planned = resumable(checkpoint, additional_epochs)
        trainer = cls(overrides={**(overrides or {}), "resume": str(checkpoint)}, **ui)
        if additional_epochs:
            trainer.extend(max(planned, done) + additional_epochs, schedule_epochs=planned)
        return trainer

    def extend(self, epochs: int, schedule_epochs: int) -> None:
        """Plan ``epochs`` in all for this resumed run, keeping a learning-rate schedule of ``schedule_epochs``."""
        LOGGER.info(f"Extending the run to {epochs} epochs; the LR schedule keeps its {schedule_epochs} epochs")
        self.extended_from = self.args.epochs
        self.args.epochs = self.epochs = epochs
        self._schedule_epochs = schedule_epochs

    def stop_training(self, reason: str = "stop requested") -> bool:
        """Ask the run to stop at the end of the epoch it is in (thread-safe); it validates, saves, ends ``stopped``.

        The epoch's remaining batches run first, so that no half-trained epoch is recorded as done.

        Returns False when a stop was already requested.
        """
        return self.run_state.request_stop(reason)

    def get_training_status(self) -> dict[str, Any]:
        """Return where the run stands (thread-safe; see :mod:`smartcash_ultra.callbacks.run_state`).

        Keys: state, epoch, epochs, batch, batches, best_fitness, best_epoch, last_metrics, elapsed, eta, reason,
        save_dir.
        """
        return {**self.run_state.snapshot(), "save_dir": str(self.save_dir)}

    def training_settings(self) -> dict[str, Any]:
        """Return the model YAML's ``smartcash.training`` settings, validated."""
        return model_settings(self.model)["training"]

    def validates_epoch(self, epoch: int) -> bool:
        """Return True when ``epoch`` (0-based) validates: every ``val_interval`` epochs, the last, a stopping one."""
        interval = self.training_settings()["val_interval"]
        stopping = bool(self.stop) or self.run_state.stop_reason is not None
        return interval <= 1 or (epoch + 1) % interval == 0 or epoch + 1 >= self.epochs or stopping

    def validate(self):
        """Validate on the epochs :meth:`validates_epoch` names; others keep the last figures and no fitness.

        No fitness means no best.pt, no early-stopping count and an empty row in the metric files for the epoch.
        """
        if not self.validates_epoch(self.epoch):
            return self.metrics, None
        return super().validate()

    def save_model(self) -> bool:
        """Save last.pt/best.pt as Ultralytics does, plus the named copy of best.pt when it was just written."""
        saved = super().save_model()
        if saved and self.fitness is not None and self.best_fitness == self.fitness:
            self._named_best = write_named_best(self, self._named_best)
        return saved

    def final_eval(self) -> None:
        """Run Ultralytics' final evaluation with last.pt left whole, so that the run can always be extended.

        Ultralytics strips the optimizer and EMA from last.pt in place here, before validating best.pt (minutes on
        a large split): a kill meanwhile would leave no resumable checkpoint. Under ``keep_last_whole`` last.pt
        is never rewritten, and best.pt (the deployable one) is stripped into a temp file and renamed; its named copy
        is refreshed from it after.
        """
        with keep_last_whole(self.last):
            super().final_eval()
        if RANK in {-1, 0} and self.last.exists():
            LOGGER.info(f"Kept {self.last} whole (optimizer, EMA) so the run can be extended (additional_epochs=N)")
        if RANK in {-1, 0} and self._named_best is not None and self.best.exists():
            self._named_best = write_named_best(self, self._named_best)

    def _setup_train(self):
        """Settle the precision offline, run Ultralytics' setup, then on resume drop results.csv's rows after the epoch.

        Ultralytics' AMP check would download a reference model: the SmartCash model is checked instead
        (:mod:`smartcash_ultra.engine.precision`). Ultralytics appends to results.csv, so epochs that ran after the
        checkpoint was saved (before a kill or a second Ctrl-C, or a resume from an older checkpoint) would appear
        twice once they run again.
        """
        settle(self.args, self.device)
        with offline_check_amp():
            super()._setup_train()
        if self.resume and RANK in {-1, 0}:  # Ultralytics' resume_training has just set start_epoch
            dropped = trim_results(self.csv, self.start_epoch)
            if dropped:
                LOGGER.info(f"{self.csv}: {dropped} row(s) after the checkpoint's epoch {self.start_epoch} dropped")

    def get_model(self, cfg: str | dict | None = None, weights=None, verbose: bool = True) -> SmartCashDetectionModel:
        """Build the SmartCash model for the data's classes, loading ``weights`` when given.

        When ``weights`` (a checkpoint's model: fine-tuning, resuming, extending) carries the timm backbone, the
        backbone's original weights (``smartcash.backbone_weights``) are not read: the checkpoint holds trained ones,
        and the file or hub they came from may be gone on this machine.
        """
        model = SmartCashDetectionModel(
            cfg, nc=self.data["nc"], ch=self.data["channels"], verbose=verbose and RANK == -1, backbone_weights=False
        )
        if model.holds_backbones_of(weights):
            LOGGER.info("TimmBackbone: weights from the checkpoint (smartcash.backbone_weights is not read)")
        else:
            model.load_backbone_weights()
        if self._schedule_epochs is not None:  # an extension: record the schedule length where checkpoints keep it
            training = model.yaml[SECTION].setdefault("training", {})
            training["schedule_epochs"] = training.get("schedule_epochs") or self._schedule_epochs
        model = self.set_model_names_for_load(model)
        if weights:
            model.load(weights)
        return model

    def _setup_scheduler(self):
        """Use the ``smartcash.training`` scheduler; with none and no schedule length, Ultralytics' own, unchanged.

        Ultralytics calls this once the optimizer exists and again, in time mode (``time=``), after every epoch with
        the re-estimated ``self.epochs``; both calls land here. Warm-up stays Ultralytics' own, on top of ``self.lf``.
        """
        settings = self.training_settings()
        if settings["scheduler"] is None and settings["schedule_epochs"] is None:
            return super()._setup_scheduler()
        schedule = Schedule(
            settings["scheduler"] or ("cosine" if self.args.cos_lr else "linear"),
            settings["schedule_epochs"] or self.epochs,
            self.args.lrf,
            settings["step_size"],
            settings["gamma"],
        )
        if self.scheduler is None:  # once, not at every time-mode re-estimate
            LOGGER.info(f"scheduler: {schedule}, warm-up {self.args.warmup_epochs} epochs")
        self.lf = schedule
        self.scheduler = optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)

    def train(self) -> TrainResult:
        """Train, then return the final metrics (of best.pt) and the weight paths.

        SIGINT and SIGTERM (main thread) stop the run gracefully, as :meth:`stop_training` does, and once all is
        saved ``train()`` raises :class:`~smartcash_ultra.engine.stopping.StoppedBySignal` (its ``result`` is what it
        would have returned; ``Interrupted``, also a ``KeyboardInterrupt``, for SIGINT), so that ``yolo train``
        exits 130 or 143, not 0. A second SIGINT stops at once, without saving, with the same exception. A stop by
        :meth:`stop_training` returns normally. The status ends ``completed``, ``stopped_early``, ``stopped`` or
        ``failed``.
        """
        self.run_state.start()
        try:
            # a DDP parent only waits for torchrun: its workers run train() and handle the signals themselves
            with nullcontext(Signals()) if self.ddp else stop_on_signals(self.stop_training) as signals:
                super().train()
        except BaseException as e:
            self.run_state.fail(e)
            raise
        if self.ddp:  # the workers trained; how far they got is in last.pt (kept whole, see final_eval)
            self.epoch = read_checkpoint(self.last)["epoch"] if self.last.exists() else self.epochs - 1
        outcome, reason = self.run_state.finish(self)  # on rank 0 on_train_end has decided already
        metrics = dict(self.metrics or {})
        if not metrics and self.best.exists():  # DDP: the workers validated, the checkpoint carries the figures
            metrics = dict(read_checkpoint(self.best).get("train_metrics") or {})
        result = TrainResult(
            metrics=metrics,
            best=Path(self.best) if self.best.exists() else None,
            last=Path(self.last) if self.last.exists() else None,
            save_dir=Path(self.save_dir),
        )
        if signals.signum is not None and outcome == "stopped" and RANK == -1:
            stop = stopped_by(signals.signum, f"{reason}: stopped after epoch {self.run_state.done}/{self.epochs}")
            stop.result = result
            LOGGER.warning(f"{stop}, all saved; exit status {stop.code}. Resume: yolo train resume model={self.last}")
            raise stop
        return result


def resume_training(
    checkpoint: str | Path, additional_epochs: int = 0, overrides: dict[str, Any] | None = None, **ui
) -> TrainResult:
    """Continue the run of ``checkpoint``, extended by ``additional_epochs``: :meth:`SmartCashTrainer.resume`."""
    return SmartCashTrainer.resume(checkpoint, additional_epochs, overrides, **ui).train()
