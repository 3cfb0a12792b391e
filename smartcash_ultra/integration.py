"""How the plugin plugs into Ultralytics: the routing of SmartCash models, and every internal it relies on.

Ultralytics reads no plugin entry points, and the ``yolo`` command always builds ``YOLO(model)``, which picks its
model, trainer, validator and predictor classes from ``task_map``. :func:`install` wraps that property so that a
model whose YAML has a ``smartcash:`` section gets the SmartCash classes; every other model, stock runs included,
gets exactly the stock ones. Ultralytics finds a YAML by name only inside its own package: :func:`install_yaml_names`
lets the package's YAMLs resolve by name too (``yolo train cfg=smartcash_effb4.yaml`` from any folder). Both run
from the interpreter-start hook (``_startup.py``) and on first use of a public name of the package;
``SMARTCASH_ULTRA_DISABLE=1`` (``utils/switch.py``) turns all of it off.

Everything else rides on Ultralytics' public seams: subclasses (``DetectionModel``, ``DetectionTrainer``,
``DetectionValidator``, ``DetectionPredictor``, ``YOLODataset``), callbacks and arguments. The public seams whose
behaviour the plugin counts on have canaries too: the DDP launcher rebuilds the trainer as
``cls(cfg=..., overrides=..., _callbacks=...)`` (``tests/test_ddp.py``); a checkpoint's model reaches
``get_model(weights=...)`` (``test_a_checkpoints_model_reaches_get_model_as_weights``); inference and export call
``model.fuse()`` (``test_inference_fuses_through_the_models_fuse_method``); ``Metric.all_ap`` column 5 is AP at IoU
0.75, as ``Metric.map75`` reads it (``test_all_ap_column_5_is_ap_at_iou_0_75``).

These are the places where the plugin reaches into Ultralytics internals. Each has a canary, a test that fails when
an Ultralytics upgrade moves it, in ``tests/test_patch_points.py`` unless another file is named:

1. ``YOLO.task_map`` is wrapped (here), read by ``Model._smart_load`` after ``Model._new`` set ``cfg``; a YAML no
   model can be built from (a training cfg given as ``model=``) gets a model class that says to pass it as ``cfg=``.
   Canaries: ``test_task_map_routes_the_yaml_model_new_is_building``,
   ``tests/test_integration.py::test_a_training_cfg_given_as_model_says_to_pass_it_as_cfg``.
2. ``YOLO.train``, ``val``, ``predict`` and ``export`` are wrapped (here). A model that is no SmartCash model gets
   the SmartCash data path when its source or data holds ``.npy`` files, through the methods' public ``trainer=``,
   ``validator=`` and ``predictor=`` arguments (``test_predict_val_train_build_the_class_they_are_given``); an
   export, or a model carrying data declarations, given float arrays in memory gets the SmartCash predictor too, and
   ``predict`` passes ``data=None`` unless the user gives ``data=`` (``Model.predict`` hands a checkpoint's training
   ``data`` to the predictor; ``tests/test_array_routing.py``). ``tune`` starts a SmartCash model's search from the
   SmartCash settings: ``Model.tune`` hands its arguments to the ``Tuner``, which trains every iteration with a full
   cfg, so the trainer's own merge takes nothing
   (``tests/test_tune.py::test_tune_starts_every_iteration_from_the_smartcash_settings_under_the_users``).
   ``resume=True`` on a SmartCash model that cannot be resumed is an error naming the checkpoint, where
   ``Model.train`` would start a new run on its default dataset
   (``test_model_train_turns_a_resume_it_cannot_continue_into_a_new_run``). Export adds an ``on_export_start``
   callback for a model that carries data declarations (``engine/declarations.py``): Ultralytics fills
   ``Exporter.metadata`` before that event and writes it after, and ``AutoBackend`` keeps unknown keys
   (``test_export_fuses_and_carries_metadata_added_at_on_export_start``; other formats:
   ``tests/test_array_routing.py``). ``YOLO.__init__`` is wrapped too: a ``.pt`` file it cannot read is an
   ``UnreadableCheckpoint`` naming it and the way out, where Ultralytics raises a ``TypeError`` chained to torch's
   error (``tests/test_lifecycle.py::test_yolo_prints_a_known_error_as_one_line_and_python_gets_the_exception``).
3. ``ultralytics.utils.checks.check_file`` is wrapped (here): ``check_yaml`` looks it up at call time, and every
   YAML lookup by name goes through it (``yolo ... cfg=``, ``Model.train(cfg=)``, ``yaml_model_load``); each
   shipped name is one file. The start-up hook installs it when ``ultralytics.utils.checks`` is first imported,
   before ``entrypoint`` reads ``cfg=``. Canary: ``test_yaml_names_resolve_through_check_file_for_cfg_and_model``.
4. ``ultralytics.nn.tasks.TimmBackbone`` is injected (``nn/backbone.register_modules``): ``parse_model`` resolves
   layer names from its module's globals. Canary: ``test_parse_model_builds_a_layer_named_in_its_module_globals``.
5. ``SmartCashTrainer._setup_train`` overrides a private method. Around it, ``ultralytics.engine.trainer.check_amp``
   is swapped for an offline check (``engine/precision.offline_check_amp``; canary
   ``test_setup_train_calls_the_swapped_check_amp``, its bf16 side ``tests/test_precision.py``). After it, the rows
   of ``results.csv`` after the checkpoint's epoch are dropped: it relies on Ultralytics' ``_setup_train`` calling
   ``resume_training``, which sets ``start_epoch``, and on ``save_metrics`` appending to ``trainer.csv``; the run
   state reads that file too (canary
   ``tests/test_lifecycle.py::test_a_resume_drops_the_results_rows_after_its_checkpoint``). That file is the run's
   own: on resume ``SmartCashDataTrainer.check_resume`` sets ``args.save_dir`` to the folder holding the checkpoint
   (``engine/checkpoints.run_folder``), where Ultralytics keeps the ``save_dir`` recorded in it (a copied run's
   original); it relies on ``BaseTrainer.__init__`` calling it before it makes ``save_dir`` from ``args.save_dir``
   and writes ``args.yaml`` there; there, too, a training claims its run folder (``train.lock``), new runs
   included, before ``BaseTrainer.__init__`` writes ``args.yaml`` or deletes an earlier ``results.csv`` (canary
   ``test_check_resume_sets_the_save_dir_before_init_makes_it_and_writes_args_yaml``).
6. ``SmartCashTrainer._setup_scheduler`` overrides the private method Ultralytics calls to build the LR schedule,
   also after each epoch in ``time=`` mode (``engine/trainer.py``). Canary:
   ``test_the_schedule_is_built_by_one_private_method_also_in_time_mode``.
7. The trainer's ``wdir`` becomes an ``AtomicPath`` so ``BaseTrainer.save_model``'s ``last/best.write_bytes`` are
   atomic, and ``ultralytics.engine.trainer.strip_optimizer`` is swapped during ``final_eval`` so that ``last.pt``
   is never rewritten and ``best.pt`` is stripped into a temp file and renamed
   (``engine/checkpoints.keep_last_whole``). Canary:
   ``test_checkpoints_are_written_by_rename_and_final_eval_strips_best_only``.
8. ``trainer.stopper`` is replaced by the adaptive early stopping (``callbacks/early_stopping.py``): Ultralytics calls
   it as ``stopper(epoch, fitness)`` per validated epoch and stops on its answer, and validates an epoch when its
   ``possible_stop`` is set. Canary: ``test_the_stopper_slot_decides_the_stop_and_possible_stop_validates``.
9. Two facts of Ultralytics' event order that the run state relies on (``callbacks/run_state.py``): ``teardown``
   runs in the ``finally`` of ``BaseTrainer.train`` with the exception still in flight, and ``final_eval`` fires a
   second ``on_fit_epoch_end`` one past the last epoch. Canaries:
   ``tests/test_callbacks_integration.py::test_canary_teardown_runs_in_the_finally_of_train_with_the_exception_in_flight``,
   ``tests/test_callbacks_integration.py::test_canary_the_final_evaluation_fires_a_second_fit_epoch_end_one_past_the_last_epoch``.
10. ``SmartCashDataset.get_labels`` replaces ``YOLODataset.get_labels`` whole: it is the one caller of the method that
    unpickles Ultralytics' ``labels.cache``, so that file is never loaded; the scan itself runs in the stock
    ``cache_labels`` through its ``verify_args`` and ``result_to_label`` hooks (``data/dataset.py``, whose own label
    cache is ``data/label_cache.py``). Canary:
    ``tests/test_dataset.py::test_a_label_cache_brought_by_a_dataset_is_never_unpickled``.
11. ``SmartCashDataset.load_image`` feeds ``BaseDataset``'s Mosaic buffer (``buffer``, ``max_buffer_length``,
    ``ims``, ``im_hw0``, ``im_hw``) as the stock method does, since stock reads images only through the module-level
    ``imread``. Canary:
    ``tests/test_dataset.py::test_arrays_feed_mosaic_through_stock_buffer_as_their_png_twins_do``.
12. ``ArraySource`` (``engine/predictor.py``) is one of Ultralytics' ``LOADERS`` classes, which
    ``load_inference_source`` takes as it is, and follows their protocol (``mode``, ``bs``, batches of paths,
    images and log strings). Canary:
    ``tests/test_array_routing.py::test_predict_log_names_each_array_file_as_stock_names_images``.
13. ``ultralytics.nn.tasks._SafeLoad.loading`` is wrapped (``nn/safe_load.install``, from :func:`install`):
    ``torch_safe_load`` enters it with the file before its restricted load (``ULTRALYTICS_SAFE_LOAD=1``), and the
    wrapper first adds, under ``_SafeLoad._lock``, the SmartCash and timm backbone classes that file names to torch's
    allow-list (``torch.serialization.add_safe_globals``); Ultralytics offers no public way to extend its list.
    Canary: ``tests/test_safe_load.py::test_canary_a_restricted_load_enters_safeload_loading_with_the_file``.
14. ``ultralytics.data.utils.check_font`` is swapped for a no-op while ``check``/``stats`` resolve a data YAML through
    ``check_det_dataset`` (``data/image_dataset._training_paths``), the resolution training uses: it looks the name
    up in its module at call time, and its font check probes the network and downloads into the user's config folder.
    Canary: ``tests/test_dataset_trust.py::test_canary_check_det_dataset_checks_the_font_through_its_module_global``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from smartcash_ultra.utils.shipped import SAMPLE_DATA, SAMPLE_HINT, find_shipped_yaml
from smartcash_ultra.utils.switch import enabled


def install(yolo_class: type | None = None) -> None:
    """Patch ``YOLO.task_map`` and YAML name lookups (idempotent); nothing when ``SMARTCASH_ULTRA_DISABLE`` is set."""
    if not enabled():
        return
    install_yaml_names()
    from smartcash_ultra.nn import safe_load

    safe_load.install()  # before YOLO(...) reads a checkpoint: Ultralytics' restricted loads accept SmartCash's
    if yolo_class is None:
        from ultralytics.models.yolo.model import YOLO as yolo_class
    stock = yolo_class.task_map.fget
    if getattr(stock, "smartcash", False):
        return

    def task_map(self) -> dict[str, dict[str, Any]]:
        from smartcash_ultra.nn.model import is_smartcash_yaml

        tasks, yaml = stock(self), _model_yaml(self)  # the YAML is read once: task_map is read at every _smart_load
        if is_smartcash_yaml(yaml):
            tasks = {**tasks, "detect": smartcash_detect_task()}
        elif self.model is None and _is_no_model_yaml(yaml):  # a YAML file about to be built, not a model's own
            refuse = _refuse_as_model(self.cfg)
            tasks = {task: {**classes, "model": refuse} for task, classes in tasks.items()}
        return tasks

    task_map.smartcash, task_map.__wrapped__, task_map.__doc__ = True, stock, stock.__doc__
    yolo_class.task_map = property(task_map)
    wrappers = {
        "predict": _route_predict,
        "val": lambda stock: _route_data(stock, "validator", _validator),
        "train": lambda stock: _route_data(stock, "trainer", _data_trainer),
        "export": _export,
        "tune": _tune,
        "__init__": _name_unreadable_checkpoints,
    }
    for name, wrap in wrappers.items():
        method = wrap(getattr(yolo_class, name))
        method.smartcash = True
        setattr(yolo_class, name, method)
    yolo_class.train = refuse_unresumable(yolo_class.train)


def _name_unreadable_checkpoints(stock):
    """Wrap ``YOLO.__init__``: a ``.pt`` file it cannot read is an ``UnreadableCheckpoint`` naming it and the way out.

    Ultralytics raises a ``TypeError`` chained to torch's error (the ``yolo`` command prints both tracebacks); this
    one is also a ``TypeError``, and one of the plugin's known errors, which ``yolo`` prints as one line.
    """

    @functools.wraps(stock)
    def __init__(self, model="yolo26n.pt", *args, **kwargs):
        try:
            stock(self, model, *args, **kwargs)
        except TypeError as e:
            path = Path(model) if isinstance(model, (str, Path)) else None
            if path is None or path.suffix != ".pt" or not path.is_file():
                raise
            from smartcash_ultra.engine.checkpoints import unreadable
            from smartcash_ultra.nn.safe_load import refusal

            if refusal(e):  # a restricted load's refusal says so itself
                raise
            raise unreadable(path, e) from None

    return __init__


def _route_predict(stock):
    """Wrap ``YOLO.predict``: SmartCash's predictor for sources it reads, and only the user's ``data=`` as data.

    ``Model.predict`` passes a checkpoint's training ``data`` on to the predictor when the user gives none: not the
    arrays at hand, and as a relative path maybe another tree's YAML in the current folder (stock reads it only for
    class names, which a PyTorch model has itself).
    """

    @functools.wraps(stock)
    def predict(self, source=None, stream=False, predictor=None, **kwargs):
        from smartcash_ultra.engine.predictor import SmartCashPredictor, float_arrays

        if predictor is None and not is_smartcash_model(self) and source_holds_arrays(source):
            predictor = SmartCashPredictor
        elif predictor is None and float_arrays(source) and _may_be_trained_on_arrays(self):
            predictor = SmartCashPredictor  # it reads them as SmartCash's if the model says it was trained on arrays
        kwargs.setdefault("data", None)
        return stock(self, source, stream, predictor, **kwargs)

    return predict


def _may_be_trained_on_arrays(yolo) -> bool:
    """Return True unless ``yolo`` holds a PyTorch model trained on anything but arrays.

    An export says so in its metadata, which its predictor reads when it loads it (``declarations.trained_on_arrays``).
    """
    import torch

    from smartcash_ultra.engine.declarations import trained_on_arrays

    return not isinstance(yolo.model, torch.nn.Module) or trained_on_arrays(yolo.model)


def _tune(stock):
    """Wrap ``YOLO.tune``: a SmartCash model's search starts from the SmartCash settings, under the user's arguments.

    The tuner trains every iteration with all of Ultralytics' arguments filled in (``Tuner.args`` is a full cfg), so
    the merge every training route gets from the trainer takes nothing there: it is done here, on what the tuner
    starts from. The search space then mutates its keys from these values.
    """

    @functools.wraps(stock)
    def tune(self, *args, **kwargs):
        if is_smartcash_model(self):
            from smartcash_ultra.utils.settings import with_smartcash_defaults

            given = {k: v for k, v in {**self.overrides, **kwargs}.items() if k != "resume"}  # resume: the tuning's
            kwargs = {**with_smartcash_defaults(given), **kwargs}
        return stock(self, *args, **kwargs)

    return tune


def _route_data(stock, role: str, smartcash_class):
    """Wrap ``YOLO.val`` or ``YOLO.train``: without a ``role`` class, data holding ``.npy`` files gets SmartCash's."""

    @functools.wraps(stock)
    def routed(self, chosen=None, /, **kwargs):  # positional-only: Ultralytics has a `cls` (loss gain) argument
        chosen = kwargs.pop(role, chosen)
        if chosen is None and not is_smartcash_model(self) and data_holds_arrays(_data_of(self, kwargs)):
            chosen = smartcash_class()
        return stock(self, chosen, **kwargs)

    return routed


