"""Learning-rate schedules, optimizers and their use by the trainer: formulas, floor, hold beyond the schedule, time
mode, Ultralytics' own schedules unchanged, and the lr a real tiny run records in results.csv."""

from __future__ import annotations

import csv
import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, csp_n_yaml
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.optim import MuSGD

from smartcash_ultra.engine.schedules import Schedule, lr_table, main, recorded_lrs
from smartcash_ultra.engine.trainer import SmartCashTrainer

LR0, LRF, EPOCHS = 0.001, 0.01, 10
FAST = {"imgsz": 64, "batch": 4, "workers": 0, "plots": False, "exist_ok": True}


def documented(name: str, epoch: int, length: int = EPOCHS, step_size: int = 10, gamma: float | None = None) -> float:
    """docs/training.md's formula of each schedule, written out independently of smartcash_ultra.schedules."""
    e = min(epoch, length - 1)
    if name == "linear":
        return LRF + (1 - LRF) * (1 - e / length)
    if name == "cosine":
        return LRF + (1 - LRF) * (1 + math.cos(math.pi * e / length)) / 2
    if name == "step":
        return max((0.1 if gamma is None else gamma) ** (e // step_size), LRF)
    return max((0.95 if gamma is None else gamma) ** e, LRF)


CASES = [  # (name, step_size, gamma)
    ("linear", 10, None),
    ("cosine", 10, None),
    ("step", 10, None),
    ("step", 3, None),
    ("step", 2, 0.5),
    ("exponential", 10, None),
    ("exponential", 10, 0.5),
]


@pytest.mark.parametrize(("name", "step_size", "gamma"), CASES)
def test_ten_epoch_schedule_follows_its_formula_and_never_goes_below_min_lr(name, step_size, gamma):
    schedule = Schedule(name, EPOCHS, LRF, step_size, gamma)
    lrs = [LR0 * schedule(e) for e in range(EPOCHS)]
    assert lrs == pytest.approx([LR0 * documented(name, e, EPOCHS, step_size, gamma) for e in range(EPOCHS)], rel=1e-12)
    assert lrs[0] == pytest.approx(LR0)
    assert all(lr >= LR0 * LRF for lr in lrs)  # the floor min_lr = lr0 * lrf = 1e-5
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # never rises


@pytest.mark.parametrize(("step_size", "gamma"), [(3, 0.1), (2, 0.5), (4, 0.3)])
def test_step_decays_by_gamma_every_step_size_epochs_down_to_the_floor(step_size, gamma):
    schedule = Schedule("step", 40, LRF, step_size, gamma)
    for e in range(1, 40):
        ratio = schedule(e) / schedule(e - 1)
        if e % step_size:
            assert ratio == 1
        else:  # a decay epoch: by gamma, or clipped at the floor
            assert ratio == pytest.approx(gamma) or schedule(e) == LRF
    assert schedule(39) == LRF  # the floor is reached and held


def test_exponential_decays_by_gamma_every_epoch_down_to_the_floor():
    schedule = Schedule("exponential", 10, LRF, gamma=0.5)
    assert [schedule(e) for e in range(10)] == [1, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, LRF, LRF, LRF]


@pytest.mark.parametrize("name", ["linear", "cosine", "step", "exponential"])
def test_beyond_its_length_a_schedule_holds_its_last_epoch_value(name):
    schedule = Schedule(name, 6, LRF, step_size=2)
    assert [schedule(e) for e in range(6, 20)] == [schedule(5)] * 14
    assert schedule(5) >= LRF


def test_bad_schedules_are_refused():
    for args in [("warmup", 10, LRF), ("cosine", 0, LRF), ("cosine", 10, 1.5)]:
        with pytest.raises(ValueError):
            Schedule(*args)


@pytest.mark.parametrize("cos_lr", [True, False])
def test_linear_and_cosine_equal_ultralytics_own_schedules(cos_lr):
    """Ultralytics' own _setup_scheduler on a stand-in trainer gives the reference ``lf``."""
    stock = SimpleNamespace(args=SimpleNamespace(cos_lr=cos_lr, lrf=LRF), epochs=EPOCHS, optimizer=sgd())
    DetectionTrainer._setup_scheduler(stock)
    ours = Schedule("cosine" if cos_lr else "linear", EPOCHS, LRF)
    assert [ours(e) for e in range(EPOCHS)] == [stock.lf(e) for e in range(EPOCHS)]  # bit-identical


def sgd() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR0)


def trainer_with_optimizer(tmp_path, data, training: dict | None = None, iterations: int = 100, **overrides):
    """A SmartCashTrainer with model, optimizer and scheduler built as Ultralytics builds them, without training."""
    trainer = SmartCashTrainer(
        ROOT / "cfg/smartcash_cspdarknet.yaml",
        overrides={
            "model": str(csp_n_yaml(tmp_path, **(training or {}))),
            "data": str(data),
            "epochs": EPOCHS,
            **FAST,
            "project": str(tmp_path),
            "name": "run",
            **overrides,
        },
    )
    trainer.model = trainer.get_model(cfg=trainer.args.model, verbose=False)
    a = trainer.args
    trainer.optimizer = trainer.build_optimizer(
        trainer.model, a.optimizer, a.lr0, a.momentum, a.weight_decay, iterations=iterations
    )
    trainer._setup_scheduler()
    return trainer


def epoch_lrs(trainer, epochs: range) -> list[list[float]]:
    """Step the scheduler as Ultralytics' loop does (``last_epoch = start - 1``, then one step per epoch)."""
    trainer.scheduler.last_epoch = epochs.start - 1
    lrs = []
    for _ in epochs:
        step(trainer.scheduler)
        lrs.append([g["lr"] for g in trainer.optimizer.param_groups])
    return lrs


def step(scheduler):
    """Step without torch's 'scheduler before optimizer' warning, as Ultralytics does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler.step()


@pytest.mark.parametrize(
    ("optimizer", "cls"),
    [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW), ("auto", torch.optim.AdamW)],
)
def test_each_optimizer_name_builds_and_follows_the_schedule(tiny_data, tmp_path, optimizer, cls):
    training = {"scheduler": "step", "step_size": 3, "gamma": 0.1}
    trainer = trainer_with_optimizer(tmp_path, tiny_data, training, optimizer=optimizer, lr0=LR0)
    assert type(trainer.optimizer) is cls
    # auto picks AdamW with lr0 fitted to the class count (17 here) for a short run, and records both in args
    lr0 = round(0.002 * 5 / (4 + 17), 6) if optimizer == "auto" else LR0
    assert trainer.args.lr0 == lr0
    groups = trainer.optimizer.param_groups
    assert [g["param_group"] for g in groups] == ["weight", "bn", "bias"]
    assert [g["weight_decay"] for g in groups] == [0.0005, 0.0, 0.0]
    schedule = Schedule("step", EPOCHS, LRF, 3, 0.1)
    for e, lrs in enumerate(epoch_lrs(trainer, range(EPOCHS))):
        assert lrs == pytest.approx([lr0 * schedule(e)] * 3, rel=1e-12)


def test_auto_on_a_long_run_picks_musgd_and_the_schedule_scales_every_group(tiny_data, tmp_path):
    trainer = trainer_with_optimizer(tmp_path, tiny_data, {"scheduler": "exponential"}, 20000, optimizer="auto")
    assert isinstance(trainer.optimizer, MuSGD) and trainer.args.lr0 == 0.01
    initial = [g["initial_lr"] for g in trainer.optimizer.param_groups]
    assert max(initial) == pytest.approx(3 * 0.01)  # MuSGD's boosted head groups
    for e, lrs in enumerate(epoch_lrs(trainer, range(EPOCHS))):
        assert lrs == pytest.approx([lr * max(0.95**e, LRF) for lr in initial], rel=1e-12)


@pytest.mark.parametrize("cos_lr", [True, False])
def test_no_scheduler_keeps_ultralytics_own(tiny_data, tmp_path, cos_lr):
    trainer = trainer_with_optimizer(tmp_path, tiny_data, cos_lr=cos_lr)
    assert not isinstance(trainer.lf, Schedule)  # Ultralytics' own lambda, from its own _setup_scheduler
    stock = SimpleNamespace(args=trainer.args, epochs=EPOCHS, optimizer=sgd())
    DetectionTrainer._setup_scheduler(stock)
    assert [trainer.lf(e) for e in range(EPOCHS)] == [stock.lf(e) for e in range(EPOCHS)]


def test_no_scheduler_with_a_schedule_length_uses_the_cos_lr_choice(tiny_data, tmp_path):
    trainer = trainer_with_optimizer(tmp_path, tiny_data, {"schedule_epochs": 4}, cos_lr=True)
    assert trainer.lf == Schedule("cosine", 4, LRF)


def test_schedule_epochs_sets_the_length_and_later_epochs_hold_its_last_lr(tiny_data, tmp_path):
    """The contract run extension relies on: a 6-epoch schedule in a 10-epoch run, epochs 7-10 at epoch 6's lr."""
    training = {"scheduler": "linear", "schedule_epochs": 6}
    trainer = trainer_with_optimizer(tmp_path, tiny_data, training, optimizer="sgd", lr0=0.01)
    lrs = [pg0 for pg0, *_ in epoch_lrs(trainer, range(EPOCHS))]
    expected = [0.01 * documented("linear", e, length=6) for e in range(6)]
    assert lrs == pytest.approx(expected + [expected[-1]] * 4, rel=1e-12)
    resumed = [pg0 for pg0, *_ in epoch_lrs(trainer, range(7, EPOCHS))]  # resume at epoch 8: as Ultralytics does
    assert resumed == pytest.approx(lrs[7:], rel=1e-12)


@pytest.mark.parametrize("schedule_epochs", [None, 10])
def test_time_mode_re_setup_rescales_the_schedule_from_the_current_epoch(tiny_data, tmp_path, schedule_epochs):
    """Ultralytics' time mode re-estimates epochs after each epoch, calls _setup_scheduler, sets last_epoch."""
    training = {"scheduler": "cosine", "schedule_epochs": schedule_epochs}
    trainer = trainer_with_optimizer(tmp_path, tiny_data, training, optimizer="sgd", lr0=0.01)
    first = epoch_lrs(trainer, range(3))
    trainer.epochs = 25  # the re-estimate after epoch 3 (index 2), as in BaseTrainer._do_train
    trainer._setup_scheduler()
    trainer.scheduler.last_epoch = 2
    step(trainer.scheduler)  # the next epoch's start
    length = schedule_epochs or 25
    assert [g["initial_lr"] for g in trainer.optimizer.param_groups] == [0.01] * 3  # lr0 survives the re-setup
    assert first[-1][0] == pytest.approx(0.01 * Schedule("cosine", 10, LRF)(2))
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.01 * Schedule("cosine", length, LRF)(3))


