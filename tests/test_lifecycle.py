"""Training lifecycle on tiny real runs: kill -9 and resume, SIGINT, stop from a thread, status, validation interval,
named best checkpoints and extending a finished run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, assert_run_files_agree, csp_n_yaml, run_yolo, shared, tree_digest

from smartcash_ultra.engine.checkpoints import keep_last_whole
from smartcash_ultra.engine.trainer import SmartCashTrainer, resume_training

FAST = {"imgsz": 64, "batch": 4, "workers": 0, "plots": False, "exist_ok": True}


def epochs_in(save_dir: Path) -> list[int]:
    return [r["epoch"] for r in json.loads((save_dir / "metrics.json").read_text())["epochs"]]


def ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


TRAIN_SCRIPT = """
import json, sys, time
from pathlib import Path
from smartcash_ultra.engine.trainer import SmartCashTrainer

overrides, marker, at, fail = json.loads(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
held = Path(str(marker) + ".stopping")

def progress(level, current, total, message):
    if level == "batch" and message.startswith(at):
        marker.write_text(message)
    if trainer.get_training_status()["state"] == "stopping" and not held.exists():
        held.write_text("stopping")  # hold the run here a while, so a test can send a second signal meanwhile
        time.sleep(5)

def final_validation(validator):
    if at == "final validation" and not trainer.run_state.in_epoch:  # Ultralytics' validation of best.pt
        marker.write_text(at)
        time.sleep(60)  # hold it, so a test can kill the run meanwhile

def failure(trainer):
    if trainer.epoch + 1 == fail:
        raise RuntimeError(f"injected failure in epoch {fail}")

trainer = SmartCashTrainer(overrides=overrides, progress_callback=progress)
trainer.add_callback("on_val_start", final_validation)
trainer.add_callback("on_train_batch_end", failure)
try:
    trainer.train()
finally:
    print("STATUS", json.dumps({k: trainer.get_training_status()[k] for k in ("state", "epoch", "reason")}))
"""


def start_training(tmp_path: Path, overrides: dict, at: str, fail: int = 0) -> tuple[subprocess.Popen, Path]:
    """Train in a child process that touches a marker file when a batch message starts with ``at``.

    ``at="final validation"``: when the final validation of best.pt starts, which it then holds for a minute.
    ``fail``: the epoch (1-based) whose first training batch raises a RuntimeError. The child prints its final status
    after ``STATUS`` also when ``train()`` raises.
    """
    marker = tmp_path / "marker"
    env = dict(os.environ)
    child = subprocess.Popen(
        [sys.executable, "-c", TRAIN_SCRIPT, json.dumps(overrides), str(marker), at, str(fail)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(marker, child)
    return child, marker


def wait_for(path: Path, child: subprocess.Popen) -> None:
    """Wait until the child process creates ``path``; fail with its output if it ends first."""
    deadline = time.monotonic() + 300
    while not path.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"training ended before writing {path.name}:\n{child.communicate()[1][-3000:]}")
        time.sleep(0.05)


def fresh_markers(tmp_path: Path) -> None:
    for leftover in tmp_path.glob("marker*"):
        leftover.unlink()


def start_run(tiny_data: Path, tmp_path: Path, epochs: int, at: str) -> tuple[subprocess.Popen, Path]:
    """Start a new run of ``epochs`` in ``tmp_path/run`` in a child process (:func:`start_training`)."""
    overrides = {"model": str(csp_n_yaml(tmp_path)), "data": str(tiny_data), "epochs": epochs, **FAST}
    child, _ = start_training(tmp_path, {**overrides, "project": str(tmp_path), "name": "run"}, at)
    return child, tmp_path / "run"


def status_of(out: str) -> dict:
    return json.loads(out.split("STATUS ", 1)[1])


@pytest.mark.slow
def test_sigint_stops_gracefully_a_second_one_forces_and_after_a_kill_9_resume_finishes_the_planned_epochs(
    tiny_data, tmp_path
):
    """One run of 4 epochs, interrupted three ways and resumed: SIGINT (graceful), two SIGINTs, ``kill -9``."""
    child, save_dir = start_run(tiny_data, tmp_path, 4, "epoch 2/4 batch 1/")
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 130, err[-3000:]  # as a shell reports a process SIGINT ended, not 0: not finished
    assert not (save_dir / "train.lock").exists()
    assert status_of(out) == {"state": "stopped", "epoch": 2, "reason": "SIGINT received"}
    assert ckpt(save_dir / "weights/last.pt")["epoch"] == 1
    summary = assert_run_files_agree(save_dir, "stopped", [1, 2])
    assert summary["reason"] == "SIGINT received" and summary["final"] is not None  # all saved, best.pt validated
    assert "stopping at the end of this epoch" in out + err and "exit status 130" in out + err
    before = json.loads((save_dir / "metrics.json").read_text())["epochs"]

    resume = {"resume": str(save_dir / "weights/last.pt")}
    fresh_markers(tmp_path)
    child, marker = start_training(tmp_path, resume, "epoch 3/4 batch 1/")
    child.send_signal(signal.SIGINT)
    wait_for(Path(str(marker) + ".stopping"), child)  # the first one was handled: the run is stopping
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 130 and "second SIGINT: stopping now" in out + err, err[-3000:]
    assert status_of(out)["state"] == "stopped"
    assert ckpt(save_dir / "weights/last.pt")["epoch"] == 1  # nothing saved
    assert_run_files_agree(save_dir, "stopped", [1, 2], session=[])

    fresh_markers(tmp_path)
    child, _ = start_training(tmp_path, resume, "epoch 3/4 batch 1/")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    assert ckpt(save_dir / "weights/last.pt")["epoch"] == 1  # epochs 1 and 2 were saved; 3 was interrupted
    assert epochs_in(save_dir) == [1, 2]

    trainer = SmartCashTrainer.resume(save_dir / "weights/last.pt")
    result = trainer.train()
    assert trainer.get_training_status()["state"] == "completed"
    assert_run_files_agree(save_dir, "completed", [1, 2, 3, 4], session=[3, 4])  # no epoch lost or repeated
    assert json.loads((save_dir / "metrics.json").read_text())["epochs"][:2] == before
    assert result.last == save_dir / "weights/last.pt" and ckpt(result.last)["epoch"] == 3
    history = json.loads((save_dir / "early_stopping.json").read_text())["history"]
    assert [e for e, _ in history] == [1, 2, 3, 4]  # early-stopping state carried across the interruptions


@pytest.mark.slow
def test_sigterm_exits_143_a_failure_exits_1_and_the_files_agree_after_each(tiny_data, tmp_path):
    child, save_dir = start_run(tiny_data, tmp_path, 3, "epoch 2/3 batch 1/")
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 143, err[-3000:]
    assert status_of(out) == {"state": "stopped", "epoch": 2, "reason": "SIGTERM received"}
    assert_run_files_agree(save_dir, "stopped", [1, 2])
    assert not (save_dir / "train.lock").exists()  # released at every ending

    fresh_markers(tmp_path)
    resume = {"resume": str(save_dir / "weights/last.pt")}
    child, _ = start_training(tmp_path, resume, "epoch 3/3 batch 1/", fail=3)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 1 and "RuntimeError: injected failure in epoch 3" in err, err[-3000:]
    assert status_of(out)["state"] == "failed"
    summary = assert_run_files_agree(save_dir, "failed", [1, 2], session=[])
    assert not (save_dir / "train.lock").exists()
    assert summary["reason"] == "RuntimeError: injected failure in epoch 3"
    events = [json.loads(line) for line in (save_dir / "events.jsonl").read_text().splitlines()]
    (error,) = [e for e in events if e["event"] == "error"]
    assert (error["context"]["stage"], error["context"]["epoch"], error["context"]["batch"]) == ("train", 3, 1)

    SmartCashTrainer.resume(save_dir / "weights/last.pt").train()
    assert_run_files_agree(save_dir, "completed", [1, 2, 3], session=[3])


@pytest.mark.slow
def test_yolo_train_exit_codes_say_how_the_run_ended(cspdarknet_cli_run, tiny_data, tmp_path):
    """``yolo train``: 0 for a finished run, 130 after a Ctrl-C that stopped it (everything saved)."""
    args = [f"model={csp_n_yaml(tmp_path)}", f"data={tiny_data}", "imgsz=64", "batch=4", "workers=0", "plots=False"]
    done, save_dir = cspdarknet_cli_run  # the session's finished `yolo train` run (conftest)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_run_files_agree(save_dir, "completed", [1])

    yolo = Path(sys.executable).with_name("yolo")
    cmd = [str(yolo), "train", *args, "epochs=3", f"project={tmp_path}", "name=stopped"]
    child = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    events = tmp_path / "stopped/events.jsonl"
    deadline = time.monotonic() + 300
    while not (events.exists() and '"message": "epoch 2/3 batch 1/' in events.read_text()):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()[0][-3000:]
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    out = child.communicate(timeout=300)[0]
    assert child.returncode == 130, out[-3000:]
    assert "Traceback" not in out  # a stop, not a crash
    assert_run_files_agree(tmp_path / "stopped", "stopped", [1, 2])
    last = tmp_path / "stopped/weights/last.pt"
    assert ckpt(last)["epoch"] == 1 and f"yolo train resume model={last}" in out


@pytest.mark.slow
def test_a_resume_drops_the_results_rows_after_its_checkpoint(tiny_data, tmp_path):
    """Resuming from an older checkpoint (here the epoch-1 copy save_period keeps) runs epoch 2 again, recorded once."""
    overrides = {"model": str(csp_n_yaml(tmp_path)), "data": str(tiny_data), "epochs": 2, "save_period": 1, **FAST}
    SmartCashTrainer(overrides={**overrides, "project": str(tmp_path), "name": "run"}).train()
    save_dir = tmp_path / "run"
    assert_run_files_agree(save_dir, "completed", [1, 2])
    SmartCashTrainer.resume(save_dir / "weights/epoch0.pt").train()
    assert_run_files_agree(save_dir, "completed", [1, 2], session=[2])


@pytest.fixture
def finished(cspdarknet_run) -> Path:
    """A finished one-epoch run (its save dir), for tests that only read it: the session's (conftest)."""
    return cspdarknet_run.result.save_dir


@pytest.mark.slow
def test_an_unreadable_checkpoint_is_a_value_error_naming_it(finished, tmp_path):
    whole = (finished / "weights/last.pt").read_bytes()
    bad = {
        "truncated.pt": whole[: len(whole) // 2],  # a copy cut short
        "random.pt": bytes(range(256)) * 8,
        "empty.pt": b"",
    }
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"epoch": 3, "optimizer": {}}, tmp_path / "foreign.pt")
    for name in [*bad, "tensor.pt", "foreign.pt"]:
        path = tmp_path / name
        for call, kwargs in ((SmartCashTrainer.resume, {}), (resume_training, {"additional_epochs": 1})):
            with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: not a training checkpoint"):
                call(path, **kwargs)


