"""Rows of the matrix about configs, checkpoints and training runs (NaN, full disk, dead workers, Ctrl-C)."""

from __future__ import annotations

import datetime as dt
import errno
import io
import multiprocessing
import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

import torch
import yaml

from tests.reliability.builders import (
    SHAPES,
    class_folders,
    fit_args,
    folder_data,
    one_error,
    succeeded,
    truncate,
    write_picture,
)
from tests.reliability.registry import Ctx, row

# --- configs -------------------------------------------------------------------------------------------------


def _shapes_fit(ctx: Ctx, *extra: str) -> list[str]:
    return fit_args(ctx.tmp_path, [], *extra, model=SHAPES)


@row("unknown-key")
def _(ctx: Ctx) -> None:
    message = one_error(ctx.cli(*_shapes_fit(ctx, "--trainer.max_epoch", "1")))
    assert message == "unknown key 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?)", message


@row("wrong-type")
def _(ctx: Ctx) -> None:
    message = one_error(ctx.cli(*_shapes_fit(ctx, "--trainer.max_epochs", "many")))
    assert "trainer.max_epochs" in message and "many" in message, message


@row("max-epochs-0")
def _(ctx: Ctx) -> None:
    message = one_error(ctx.cli(*_shapes_fit(ctx, "--trainer.max_epochs", "0")))
    assert message == "trainer.max_epochs is 0: fit would train nothing; set it to 1 or more"


# --- checkpoints ---------------------------------------------------------------------------------------------


def _resume_cnn9(ctx: Ctx, ckpt: Path, classes: int = 2) -> str:
    root = class_folders(ctx.tmp_path / "data")
    if classes == 3:
        for k in range(4):
            write_picture(root / "meningioma" / f"img{k}.png", seed=300 + k)
    args = fit_args(ctx.tmp_path, folder_data(root), "--trainer.max_epochs", "3", "--ckpt_path", str(ckpt))
    return one_error(ctx.cli(*args, cwd=ctx.tmp_path))


def _cut_run(ctx: Ctx) -> tuple[Path, Path]:
    """A copy of a trained run folder whose ``last.ckpt`` is cut in half: (run folder, checkpoint)."""
    run_dir = Path(shutil.copytree(ctx.fixture("run_cnn9"), ctx.tmp_path / "cut_run"))
    return run_dir, truncate(run_dir / "checkpoints" / "last.ckpt")


@row("truncated-checkpoint")
def _(ctx: Ctx) -> None:
    run_dir, ckpt = _cut_run(ctx)
    message = _resume_cnn9(ctx, run_dir)
    assert message.startswith(f"--ckpt_path {ckpt}: not a readable checkpoint (truncated or corrupt: "), message
    assert not (ctx.tmp_path / "runs").exists(), "a run folder was made for a command that could not start"


@row("truncated-checkpoint-file")
def _(ctx: Ctx) -> None:
    _, ckpt = _cut_run(ctx)
    message = _resume_cnn9(ctx, ckpt)
    assert message.startswith(f"--ckpt_path {ckpt}: not a readable checkpoint (truncated or corrupt: "), message


@row("checkpoint-of-another-model")
def _(ctx: Ctx) -> None:
    run_dir = ctx.fixture("run_small_cnn")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    message = _resume_cnn9(ctx, run_dir)
    assert message.startswith(f"--ckpt_path {ckpt}: a checkpoint of another model: "), message
    assert "of ClassificationTask are missing from it" in message and "resume with the config" in message


@row("checkpoint-other-classes")
def _(ctx: Ctx) -> None:
    run_dir = ctx.fixture("run_cnn9_3")
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    message = _resume_cnn9(ctx, run_dir, classes=2)
    assert re.match(
        rf"--ckpt_path {re.escape(str(ckpt))}: weight \S+ has shape \[3(, \d+)*\] in the checkpoint but "
        r"\[2(, \d+)*\] in this model .*another number of classes",
        message,
    ), message


# --- runs ----------------------------------------------------------------------------------------------------


def _only_run(ctx: Ctx, name: str = "default") -> Path:
    (run_dir,) = (ctx.tmp_path / "runs" / name).iterdir()
    return run_dir


