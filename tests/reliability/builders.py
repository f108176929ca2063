"""Tiny bad and odd inputs for the matrix, and the ``tumorlab`` command lines that meet them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from tests.conftest import FAST_TRAINER
from tumorlab.synth import write_lgg

CNN9 = ["--model", "CNN9", "--model.net.init_args.width", "4"]
SHAPES = [*CNN9, "--data", "tests.helpers.ShapesDataModule"]
CLASSES = ("glioma", "no_tumour")
ERROR = "tumorlab: error: "


def picture(seed: int, size: int = 32) -> np.ndarray:
    """A smooth RGB uint8 image with a bright disc (distinct per seed, so no two are duplicates)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    base = np.stack([xx, yy, (xx + yy) / 2], axis=-1) * rng.uniform(60, 160, 3)
    cy, cx = rng.uniform(0.3, 0.7, 2)
    base[(yy - cy) ** 2 + (xx - cx) ** 2 < 0.04] += 80
    return np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)


def write_picture(path: Path, seed: int, size: int = 32) -> Path:
    """Write ``picture(seed)`` to ``path`` in the format its suffix names (RGB order kept)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(picture(seed, size), cv2.COLOR_RGB2BGR))
    return path


def class_folders(root: Path, per_class: int = 4, suffix: str = ".png") -> Path:
    """``root/<class>/img<k><suffix>`` for the two classes glioma and no_tumour."""
    for c, name in enumerate(CLASSES):
        for k in range(per_class):
            write_picture(root / name / f"img{k}{suffix}", seed=100 * c + k)
    return root


def lgg_root(tmp_path: Path, source: Path) -> Path:
    """A private copy of the session's LGG phantom (``source``), to damage."""
    return Path(shutil.copytree(source, tmp_path / "lgg"))


def make_lgg(out: Path) -> Path:
    """4 phantom patients of 4-5 slices at 48 px in the kaggle_3m layout."""
    write_lgg(out, patients=4, slices=(4, 5), size=48, seed=2)
    return out


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def fit_args(tmp_path: Path, data: list[str], *extra: str, model: list[str] = CNN9) -> list[str]:
    """``tumorlab fit`` of ``model`` (a 4-wide CNN9) on ``data`` for a few batches, runs under ``tmp_path/runs``."""
    return ["fit", *model, *data, *FAST_TRAINER, "--run.root", str(tmp_path / "runs"), *extra]


def folder_data(root: Path, *extra: str) -> list[str]:
    return ["--data", "FolderDataModule", "--data.root", str(root), *_TINY, *extra]


def lgg_data(root: Path, *extra: str) -> list[str]:
    return ["--data", "LGGDataModule", "--data.root", str(root), "--data.task", "classification", *_TINY, *extra]


def manifest_data(csv: Path, *extra: str) -> list[str]:
    return ["--data", "ManifestDataModule", "--data.csv", str(csv), *_TINY, *extra]


_TINY = ["--data.image_size", "32", "--data.batch_size", "4", "--data.num_workers", "0"]


def one_error(r: SimpleNamespace) -> str:
    """The message of the one ``tumorlab: error:`` line of a failed command (exit 2, no traceback)."""
    assert r.returncode == 2, f"exit {r.returncode}\n{r.stderr[-3000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith(ERROR)]
    assert len(lines) == 1, r.stderr[-3000:]
    return lines[0][len(ERROR) :]


def succeeded(r: SimpleNamespace) -> None:
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stderr[-3000:]}"


def audit(cli, root: Path) -> dict:
    """``tumorlab audit ROOT --json``, parsed."""
    r = cli("audit", str(root), "--json")
    succeeded(r)
    return json.loads(r.stdout)
