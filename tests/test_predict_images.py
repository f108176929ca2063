"""predict-images: one row per image, unreadable files reported, ONNX without torch, masks for segmenters."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import FAST_TRAINER, REPO, TINY_UNET, only_run_dir
from tumorlab.cli.main import main


def _fit(config: str, root: Path, name: str, lgg_phantom: Path, *extra: str) -> Path:
    args = ["fit", "--config", str(REPO / config), *FAST_TRAINER, "--data.root", str(lgg_phantom), *extra]
    assert main([*args, "--run.root", str(root), "--run.name", name]) == 0
    return only_run_dir(root, name)


@pytest.fixture(scope="module")
def images(lgg_phantom, tmp_path_factory) -> Path:
    """One phantom patient's slices (no masks) and one corrupt file, in a folder of their own."""
    folder = tmp_path_factory.mktemp("images")
    patient = sorted((lgg_phantom / "kaggle_3m").iterdir())[0]
    for path in sorted(patient.glob("*.tif")):
        if not path.stem.endswith("_mask"):
            (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def _read(csv_path: Path) -> list[dict]:
    with csv_path.open() as f:
        return list(csv.DictReader(f))


def test_a_folder_gives_one_row_per_image_and_the_broken_one_says_why(cnn9_run, images, cli, tmp_path):
    result = cli("predict-images", "--ckpt_path", str(cnn9_run), str(images), "--out", str(tmp_path / "p"))
    assert result.returncode == 0, result.stderr
    rows = _read(tmp_path / "p" / "predictions.csv")
    n_images = len(list(images.glob("*.tif")))
    assert len(rows) == n_images + 1
    broken = [r for r in rows if r["file"].endswith("broken.png")]
    assert len(broken) == 1 and "not a readable image" in broken[0]["error"] and broken[0]["predicted_class"] == ""
    for row in rows:
        if row is broken[0]:
            continue
        p = float(row["prob_no_tumour"]), float(row["prob_tumour"])
        assert sum(p) == pytest.approx(1.0, abs=1e-5) and row["error"] == ""
        assert row["predicted_class"] == ("tumour" if p[1] > p[0] else "no_tumour")


def test_onnx_predictions_match_the_checkpoint_and_need_no_torch(cnn9_run, images, cli, tmp_path):
    onnx_file = str(tmp_path / "m.onnx")
    assert cli("export", "--ckpt_path", str(cnn9_run), "--dynamic-batch", "--out", onnx_file).returncode == 0
    result = cli("predict-images", "--ckpt_path", str(cnn9_run), str(images), "--out", str(tmp_path / "t"))
    assert result.returncode == 0
    code = (
        "import sys; from tumorlab.compression.predict_images import predict_images; "
        f"predict_images([{str(images / '*.tif')!r}], onnx={str(tmp_path / 'm.onnx')!r}, out={str(tmp_path / 'o')!r}); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    by_torch = {r["file"]: r for r in _read(tmp_path / "t" / "predictions.csv") if not r["error"]}
    by_onnx = _read(tmp_path / "o" / "predictions.csv")
    assert len(by_onnx) == len(by_torch)
    for row in by_onnx:
        ref = by_torch[row["file"]]
        assert row["predicted_class"] == ref["predicted_class"]
        assert float(row["prob_tumour"]) == pytest.approx(float(ref["prob_tumour"]), abs=1e-4)


def test_an_onnx_file_whose_metadata_does_not_fit_is_refused(cnn9_run, images, cli, tmp_path):
    import onnx

    assert cli("export", "--ckpt_path", str(cnn9_run), "--out", str(tmp_path / "m.onnx")).returncode == 0
    model = onnx.load(str(tmp_path / "m.onnx"))
    for entry in model.metadata_props:
        if entry.key == "tumorlab.channels":
            entry.value = "[0]"
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = cli("predict-images", "--onnx", str(tmp_path / "m.onnx"), str(images))
    assert result.returncode == 2 and "metadata does not match" in result.stderr and "1 channels" in result.stderr


@pytest.mark.slow
def test_a_segmenter_writes_a_mask_and_an_overlay_per_image(lgg_phantom, images, tmp_path, cli):
    run = _fit("configs/experiments/lgg_unet_multitask.yaml", tmp_path, "unet", lgg_phantom, *TINY_UNET)
    result = cli("predict-images", "--ckpt_path", str(run), str(images / "*.tif"), "--out", str(tmp_path / "p"))
    assert result.returncode == 0, result.stderr
    rows = _read(tmp_path / "p" / "predictions.csv")
    assert len(rows) == len(list(images.glob("*.tif")))
    for row in rows:
        source = cv2.imread(row["file"], cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(row["mask"], cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(row["overlay"])
        assert mask.shape == source.shape[:2] and overlay.shape[:2] == source.shape[:2]
        assert set(np.unique(mask)) <= {0, 255}
        assert int(row["tumour_pixels"]) >= 0 and row["predicted_class"] in ("no_tumour", "tumour")


def test_nothing_to_predict_is_a_clear_error(cnn9_run, tmp_path, cli):
    result = cli("predict-images", "--ckpt_path", str(cnn9_run), str(tmp_path / "*.png"))
    assert result.returncode == 2 and "no image files" in result.stderr
    result = cli("predict-images", str(tmp_path))
    assert result.returncode == 2 and "exactly one of --ckpt_path" in result.stderr