@row("nan-input-batch")
def _(ctx: Ctx) -> None:
    args = _shapes_fit(ctx, "--data.poison", "0", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1.0")
    message = one_error(ctx.cli(*args))
    assert re.match(
        r"training batch \d+ of epoch 0 holds NaN or Inf pixel values \(1 of 16 images, first: img\d+\.png\)", message
    ), message


@row("nan-loss")
def _(ctx: Ctx) -> None:
    # the learning rate grows 1e4-fold per epoch: epoch 0 trains, a later one diverges
    growing = ["--model.optimizer", "torch.optim.SGD", "--model.optimizer.init_args.lr", "0.01"]
    growing += ["--model.scheduler", "torch.optim.lr_scheduler.ExponentialLR"]
    growing += ["--model.scheduler.init_args.gamma", "1e4", "--trainer.max_epochs", "8"]
    message = one_error(ctx.cli(*_shapes_fit(ctx, *growing)))
    found = re.match(
        r"the (training loss became (?:nan|inf|-inf)|weights became NaN or Inf) at epoch (\d+), step (\d+) "
        r"\(.*?\); training stopped and the last good checkpoint is (\S+)\. A learning rate that is too high",
        message,
    )
    assert found, message
    epoch, last = int(found.group(2)), Path(found.group(4))
    assert epoch >= 1 and last == _only_run(ctx) / "checkpoints" / "last.ckpt", message
    state = torch.load(last, map_location="cpu", weights_only=True)
    bad = [k for k, v in state["state_dict"].items() if not torch.isfinite(v).all()]
    assert state["epoch"] < epoch and not bad, (message, state["epoch"], bad)


@row("disk-full")
def _(ctx: Ctx) -> None:
    real_save, writes = torch.save, []

    def full_disk(obj, f, *args, **kwargs):  # the second write of last.ckpt finds the disk full half-way
        name = getattr(f, "name", str(f))
        writes.append(name)
        if ".last.ckpt." in str(name) and sum(".last.ckpt." in str(w) for w in writes) == 2:
            buffer = io.BytesIO()
            real_save(obj, buffer)
            f.write(buffer.getvalue()[:1000])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    ctx.monkeypatch.setattr(torch, "save", full_disk)
    message = one_error(ctx.cli(*_shapes_fit(ctx, "--trainer.max_epochs", "3")))
    last = _only_run(ctx) / "checkpoints" / "last.ckpt"
    assert message == (
        f"could not write checkpoint {last}: No space left on device (the previous one is unchanged); free some "
        "space or set --run.root to another disk"
    ), message
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0  # epoch 0's, whole
    assert not list(last.parent.glob(".*.tmp")), "the partial file was left behind"


@row("worker-dies")
def _(ctx: Ctx) -> None:
    from torch.utils.data import get_worker_info

    from tumorlab.data.dataset import SampleStore

    real_load = SampleStore.load

    def dying_load(self, i):  # as the out-of-memory killer would end a worker
        if get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_load(self, i)

    ctx.monkeypatch.setattr(SampleStore, "load", dying_load)
    root = class_folders(ctx.tmp_path / "data")
    args = fit_args(ctx.tmp_path, folder_data(root, "--data.num_workers", "1", "--data.cache", "none"))
    message = one_error(ctx.cli(*args, cwd=ctx.tmp_path))
    found = re.match(r"a data loader worker died while loading (\S+) \(item (\d+) of the train split\)", message)
    assert found, message
    assert Path(found.group(1)).is_file() and Path(found.group(1)).is_relative_to(root)
    assert "data.num_workers: 0" in message


# --- crash safety --------------------------------------------------------------------------------------------


_TORCH_SAVE = torch.save


def _slow_save(obj, f) -> None:
    """torch.save, written in small pieces with pauses, so that a kill lands in the middle of the write."""
    buffer = io.BytesIO()
    _TORCH_SAVE(obj, buffer)
    data = buffer.getvalue()
    for start in range(0, len(data), 1 << 15):
        f.write(data[start : start + (1 << 15)])
        f.flush()
        time.sleep(0.001)


def _save_loop(path: str, atomic: bool, weights: torch.Tensor, conn) -> None:
    from tumorlab.training.callbacks import AtomicCheckpointIO

    torch.save = lambda obj, f, *a, **k: _slow_save(obj, f)  # this child process only
    writer = AtomicCheckpointIO()
    for step in range(10**6):
        conn.send(step)
        if atomic:
            writer.save_checkpoint({"step": step, "w": weights}, path)
        else:  # what an unprotected writer does: write the target in place
            with open(path, "wb") as f:
                _slow_save({"step": step, "w": weights}, f)


def _kill_during_saves(tmp: Path, atomic: bool, rounds: int) -> list[str]:
    """Kill a saving process ``rounds`` times, each time during a save; what loading the file gave each time."""
    weights = torch.zeros(400_000)  # 1.6 MB: a write takes ~50 pieces
    fork = multiprocessing.get_context("fork")
    outcomes, rng = [], random.Random(0)
    for k in range(rounds):
        path = tmp / f"{'atomic' if atomic else 'plain'}{k}.ckpt"
        parent, child = fork.Pipe()
        proc = fork.Process(target=_save_loop, args=(str(path), atomic, weights, child))
        proc.start()
        child.close()  # so that recv() ends if the child dies early
        while parent.recv() < 2:  # two saves done: there is a previous checkpoint to protect
            pass
        time.sleep(rng.uniform(0.005, 0.04))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        try:
            outcomes.append(f"step {torch.load(path, map_location='cpu', weights_only=True)['step']}")
        except Exception as err:  # noqa: BLE001  (what a cut file gives is the point)
            outcomes.append(f"unreadable: {type(err).__name__}")
    return outcomes


@row("kill-during-save")
def _(ctx: Ctx) -> None:
    atomic = _kill_during_saves(ctx.tmp_path, atomic=True, rounds=12)
    assert all(o.startswith("step ") for o in atomic), atomic
    plain = _kill_during_saves(ctx.tmp_path, atomic=False, rounds=4)
    assert any(o.startswith("unreadable") for o in plain), f"no kill landed during a write: {plain}"


class _Frozen(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 2, 3, 4, 5)


@row("same-second-runs")
def _(ctx: Ctx) -> None:
    import tumorlab.runs.folders

    ctx.monkeypatch.setattr(tumorlab.runs.folders._dt, "datetime", _Frozen)
    for seed in ("1", "2"):
        succeeded(ctx.cli(*_shapes_fit(ctx, "--run.name", "twin", "--seed_everything", seed)))
    folders = sorted((ctx.tmp_path / "runs" / "twin").iterdir())
    assert [f.name for f in folders] == ["2026-01-02_03-04-05_fit", "2026-01-02_03-04-05_fit_2"]
    seeds = [yaml.safe_load((f / "config.yaml").read_text())["seed_everything"] for f in folders]
    assert seeds == [1, 2]
    for f in folders:
        assert (f / "checkpoints" / "last.ckpt").is_file() and (f / "run.json").is_file()


def _claim(args) -> str:
    root, barrier = args
    from tumorlab.runs.folders import new_run_dir

    barrier.wait()
    return str(new_run_dir(root, "race", "fit"))


@row("same-second-processes")
def _(ctx: Ctx) -> None:
    import tumorlab.runs.folders

    ctx.monkeypatch.setattr(tumorlab.runs.folders._dt, "datetime", _Frozen)  # inherited by the forked processes
    ctx.monkeypatch.delenv(tumorlab.runs.folders.RUN_DIR_ENV, raising=False)
    fork = multiprocessing.get_context("fork")
    barrier = fork.Manager().Barrier(8)
    with fork.Pool(8) as pool:
        names = pool.map(_claim, [(str(ctx.tmp_path), barrier)] * 8)
    assert len(set(names)) == 8, sorted(names)
    assert {Path(n).name for n in names} == {"2026-01-02_03-04-05_fit"} | {
        f"2026-01-02_03-04-05_fit_{k}" for k in range(2, 9)
    }


@row("ctrl-c")
def _(ctx: Ctx) -> None:
    from tumorlab.training.callbacks import FiniteGuard

    real_end = FiniteGuard.on_train_batch_end

    def press_ctrl_c(self, trainer, *args, **kwargs):
        real_end(self, trainer, *args, **kwargs)
        if trainer.global_step == 3:  # in the second epoch
            signal.raise_signal(signal.SIGINT)  # to this (the main) thread: os.kill may reach another one

    ctx.monkeypatch.setattr(FiniteGuard, "on_train_batch_end", press_ctrl_c)
    # A user's process in a terminal has Python's handler; a test process started in the background inherits
    # SIGINT ignored (POSIX shells), and then the Ctrl-C below would do nothing.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        r = ctx.cli(*_shapes_fit(ctx, "--trainer.max_epochs", "5", "--run.name", "stop"))
    finally:  # Lightning ignores SIGINT from the first Ctrl-C on; this process goes on
        signal.signal(signal.SIGINT, signal.default_int_handler)
    run_dir = _only_run(ctx, "stop")
    last = run_dir / "checkpoints" / "last.ckpt"
    assert r.returncode == 1, (r.returncode, r.stdout[-1000:], r.stderr[-1000:])
    assert f"tumorlab: interrupted at epoch 1, step 3; saved {last}" in r.stderr
    assert "resume with: tumorlab " in r.stderr and f"--ckpt_path {run_dir}" in r.stderr
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 3
    ctx.monkeypatch.setattr(FiniteGuard, "on_train_batch_end", real_end)
    succeeded(ctx.cli(*_shapes_fit(ctx, "--trainer.max_epochs", "3", "--run.name", "stop", "--ckpt_path", "last")))