def _validator():
    from smartcash_ultra.engine.validator import SmartCashValidator

    return SmartCashValidator


def _data_trainer():
    from smartcash_ultra.engine.trainer import SmartCashDataTrainer

    return SmartCashDataTrainer


def _export(stock):
    @functools.wraps(stock)
    def export(self, **kwargs):
        from smartcash_ultra.engine.declarations import add_to_export_metadata, carried

        if carried(self.model) and add_to_export_metadata not in self.callbacks["on_export_start"]:
            self.add_callback("on_export_start", add_to_export_metadata)
        return stock(self, **kwargs)

    return export


def _data_of(yolo, kwargs: dict[str, Any]):
    """Return the data a train/val call will use: its argument, a ``cfg=`` file's, else the model's own (checkpoint)."""
    if kwargs.get("data"):
        return kwargs["data"]
    if kwargs.get("cfg"):
        from ultralytics.utils import YAML, checks

        return YAML.load(checks.check_yaml(kwargs["cfg"])).get("data")
    return yolo.overrides.get("data")


def source_holds_arrays(source) -> bool:
    """Return True when a predict source names ``.npy`` files: a path, a folder or a list holding at least one.

    In-memory arrays are no such source: a stock model keeps Ultralytics' reading of them (float BGR 0..255 works
    there), and ``predictor=SmartCashPredictor`` asks for SmartCash's.
    """
    from pathlib import Path

    from smartcash_ultra.data.arrays import IMAGE_SUFFIXES, is_array_file
    from smartcash_ultra.data.image_dataset import list_images

    items = source if isinstance(source, (list, tuple)) else [source]
    for item in items:
        if not isinstance(item, (str, Path)):
            continue
        if is_array_file(item) or (
            Path(item).is_dir() and any(map(is_array_file, list_images(Path(item), IMAGE_SUFFIXES)))
        ):
            return True
    return False


