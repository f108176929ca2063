"""A training run never goes on with NaN: a NaN/Inf input batch or loss stops fit, naming the batch and step."""

from __future__ import annotations

from tests.conftest import FAST_TRAINER

SHAPES = ["--model", "CNN9", "--model.net.init_args.width", "4", "--data", "tests.helpers.ShapesDataModule"]


def test_a_nan_input_image_stops_fit_naming_the_file(cli, tmp_path):
    r = cli(
        "fit", *SHAPES, "--data.poison", "0", *FAST_TRAINER, "--run.root", str(tmp_path), "--trainer.max_epochs", "1"
    )
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