def test_lr_table_prints_every_schedule_for_each_warmup(capsys):
    main(["--epochs", "10", "--warmup", "0", "3"])
    out = capsys.readouterr().out
    assert out.count("| epoch | linear | cosine | step (step_size 10, gamma 0.1) |") == 2
    assert "| 10 | 0.000109 | 3.42e-05 | 0.001 | 1e-05 | 0.00063 | 1e-05 |" in out  # after warm-up: same in both
    table = lr_table([Schedule("step", 4, 0.1, 1, 0.5)], lr0=1.0, epochs=4)
    assert table.splitlines()[2:] == ["| 1 | 1 |", "| 2 | 0.5 |", "| 3 | 0.25 |", "| 4 | 0.125 |"]


def test_recorded_lrs_ramp_during_warmup_then_follow_the_schedule():
    lf = Schedule("exponential", 4, LRF, gamma=0.5)
    # 2 warm-up epochs of 10 batches: nw = 20, the end of epoch 1 is iteration 9, of epoch 2 iteration 19
    assert recorded_lrs(lf, 1.0, 4, warmup_epochs=2, batches=10) == pytest.approx([0.45, 0.5 * 19 / 20, 0.25, 0.125])
    bias = recorded_lrs(lf, 1.0, 4, warmup_epochs=2, batches=10, start=0.1)
    assert bias[0] == pytest.approx(0.1 + (1.0 - 0.1) * 9 / 20)
    assert recorded_lrs(lf, 1.0, 4) == [1.0, 0.5, 0.25, 0.125]