def data_holds_arrays(data) -> bool:
    """Return True when ``data`` is a data YAML on disk whose splits hold ``.npy`` files (listed as training does).

    Anything else (a dict, a dataset name Ultralytics resolves or downloads, a YAML of images only) is not.
    """
    from smartcash_ultra.data.arrays import IMAGE_SUFFIXES, is_array_file
    from smartcash_ultra.data.image_dataset import DatasetError, find_image_dataset

    if not isinstance(data, str) and not hasattr(data, "__fspath__"):
        return False
    if not str(data).lower().endswith((".yaml", ".yml")):
        return False
    try:
        dataset = find_image_dataset(data, IMAGE_SUFFIXES)
    except DatasetError:
        return False
    return any(is_array_file(f) for files in dataset.splits.values() for f in files)


def install_yaml_names(checks_module=None) -> None:
    """Let the package's YAMLs resolve by name, after a file that exists as given and before Ultralytics' search.

    Wraps ``checks.check_file`` (idempotent); every name that is no shipped YAML goes to Ultralytics unchanged. The
    sample data the shipped training cfgs name, when missing, is said missing with how to write it.
    """
    if not enabled():
        return
    if checks_module is None:
        from ultralytics.utils import checks as checks_module
    stock = checks_module.check_file
    if getattr(stock, "smartcash", False):
        return

    @functools.wraps(stock)
    def check_file(file, suffix="", download=True, download_dir=".", hard=True):
        found = find_shipped_yaml(file)
        if found is not None:
            return found
        try:
            return stock(file, suffix, download, download_dir, hard)
        except FileNotFoundError as e:
            if Path(str(file)).as_posix() == SAMPLE_DATA:
                raise FileNotFoundError(f"{e}: {SAMPLE_HINT}") from None
            raise

    check_file.smartcash = True
    checks_module.check_file = check_file


