"""A run stops safely: a NaN/Inf input batch or loss stops fit naming the batch and step; Ctrl-C saves a resumable
checkpoint and says how to resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import FAST_TRAINER, REPO, TINY_UNET

SHAPES = ["--model", "CNN9", "--model.net.init_args.width", "4", "--data", "tests.helpers.ShapesDataModule"]


def test_a_nan_input_image_stops_fit_naming_the_file(cli, tmp_path):
    args = ["fit", *SHAPES, "--data.poison", "0", *FAST_TRAINER, "--run.root", str(tmp_path)]
    # every training batch, whatever order the shuffle draws: the poisoned image is in one of them
    r = cli(*args, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1.0")
    assert r.returncode == 2
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("tumorlab: error:")]
    assert "holds NaN or Inf pixel values" in line and "epoch 0" in line and "img" in line


def test_a_nan_loss_stops_fit_at_its_step_and_keeps_the_last_good_checkpoint(cli, tmp_path):
    args = ["fit", *SHAPES, *FAST_TRAINER, "--run.root", str(tmp_path), "--trainer.max_epochs", "3"]
    args += ["--model.optimizer", "torch.optim.SGD", "--model.optimizer.init_args.lr", "1e30"]
    r = cli(*args)
    assert r.returncode == 2
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("tumorlab: error:")]
    assert "the training loss became" in line and "step" in line and "lower model.optimizer.init_args.lr" in line
    (run_dir,) = (tmp_path / "default").iterdir()
    rows = (run_dir / "metrics.csv").read_text().splitlines()[1:] if (run_dir / "metrics.csv").exists() else []
    assert len(rows) < 3, "training did not go on to the last epoch"
    if "last good checkpoint is" in line:
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
def test_ctrl_c_during_fit_saves_a_resumable_checkpoint_and_exits_non_zero(tmp_path, lgg_phantom):
    cmd = [sys.executable, "-m", "tumorlab", "fit", "--config", str(REPO / "configs" / "demo.yaml"), *TINY_UNET]
    cmd += ["--data.root", str(lgg_phantom), "--data.image_size", "64", "--trainer.max_epochs", "30"]
    cmd += ["--trainer.logger", "false", "--run.root", str(tmp_path), "--run.name", "ctrl-c"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if list(tmp_path.glob("ctrl-c/*/metrics.csv")):  # one epoch done: training is under way
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.1)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, "an interrupted fit does not report success"
    assert "resume with: tumorlab" in err and "--ckpt_path" in err, err[-2000:]
    (run_dir,) = (tmp_path / "ctrl-c").iterdir()
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] > 0
    resumed = subprocess.run(
        [*cmd[:-4], "--trainer.max_epochs", str(state["epoch"] + 2), *cmd[-4:], "--ckpt_path", str(run_dir)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_ctrl_c_during_a_checkpoint_write_lets_the_write_finish_then_interrupts(tmp_path, monkeypatch):
    """A KeyboardInterrupt inside torch.save's zip writer would surface as a RuntimeError and leave a torn
    file; the atomic writer holds SIGINT back until the file is complete and renamed."""
    from tumorlab.training.callbacks import AtomicCheckpointIO

    # Python's handler, as in a terminal; a test process started in the background inherits SIGINT ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    real_save = torch.save

    def interrupted_save(obj, f, *args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C arrives (in this thread) while the file is being written
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", interrupted_save)
    target = tmp_path / "last.ckpt"
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"epoch": 3, "w": torch.ones(4)}, target)
    assert torch.load(target, weights_only=True)["epoch"] == 3  # written whole before the interrupt
    assert not list(tmp_path.glob(".*.tmp"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
