"""Session-wide inputs of the matrix: a tiny LGG phantom and a few trained runs, each built on first use."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.builders import class_folders, fit_args, folder_data, make_lgg, write_picture


@pytest.fixture(scope="session")
def lgg_small(tmp_path_factory) -> Path:
    """4 patients of 4-5 slices at 48 px (read-only: rows damage a copy)."""
    return make_lgg(tmp_path_factory.mktemp("rel_lgg"))


def _train(base: Path, model: list[str], classes: int) -> Path:
    from tumorlab.cli.main import main

    root = class_folders(base / "data")
    if classes == 3:
        for k in range(4):
            write_picture(root / "meningioma" / f"img{k}.png", seed=300 + k)
    assert main(fit_args(base, folder_data(root), "--run.name", "trained", model=model)) == 0
    (run_dir,) = (base / "runs" / "trained").iterdir()
    return run_dir


@pytest.fixture(scope="session")
def run_cnn9(tmp_path_factory) -> Path:
    """The run folder of a CNN9 (width 4) trained for a few batches on 2 classes of 32 px images."""
    return _train(tmp_path_factory.mktemp("rel_cnn9"), ["--model", "CNN9", "--model.net.init_args.width", "4"], 2)


@pytest.fixture(scope="session")
def run_cnn9_3(tmp_path_factory) -> Path:
    """The same network trained on 3 classes."""
    return _train(tmp_path_factory.mktemp("rel_cnn9_3"), ["--model", "CNN9", "--model.net.init_args.width", "4"], 3)


@pytest.fixture(scope="session")
def run_small_cnn(tmp_path_factory) -> Path:
    """Another architecture (SmallCNN) on the 2 classes."""
    return _train(tmp_path_factory.mktemp("rel_small"), ["--model", "SmallCNN"], 2)