def refuse_unresumable(stock_train):
    """Wrap ``Model.train`` so that ``resume=True`` on a SmartCash model it cannot resume is an error naming it.

    Ultralytics turns such a resume (``yolo train resume model=best.pt``: a stripped checkpoint, a finished run, a
    YAML) into a new run with its default dataset, which it then downloads. ``epochs=`` beyond the run's plan
    extends it, as ``additional_epochs`` does in Python (``SmartCashTrainer.check_resume``).
    """

    @functools.wraps(stock_train)
    def train(self, trainer=None, **kwargs):
        if kwargs.get("resume") is True and is_smartcash_model(self):
            from smartcash_ultra.engine.checkpoints import resumable

            if not self.ckpt_path:
                raise ValueError(f"{self.cfg}: resume continues a run from its weights/last.pt, not from a model YAML")
            resumable(Path(self.ckpt_path), epochs=kwargs.get("epochs"))
        return stock_train(self, trainer, **kwargs)

    return train


def smartcash_detect_task() -> dict[str, type]:
    from smartcash_ultra.engine.predictor import SmartCashPredictor
    from smartcash_ultra.engine.trainer import SmartCashTrainer
    from smartcash_ultra.engine.validator import SmartCashValidator
    from smartcash_ultra.nn.model import SmartCashDetectionModel

    return {
        "model": SmartCashDetectionModel,
        "trainer": SmartCashTrainer,
        "validator": SmartCashValidator,
        "predictor": SmartCashPredictor,
    }