@pytest.mark.slow
def test_a_kill_9_during_the_final_validation_leaves_last_pt_whole_and_the_run_extends(tiny_data, tmp_path):
    child, save_dir = start_run(tiny_data, tmp_path, 2, "final validation")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    last = ckpt(save_dir / "weights/last.pt")
    assert last["epoch"] == 1 and last["optimizer"] is not None and last["ema"] is not None  # whole, resumable
    assert ckpt(save_dir / "weights/best.pt")["optimizer"] is None  # stripped before the validation, and whole

    result = resume_training(save_dir / "weights/last.pt", additional_epochs=1)
    assert ckpt(result.last)["epoch"] == 2 and ckpt(result.last)["optimizer"] is not None
    assert epochs_in(save_dir) == [1, 2, 3]


@pytest.mark.slow
def test_the_final_strip_never_rewrites_last_pt_and_strips_best_pt_atomically(finished, tmp_path, monkeypatch):
    import ultralytics.engine.trainer as engine

    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    for path in (last, best):
        path.write_bytes((finished / "weights/last.pt").read_bytes())  # two whole checkpoints
    whole = last.read_bytes()
    stock = engine.strip_optimizer
    with keep_last_whole(last):
        assert engine.strip_optimizer(last)["train_results"] == ckpt(last)["train_results"]  # what final_eval reads
        assert last.read_bytes() == whole

        def crash(fd):
            raise OSError("killed mid-strip")

        with monkeypatch.context() as m:
            m.setattr("os.fsync", crash)
            with pytest.raises(OSError, match="killed mid-strip"):
                engine.strip_optimizer(best, updates={"train_results": {}})
        assert best.read_bytes() == whole and sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]
        engine.strip_optimizer(best, updates={"train_results": {}})
    assert ckpt(best)["optimizer"] is None and ckpt(last)["optimizer"] is not None
    assert engine.strip_optimizer is stock  # stock trainers strip as before