@pytest.mark.slow
def test_real_run_records_the_chosen_schedule_in_results_csv(tiny_data, tmp_path):
    """3 epochs of SGD, step schedule (gamma 0.5 per epoch, floor lrf 0.3), one warm-up epoch: lr per group."""
    trainer = SmartCashTrainer(
        ROOT / "cfg/smartcash_cspdarknet.yaml",
        overrides={
            "model": str(csp_n_yaml(tmp_path, scheduler="step", step_size=1, gamma=0.5)),
            "data": str(tiny_data),
            "epochs": 3,
            **FAST,
            "val": False,
            "optimizer": "sgd",
            "lr0": 0.01,
            "lrf": 0.3,
            "warmup_epochs": 1,
            "project": str(tmp_path),
            "name": "run",
        },
    )
    result = trainer.train()
    with open(result.save_dir / "results.csv", newline="") as f:
        rows = [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    assert len(rows) == 3
    nb = len(trainer.train_loader)
    schedule = Schedule("step", 3, 0.3, step_size=1, gamma=0.5)
    assert trainer.lf == schedule
    for i, group in enumerate(trainer.optimizer.param_groups):
        start = trainer.args.warmup_bias_lr if group["param_group"] == "bias" else 0.0
        expected = recorded_lrs(schedule, 0.01, 3, warmup_epochs=1, batches=nb, start=start)
        assert [row[f"lr/pg{i}"] for row in rows] == pytest.approx(expected, rel=1e-5)  # results.csv keeps 6 digits
    assert [row["lr/pg0"] for row in rows[1:]] == pytest.approx([0.005, 0.003], rel=1e-5)  # 0.01 * 0.5, floor 0.3
