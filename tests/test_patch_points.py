"""Canaries: one test per place the plugin reaches into Ultralytics internals (``smartcash_ultra/integration.py``).

Each fails when an Ultralytics upgrade moves what the plugin relies on there, instead of the plugin breaking
silently. Patch points guarded elsewhere are named in the integration module's list.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from ultralytics import YOLO
from ultralytics.data import YOLODataset
from ultralytics.data.base import BaseDataset
from ultralytics.engine import trainer as engine
from ultralytics.engine.exporter import Exporter
from ultralytics.engine.model import Model
from ultralytics.models.yolo.detect import DetectionValidator
from ultralytics.nn import tasks
from ultralytics.utils import checks
from ultralytics.utils.metrics import Metric

from smartcash_ultra.data.dataset import SmartCashDataset
from smartcash_ultra.integration import MODEL_YAML_LOADER
from smartcash_ultra.nn.backbone import register_modules


def test_task_map_is_a_property_that_model_loading_reads_after_setting_cfg():
    assert isinstance(inspect.getattr_static(YOLO, "task_map"), property)
    assert "self.task_map[self.task][key]" in inspect.getsource(Model._smart_load)
    new = inspect.getsource(Model._new)
    assert new.index("self.cfg = cfg") < new.index('self._smart_load("model")')


def test_parse_model_resolves_layer_names_from_its_module_globals():
    assert "globals()[m]" in inspect.getsource(tasks.parse_model)
    assert "Index" in inspect.getsource(tasks.parse_model)  # channel count as Index's first argument
    register_modules()
    assert tasks.TimmBackbone.__module__ == "smartcash_ultra.nn.backbone"


def test_setup_train_calls_the_module_level_check_amp():
    assert callable(engine.check_amp)
    assert "check_amp(self.model)" in inspect.getsource(engine.BaseTrainer._setup_train)


def test_checkpoints_are_written_through_the_trainers_path_objects():
    save = inspect.getsource(engine.BaseTrainer.save_model)
    assert "self.last.write_bytes(" in save and "self.best.write_bytes(" in save
    init = inspect.getsource(engine.BaseTrainer.__init__)
    assert 'self.last, self.best = self.wdir / "last.pt", self.wdir / "best.pt"' in init
    final_eval = inspect.getsource(engine.BaseTrainer.final_eval)  # strips through the module-level name
    assert "strip_optimizer(self.last)" in final_eval and "strip_optimizer(self.best, updates=" in final_eval
    assert final_eval.index("strip_optimizer(self.last)") < final_eval.index("self.validator(model=model)")
    assert callable(engine.strip_optimizer) and "s or f" in inspect.getsource(engine.strip_optimizer)  # s: target


def test_the_stopper_slot_is_called_per_validated_epoch_and_saved():
    loop = inspect.getsource(engine.BaseTrainer._do_train)
    assert "self.stopper(epoch + 1, self.fitness)" in loop and "self.stopper.possible_stop" in loop
    assert "self.stopper, self.stop = EarlyStopping(" in inspect.getsource(engine.BaseTrainer._setup_train)


def test_disk_cache_paths_are_the_npy_files_attribute():
    assert "self.npy_files = " in inspect.getsource(BaseDataset.__init__)
    for method in (BaseDataset.load_image, BaseDataset.cache_images_to_disk):
        assert "self.npy_files[i]" in inspect.getsource(method)


def test_the_pickled_label_cache_is_loaded_only_through_get_labels():
    def users(name: str) -> list[str]:
        return [
            f"{cls.__name__}.{attr}"
            for cls in YOLODataset.__mro__
            if cls.__module__.startswith("ultralytics.")
            for attr, f in vars(cls).items()
            if inspect.isfunction(f) and f"{name}(" in inspect.getsource(f) and attr != name
        ]

    assert users("load_dataset_cache_file") == ["YOLODataset._load_or_scan_cache"]
    assert users("self._load_or_scan_cache") == ["YOLODataset.get_labels"]
    assert "self.labels = self.get_labels()" in inspect.getsource(BaseDataset.__init__)
    assert "super().get_labels" not in inspect.getsource(SmartCashDataset)  # replaced whole, never called


def test_all_ap_column_5_is_ap_at_iou_0_75():
    assert torch.equal(DetectionValidator().iouv, torch.linspace(0.5, 0.95, 10))
    metric = Metric()
    metric.all_ap = np.random.default_rng(0).random((3, 10))
    assert metric.map75 == metric.all_ap[:, 5].mean()


def test_the_scheduler_is_built_by_one_private_method_also_in_time_mode():
    assert "self._setup_scheduler()" in inspect.getsource(engine.BaseTrainer._build_train_pipeline)
    assert "self._setup_scheduler()" in inspect.getsource(engine.BaseTrainer._do_train)  # time= re-estimates


def test_model_train_turns_an_unresumable_resume_into_a_new_run():
    train = inspect.getsource(Model.train)
    assert 'if args.get("resume") is True:' in train and 'args["resume"] = False' in train
    assert list(inspect.signature(Model.train).parameters) == ["self", "trainer", "kwargs"]  # the wrapper's


def test_a_resume_reaches_resume_training_before_the_first_epoch_and_results_csv_is_appended_to():
    setup, loop = inspect.getsource(engine.BaseTrainer._setup_train), inspect.getsource(engine.BaseTrainer._do_train)
    assert "self.resume_training(ckpt)" in setup and "self._setup_train()" in loop
    assert "self.start_epoch = start_epoch" in inspect.getsource(engine.BaseTrainer.resume_training)
    assert 'self.csv = self.save_dir / "results.csv"' in inspect.getsource(engine.BaseTrainer.__init__)
    assert 'open(self.csv, "a"' in inspect.getsource(engine.BaseTrainer.save_metrics)


def test_yaml_names_resolve_through_check_file_and_the_model_loader_is_one_function():
    from ultralytics.cfg import entrypoint

    assert "check_file(file, suffix, hard=hard)" in inspect.getsource(checks.check_yaml)  # looked up at call time
    stock = inspect.getsource(inspect.unwrap(checks.check_file))
    assert "os.path.exists(file))" in stock and 'glob.glob(str(ROOT / "**" / file)' in stock  # as given, then search
    assert (tasks.yaml_model_load.__module__, tasks.yaml_model_load.__name__) == MODEL_YAML_LOADER
    assert "check_yaml(path, hard=False) or check_yaml(unified_path)" in inspect.getsource(tasks.yaml_model_load)
    assert "YAML.load(checks.check_yaml(v))" in inspect.getsource(entrypoint)  # cfg=, before YOLO is imported
    assert 'YAML.load(checks.check_yaml(kwargs["cfg"]))' in inspect.getsource(Model.train)


def test_predict_val_train_take_the_class_to_use_and_ask_task_map_only_without_one():
    for method, name in ((Model.predict, "predictor"), (Model.val, "validator"), (Model.train, "trainer")):
        stock = inspect.unwrap(method)
        assert name in inspect.signature(stock).parameters
        assert f'({name} or self._smart_load("{name}"))' in inspect.getsource(stock)


def test_export_metadata_is_filled_before_on_export_start_and_written_after():
    from ultralytics.engine.exporter import Exporter
    from ultralytics.nn.backends.base import BaseBackend
    from ultralytics.utils.export.torchscript import torch2torchscript

    call = inspect.getsource(Exporter.__call__)
    assert call.index("self.metadata = {") < call.index('self.run_callbacks("on_export_start")')
    assert call.index('self.run_callbacks("on_export_start")') < call.index('getattr(self, f"export_{fmt}")()')
    exporter = inspect.getsource(inspect.getmodule(Exporter))

    def method(name: str) -> str:  # the exporters are wrapped by a decorator that keeps no __wrapped__
        body = exporter[exporter.index(f"    def {name}(") :]
        return body[: body.index("\n    @")]

    assert "for k, v in self.metadata.items():" in method("export_onnx")  # every key
    assert "metadata=self.metadata" in method("export_torchscript")
    assert 'extra_files = {"config.txt": json.dumps(metadata' in inspect.getsource(torch2torchscript)
    assert 'YAML.save(Path(file).parent / "metadata.yaml", self.metadata)' in method("export_openvino")
    assert "self.metadata = metadata" in inspect.getsource(BaseBackend.apply_metadata)  # unknown keys kept


def test_model_train_runs_at_every_epoch_start_and_freezes_the_batchnorm_of_named_layers():
    loop = inspect.getsource(engine.BaseTrainer._do_train)
    assert loop.index('self.run_callbacks("on_train_epoch_start")') < loop.index("self._model_train()")
    train = inspect.getsource(engine.BaseTrainer._model_train)
    assert "self.freeze_layer_names" in train and "m.eval()" in train
    assert "self.freeze_layer_names = freeze_layer_names" in inspect.getsource(engine.BaseTrainer._setup_train)


def test_parameter_groups_carry_labels_and_warm_up_starts_only_bias_groups_high():
    build = inspect.getsource(engine.BaseTrainer.build_optimizer)
    for label in ("bias", "weight", "bn"):
        assert f'"param_group": "{label}"' in build
    loop = inspect.getsource(engine.BaseTrainer._do_train)
    assert 'self.args.warmup_bias_lr if x.get("param_group") == "bias" else 0.0' in loop
    assert 'x["initial_lr"] * self.lf(epoch)' in loop


def test_a_checkpoints_model_reaches_get_model_as_weights():
    assert "self.trainer.get_model(weights=weights, cfg=self.model.yaml)" in inspect.getsource(Model.train)
    assert "self.get_model(cfg=cfg, weights=weights" in inspect.getsource(engine.BaseTrainer.setup_model)


def test_inference_and_export_fuse_through_the_models_fuse_method():
    from ultralytics.nn.backends import pytorch

    assert "model.fuse(verbose=self.verbose) if isinstance(model, BaseModel)" in inspect.getsource(pytorch)
    assert "model = model.fuse(imgsz=self.imgsz)" in inspect.getsource(Exporter)