@pytest.mark.slow
def test_yolo_train_resume_from_best_pt_stops_naming_it_and_pointing_to_last_pt(finished, tmp_path):
    best, last = finished / "weights/best.pt", finished / "weights/last.pt"
    project = tmp_path / "project"  # where a new run would go (Ultralytics starts one instead of resuming)
    out = run_yolo("train", "resume", f"model={best}", f"project={project}", cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    assert f"{best}: holds no optimizer state (a stripped checkpoint such as best.pt); resume from {last}" in text
    assert "Traceback" not in text  # a known cause: one line
    assert "coco8" not in text and not project.exists()


@pytest.mark.slow
def test_resume_true_on_a_smartcash_model_refuses_what_cannot_be_resumed(finished, tmp_path):
    from ultralytics import YOLO

    best, last = finished / "weights/best.pt", finished / "weights/last.pt"
    with pytest.raises(ValueError, match=f"^{re.escape(str(best))}: holds no optimizer state"):
        YOLO(best).train(resume=True, project=str(tmp_path))
    with pytest.raises(ValueError, match=f"^{re.escape(str(last))}: the run finished its 1 epochs"):
        YOLO(last).train(resume=True, project=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_stop_from_another_thread_and_status_transitions(tiny_data, tmp_path):
    overrides = {"model": str(csp_n_yaml(tmp_path)), "data": str(tiny_data), "epochs": 3, **FAST}
    trainer = SmartCashTrainer(overrides={**overrides, "project": str(tmp_path), "name": "ui"})
    assert trainer.get_training_status()["state"] == "idle"
    seen = []

    def ui():
        while (status := trainer.get_training_status())["state"] not in {"stopped", "completed", "failed"}:
            seen.append(status)
            if status["epoch"] == 2 and status["batch"] >= 1:
                trainer.stop_training("stop button")
            time.sleep(0.005)
        seen.append(status)

    thread = threading.Thread(target=ui)
    thread.start()
    result = trainer.train()  # a stop the program asked for: train() returns
    thread.join()
    assert result.last == tmp_path / "ui/weights/last.pt"
    assert_run_files_agree(tmp_path / "ui", "stopped", [1, 2])
    states = [s["state"] for s in seen if s["state"] != "idle"]  # the thread may look before train() starts
    assert states[0] == "running" and "stopping" in states and states[-1] == "stopped"
    assert states.index("stopping") > states.index("running")  # idle -> running -> stopping -> stopped
    final = seen[-1]
    assert final["epoch"] == 2 and final["reason"] == "stop button" and final["elapsed"] > 0
    assert final["best_epoch"] in {1, 2} and "metrics/mAP50(B)" in final["last_metrics"]
    assert any(s["eta"] is not None and s["eta"] > 0 for s in seen if s["epoch"] == 2)
    assert not trainer.stop_training("again")  # already requested


@pytest.mark.slow
def test_validation_interval_validates_every_n_epochs_and_the_last(tiny_data, tmp_path):
    model = csp_n_yaml(tmp_path, val_interval=2)
    overrides = {"model": str(model), "data": str(tiny_data), "epochs": 5, **FAST}
    trainer = SmartCashTrainer(overrides={**overrides, "project": str(tmp_path), "name": "interval"})
    trainer.train()
    rows = json.loads((tmp_path / "interval/metrics.json").read_text())["epochs"]
    assert [r["validated"] for r in rows] == [False, True, False, True, True]
    assert all(r["fitness"] is None for r in rows if not r["validated"])
    assert [e for e, _ in trainer.stopper.history] == [2, 4, 5]  # early stopping counts validated epochs only
    assert ckpt(tmp_path / "interval/weights/best.pt")["train_metrics"]["fitness"] is not None


@pytest.mark.slow
def test_named_best_checkpoint_never_overwrites_another_run(cspdarknet_run, tiny_data, tmp_path):
    overrides = {"model": str(csp_n_yaml(tmp_path)), "data": str(tiny_data), "epochs": 1, **FAST}
    overrides |= {"project": str(tmp_path), "name": "named"}
    shutil.copytree(cspdarknet_run.result.save_dir, tmp_path / "named")  # the first run into the folder
    weights = tmp_path / "named/weights"
    (first,) = weights.glob("best_cspdarknet_n_2*.pt")  # best_<backbone>_<YYYYMMDD>.pt (a run may cross midnight)
    assert len(first.stem.rsplit("_", 1)[1]) == 8
    assert first.read_bytes() == (weights / "best.pt").read_bytes()
    kept = first.read_bytes()
    SmartCashTrainer(overrides=overrides).train()  # a new run into the same folder
    second = weights / f"{first.stem}_2.pt"
    assert second.exists() and first.read_bytes() == kept


@pytest.mark.slow
def test_extending_a_finished_run_keeps_optimizer_ema_and_the_final_learning_rate(tiny_data, tmp_path):
    overrides = {"model": str(csp_n_yaml(tmp_path)), "data": str(tiny_data), "epochs": 2, "warmup_epochs": 0, **FAST}
    overrides |= {"project": str(tmp_path), "name": "extend", "nbs": FAST["batch"]}  # an optimizer step every batch
    SmartCashTrainer(overrides=overrides).train()
    last = tmp_path / "extend/weights/last.pt"
    finished = ckpt(last)
    assert finished["optimizer"] is not None and finished["epoch"] == 1  # kept whole (Ultralytics strips it)
    assert ckpt(tmp_path / "extend/weights/best.pt")["optimizer"] is None  # the deployable one is stripped
    with pytest.raises(ValueError, match="finished its 2 epochs; pass additional_epochs"):
        SmartCashTrainer.resume(last)
    with pytest.raises(ValueError, match="holds no optimizer state"):
        SmartCashTrainer.resume(tmp_path / "extend/weights/best.pt", additional_epochs=1)

    result = resume_training(last, additional_epochs=2)
    extended = ckpt(result.last)
    assert extended["epoch"] == 3 and extended["updates"] > finished["updates"]  # EMA went on counting
    assert (finished["updates"], extended["updates"]) == (8, 16)  # 4 steps per epoch; a fresh EMA would count 8
    steps = [float(c["optimizer"]["state"][0]["step"]) for c in (finished, extended)]
    assert steps == [8, 16]  # the optimizer state went on too; a fresh optimizer would be at step 8
    rows = json.loads((tmp_path / "extend/metrics.json").read_text())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[2]["lr/pg0"] == pytest.approx(rows[1]["lr/pg0"]) == pytest.approx(rows[3]["lr/pg0"])
    assert extended["ema"].yaml["smartcash"]["training"]["schedule_epochs"] == 2


@pytest.fixture(scope="module")
def stopped_run(tiny_data, tmp_path_factory) -> Iterator[Path]:
    """A 2-epoch CSPDarknet-n run stopped after epoch 1 (resumable), its save dir: tests copy it, never write in it."""
    project = tmp_path_factory.mktemp("stopped_run")
    overrides = {"model": str(csp_n_yaml(project)), "data": str(tiny_data), "epochs": 2, **FAST}
    trainer = SmartCashTrainer(overrides={**overrides, "project": str(project), "name": "run"})
    trainer.add_callback("on_train_epoch_end", lambda tr: tr.stop_training("resumable") if tr.epoch == 0 else 0)
    trainer.train()
    assert ckpt(project / "run/weights/last.pt")["epoch"] == 0
    yield from shared(project / "run", project / "run")


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """Make ``folder`` read-only for this process: no write bits, and immutable for root, whom modes do not stop."""
    mode, immutable = folder.stat().st_mode, False
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):  # root
            try:
                immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
            except FileNotFoundError:
                pass
            if not immutable:
                pytest.skip("root writes into any folder here and chattr +i is not available")
        yield
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(mode)


@pytest.mark.slow
def test_yolo_train_resume_of_a_copied_run_writes_into_the_copy_never_the_original(stopped_run, tmp_path):
    """The run's folder is where its checkpoint lies, not the ``save_dir`` recorded in it (the original's)."""
    copy = tmp_path / "backup/run"
    shutil.copytree(stopped_run, copy)
    before = tree_digest(stopped_run)
    out = run_yolo("train", "resume", f"model={copy / 'weights/last.pt'}", cwd=tmp_path)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert tree_digest(stopped_run) == before  # last.pt, best.pt, results.csv, args.yaml: byte-identical
    assert_run_files_agree(copy, "completed", [1, 2], session=[2])
    assert ckpt(copy / "weights/last.pt")["epoch"] == 1
    assert ckpt(copy / "weights/last.pt")["train_args"]["save_dir"] == str(copy)  # the next resume starts here
    assert yaml.safe_load((copy / "args.yaml").read_text())["save_dir"] == str(copy)


@pytest.mark.slow
def test_resume_and_extend_of_a_copied_run_write_into_the_copy_never_the_original(
    stopped_run, cspdarknet_run, tmp_path
):
    """``SmartCashTrainer.resume`` (an interrupted run) and ``resume_training`` (extending a finished one)."""
    originals = [stopped_run, cspdarknet_run.result.save_dir]
    before = [tree_digest(run) for run in originals]
    resumed, extended = tmp_path / "resumed/run", tmp_path / "extended/cspdarknet"
    shutil.copytree(stopped_run, resumed)
    shutil.copytree(cspdarknet_run.result.save_dir, extended)

    result = SmartCashTrainer.resume(resumed / "weights/last.pt").train()
    assert result.save_dir == resumed and result.last == resumed / "weights/last.pt"
    assert_run_files_agree(resumed, "completed", [1, 2], session=[2])
    result = resume_training(extended / "weights/last.pt", additional_epochs=1)
    assert result.save_dir == extended and ckpt(result.last)["epoch"] == 1
    assert_run_files_agree(extended, "completed", [1, 2], session=[2])
    assert [tree_digest(run) for run in originals] == before


@pytest.mark.slow
def test_a_checkpoint_outside_a_runs_weights_folder_is_refused_and_a_link_into_one_resumes_there(stopped_run, tmp_path):
    loose = tmp_path / "loose/last.pt"
    loose.parent.mkdir()
    loose.write_bytes((stopped_run / "weights/last.pt").read_bytes())
    before = tree_digest(stopped_run)
    for call in (SmartCashTrainer.resume, resume_training):
        with pytest.raises(ValueError, match=rf"^{re.escape(str(loose))}: not in a run's weights/ folder"):
            call(loose)
    assert os.listdir(loose.parent) == ["last.pt"] and tree_digest(stopped_run) == before

    copy = tmp_path / "copy"
    shutil.copytree(stopped_run, copy)
    link = tmp_path / "link.pt"
    link.symlink_to(copy / "weights/last.pt")
    trainer = SmartCashTrainer(overrides={"resume": str(link)})  # the run folder is the file's, not the link's
    assert trainer.save_dir == copy and (copy / "args.yaml").read_text() != (stopped_run / "args.yaml").read_text()
    assert tree_digest(stopped_run) == before


@pytest.mark.slow
def test_resuming_a_read_only_run_is_refused_naming_the_folder_before_anything_is_written(stopped_run, tmp_path):
    copy = tmp_path / "readonly/run"
    shutil.copytree(stopped_run, copy)
    before = tree_digest(copy), tree_digest(stopped_run)
    last = copy / "weights/last.pt"
    for folder in (copy, copy / "weights"):
        with read_only(folder), pytest.raises(PermissionError, match=rf"^{re.escape(str(folder))}: read-only"):
            SmartCashTrainer.resume(last)
    with read_only(copy):
        out = run_yolo("train", "resume", f"model={last}", cwd=tmp_path)
    assert out.returncode != 0 and f"{copy}: read-only" in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]
    assert out.stderr.strip().splitlines()[-1].startswith(f"yolo train: error: {copy}: read-only")
    assert "Traceback" not in out.stderr
    assert (tree_digest(copy), tree_digest(stopped_run)) == before