def is_smartcash_model(yolo) -> bool:
    """Return True when a ``YOLO`` object holds (or is about to build) a SmartCash model."""
    from smartcash_ultra.nn.model import is_smartcash_yaml

    return is_smartcash_yaml(_model_yaml(yolo))


def _model_yaml(yolo) -> dict | None:
    """Return the YAML dict of the model a ``YOLO`` object holds, or of the one it is about to build, else None.

    ``Model._new`` sets ``cfg`` to the YAML file before it builds the model (and reads ``task_map``).
    """
    import torch

    model, cfg = getattr(yolo, "model", None), getattr(yolo, "cfg", None)
    if isinstance(model, torch.nn.Module):
        return getattr(model, "yaml", None)
    if model is None and cfg and str(cfg).lower().endswith((".yaml", ".yml")):
        from ultralytics.nn.tasks import yaml_model_load

        return yaml_model_load(cfg)
    return None


def _is_no_model_yaml(d: dict | None) -> bool:
    """Return True for a YAML dict no model can be built from (neither ``backbone`` nor ``head``): a training cfg."""
    return isinstance(d, dict) and "backbone" not in d and "head" not in d


def _refuse_as_model(cfg):
    """Return a model class that says to pass ``cfg`` as ``cfg=`` (``Model._smart_load`` hides errors of task_map)."""

    def build(*args, **kwargs):
        raise ValueError(f"{cfg} is a training cfg (no backbone or head), not a model YAML: pass it as cfg={cfg}")

    return build