def test_a_stock_model_resumed_on_arrays_takes_its_checkpoints_run_folder_too(tiny_data, tmp_path):
    """``SmartCashDataTrainer`` (a stock model on ``.npy`` data) takes the run folder as the SmartCash trainer does."""
    from ultralytics import YOLO

    from smartcash_ultra.engine.trainer import SmartCashDataTrainer

    recorded, run = tmp_path / "recorded", tmp_path / "copy"
    (run / "weights").mkdir(parents=True)
    train_args = {"model": "yolov8n.yaml", "data": str(tiny_data), "epochs": 2, "imgsz": 64, "save_dir": str(recorded)}
    checkpoint = {"model": YOLO("yolov8n.yaml").model, "epoch": 0, "optimizer": {}, "train_args": train_args}
    torch.save(checkpoint, run / "weights/last.pt")
    trainer = SmartCashDataTrainer(overrides={"resume": str(run / "weights/last.pt")})
    assert trainer.save_dir == run and (run / "args.yaml").is_file() and not recorded.exists()


@pytest.mark.slow
def test_a_resume_refuses_a_save_dir_elsewhere_and_ddp_workers_rebuild_it_in_the_same_folder(stopped_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(stopped_run, copy)
    last = copy / "weights/last.pt"
    with pytest.raises(ValueError, match=rf"^{re.escape(str(last))}: a resume continues the run in its own folder"):
        SmartCashTrainer.resume(last, overrides={"save_dir": str(tmp_path / "elsewhere")})
    assert sorted(os.listdir(tmp_path)) == ["copy"]
    trainer = SmartCashTrainer.resume(last, overrides={"save_dir": str(copy)})  # its own folder: as asked
    worker = SmartCashTrainer(overrides=vars(trainer.args))  # what Ultralytics' DDP launcher hands each worker
    assert trainer.save_dir == worker.save_dir == copy


@pytest.mark.slow
def test_a_live_training_holds_its_run_folder_and_a_killed_ones_lock_is_taken_over(tiny_data, tmp_path, log_lines):
    """A second training or a resume into a folder a live training holds is refused; after a kill -9 it is not."""
    child, save_dir = start_run(tiny_data, tmp_path, 2, "final validation")  # alive, holding its final validation
    before = tree_digest(save_dir)
    again = {"model": str(csp_n_yaml(tmp_path / "again")), "data": str(tiny_data), "epochs": 1, **FAST}
    busy = rf"^{re.escape(str(save_dir))}: another training holds this run folder \(pid {child.pid} on "
    with pytest.raises(RuntimeError, match=busy):  # exist_ok=True: the same project/name
        SmartCashTrainer(overrides={**again, "project": str(tmp_path), "name": "run"})
    with pytest.raises(RuntimeError, match=busy):
        resume_training(save_dir / "weights/last.pt", additional_epochs=1)
    assert tree_digest(save_dir) == before  # neither args.yaml nor results.csv touched
    lock = save_dir / "train.lock"
    assert json.loads(lock.read_text())["pid"] == child.pid

    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert json.loads(lock.read_text())["pid"] == child.pid  # a stale lock stays
    result = resume_training(save_dir / "weights/last.pt", additional_epochs=1)
    assert any(f"taking over the run folder from pid {child.pid}" in line for line in log_lines)
    assert ckpt(result.last)["epoch"] == 2 and epochs_in(save_dir) == [1, 2, 3] and not lock.exists()


def test_a_run_folder_claim_is_shared_by_the_trainers_of_a_process_and_goes_with_the_last(tmp_path, monkeypatch):
    import gc

    from smartcash_ultra.engine.checkpoints import claim_run_folder

    class Holder:
        pass

    run, first, second = tmp_path / "run", Holder(), Holder()
    release_first = claim_run_folder(run, first)
    claim_run_folder(run, second)  # a second trainer of this process into it shares the claim
    assert json.loads((run / "train.lock").read_text())["pid"] == os.getpid()
    release_first()
    release_first()  # idempotent: the second trainer still holds it
    assert os.listdir(run) == ["train.lock"]
    del second  # a trainer that is never trained, collected: the last one
    gc.collect()
    assert os.listdir(run) == []

    (run / "train.lock").write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere", "token": "t"}))
    with pytest.raises(RuntimeError, match="pid .* on elsewhere"):  # another host: nothing here can tell; kept
        claim_run_folder(run, Holder())
    (run / "train.lock").write_text("garbled")
    holder = Holder()
    claim_run_folder(run, holder)()  # unreadable: its owner is unknown, taken over; then released
    assert os.listdir(run) == []

    def no_hard_links(src, dst):
        raise PermissionError(1, "Operation not permitted")  # as on a FUSE mount without hard links

    monkeypatch.setattr(os, "link", no_hard_links)
    release = claim_run_folder(run, holder)
    assert json.loads((run / "train.lock").read_text())["pid"] == os.getpid() and os.listdir(run) == ["train.lock"]
    (run / "train.lock").write_text(json.dumps({"pid": os.getppid(), "host": "elsewhere", "token": "t"}))
    release()  # not this process's lock any more: left alone
    assert os.listdir(run) == ["train.lock"]


def data_yaml_of(tiny_data: Path, path: Path, **changes) -> Path:
    """Write a data YAML for the tiny tree at ``path``, with ``changes`` over its keys."""
    d = {**yaml.safe_load(tiny_data.read_text()), "path": str(tiny_data.parent), **changes}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_resume_on_other_classes_is_refused_naming_both_yamls_and_on_the_same_ones_records_the_new_data(
    stopped_run, tiny_data, tmp_path
):
    copy = tmp_path / "copy"
    shutil.copytree(stopped_run, copy)
    last, before = copy / "weights/last.pt", tree_digest(copy)
    names = yaml.safe_load(tiny_data.read_text())["names"]
    other = data_yaml_of(tiny_data, tmp_path / "other/data.yaml", nc=18, names={**names, 17: "l3_extra"})
    renamed = data_yaml_of(tiny_data, tmp_path / "renamed/data.yaml", names={**names, 16: "thread"})
    for data, shown in ((other, "18 classes"), (renamed, "other class names")):
        message = rf"^{re.escape(str(last))}: the run trained on {re.escape(str(tiny_data))} \(17 classes\); "
        with pytest.raises(ValueError, match=message + re.escape(f"data={data} has {shown}")) as refused:
            SmartCashTrainer.resume(last, overrides={"data": str(data)})
        assert f"yolo train model={last} data={data}" in str(refused.value)  # the way out: a new run from it
    assert tree_digest(copy) == before

    moved = data_yaml_of(tiny_data, tmp_path / "moved/data.yaml")  # the same classes: the dataset moved
    SmartCashTrainer.resume(last, overrides={"data": str(moved)}).train()
    assert json.loads((copy / "metrics.json").read_text())["run"]["data"] == str(moved)
    assert ckpt(last)["train_args"]["data"] == str(moved)


@pytest.mark.slow
def test_yolo_prints_a_known_error_as_one_line_and_python_gets_the_exception(
    stopped_run, finished, tiny_data, tmp_path
):
    """Each cause the plugin knows: one line naming the file and the way out, exit 1, no traceback."""
    from ultralytics import YOLO

    runs = {name: tmp_path / name for name in ("empty", "truncated", "finished", "classes", "busy")}
    for name, run in runs.items():
        shutil.copytree(finished if name == "finished" else stopped_run, run)
    whole = (runs["empty"] / "weights/last.pt").read_bytes()
    (runs["empty"] / "weights/last.pt").write_bytes(b"")
    (runs["truncated"] / "weights/last.pt").write_bytes(whole[: len(whole) // 2])
    other = data_yaml_of(tiny_data, tmp_path / "other/data.yaml", nc=18, names={i: f"c{i}" for i in range(18)})
    short = data_yaml_of(tiny_data, tmp_path / "short/data.yaml", nc=5, names={i: f"c{i}" for i in range(5)})
    deep = tmp_path / "deep.yaml"
    deep.write_text(f"path: {tiny_data.parent}\ntrain: train/images\nval: valid/images\nx: {'[' * 5000}{']' * 5000}\n")
    owner = subprocess.Popen(["sleep", "120"])  # a live process that is none of the yolo command's ancestors
    lock = {"pid": owner.pid, "host": socket.gethostname(), "token": "t", "started": "now"}
    (runs["busy"] / "train.lock").write_text(json.dumps(lock))
    fast = [f"{k}={v}" for k, v in {**FAST, "epochs": 1, "project": tmp_path / "new"}.items()]
    model = f"model={csp_n_yaml(tmp_path / 'model')}"
    cases = {  # the yolo arguments -> what the one line says after "yolo train: error: "
        "empty": (["resume", f"model={runs['empty']}/weights/last.pt"], "not a training checkpoint"),
        "truncated": (["resume", f"model={runs['truncated']}/weights/last.pt"], "a truncated or damaged copy"),
        "finished": (["resume", f"model={runs['finished']}/weights/last.pt"], "pass additional_epochs"),
        "classes": (["resume", f"model={runs['classes']}/weights/last.pt", f"data={other}"], "yolo train model="),
        "busy": (["resume", f"model={runs['busy']}/weights/last.pt"], "another training holds this run folder"),
        "short": (["cfg=smartcash_cspdarknet.yaml", model, f"data={short}", *fast], "'names' is probably incomplete"),
        "offline": (["cfg=smartcash_effb4.yaml", f"data={tiny_data}", *fast], "smartcash.backbone_weights: null"),
        "pretrained": ([model, f"data={tiny_data}", "pretrained=b4.safetensors", *fast], "backbone_weights: <file>"),
        "missing": ([model, f"data={tmp_path / 'missing.yaml'}", *fast], "does not exist"),
        "deep": ([model, f"data={deep}", *fast], "nesting depth"),
    }
    try:
        for name, (args, way_out) in cases.items():
            out = run_yolo("train", *args, cwd=tmp_path, env={"HF_HOME": str(tmp_path / "empty_hf_home")})
            text = out.stdout + out.stderr
            last = out.stderr[out.stderr.rfind("\nyolo train: error: ") + 1 :]  # the message, with its own lines
            assert out.returncode == 1 and "Traceback" not in text, (name, text[-3000:])
            assert last.startswith("yolo train: error: ") and way_out in last, (name, last)
            assert text.count(way_out) == 1, (name, text[-3000:])  # one message, not a log line repeating it
            named = {"short": short, "offline": "efficientnet_b4", "pretrained": "b4.safetensors", "deep": deep}.get(
                name, runs.get(name, tmp_path / "missing.yaml")
            )
            assert str(named) in last, (name, last)
    finally:
        owner.kill()
        owner.wait()
    with pytest.raises(TypeError, match=f"^{re.escape(str(runs['empty']))}/weights/last.pt: not a training"):
        YOLO(runs["empty"] / "weights/last.pt")  # a TypeError as Ultralytics raises, naming the file
    out = run_yolo("train", "model=no_such_model.yaml", cwd=tmp_path)  # no cause the plugin knows: its traceback
    assert out.returncode == 1 and "Traceback" in out.stderr


@pytest.mark.slow
def test_a_stop_in_the_middle_of_an_epoch_finishes_it_and_a_resume_starts_at_the_next(tiny_data, tmp_path):
    """No partial epoch is ever recorded as done: the stop takes effect once the epoch's batches have all run."""
    overrides = {"model": str(csp_n_yaml(tmp_path)), "data": str(tiny_data), "epochs": 3, **FAST}
    trainer = SmartCashTrainer(overrides={**overrides, "project": str(tmp_path), "name": "run"})
    ran = []

    def stop_in_epoch_2(tr):
        if tr.epoch == 1:
            ran.append(tr.run_state.batch)
            tr.stop_training("stop button")  # after its first batch, as a UI's stop button would

    trainer.add_callback("on_train_batch_end", stop_in_epoch_2)
    trainer.train()
    assert ran == list(range(1, len(trainer.train_loader) + 1))  # every batch of epoch 2 ran
    save_dir = tmp_path / "run"
    assert trainer.get_training_status()["state"] == "stopped" and ckpt(save_dir / "weights/last.pt")["epoch"] == 1
    assert_run_files_agree(save_dir, "stopped", [1, 2])
    SmartCashTrainer.resume(save_dir / "weights/last.pt").train()
    assert_run_files_agree(save_dir, "completed", [1, 2, 3], session=[3])


@pytest.mark.slow
def test_yolo_train_resume_with_more_epochs_extends_a_finished_run_with_the_checks_of_the_python_call(
    finished, tmp_path
):
    """``epochs=N`` on ``yolo train resume`` plans N epochs in all: ``resume_training(last, additional_epochs=...)``."""
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    last = copy / "weights/last.pt"
    out = run_yolo("train", "resume", f"model={last}", "epochs=1", cwd=tmp_path)  # adds none: refused, as in Python
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    refused = out.stderr.splitlines()[-1]
    assert f"{last}: the run finished its 1 epochs; pass additional_epochs" in refused
    assert f"on the command line: yolo train resume model={last} epochs=M, M > 1" in refused
    out = run_yolo("train", "resume", f"model={copy / 'weights/best.pt'}", "epochs=3", cwd=tmp_path)
    assert out.returncode == 1 and f"resume from {last}" in out.stderr.splitlines()[-1]  # stripped: refused too

    out = run_yolo("train", "resume", f"model={last}", "epochs=3", cwd=tmp_path)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    extended = ckpt(last)
    assert extended["epoch"] == 2 and extended["optimizer"] is not None and extended["train_args"]["epochs"] == 3
    assert extended["ema"].yaml["smartcash"]["training"]["schedule_epochs"] == 1  # the LR schedule keeps its length
    assert_run_files_agree(copy, "completed", [1, 2, 3], session=[2, 3])
