"""Class-activation maps of trained runs (tumorlab cam) and the localisation scores they are judged by."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import FAST_TRAINER, REPO, TINY_UNET, only_run_dir
from tumorlab.evaluation.cam import ClassLogits, cam_extractor, compute_cams, load_item, run_preprocessing
from tumorlab.evaluation.localisation import (
    dilate,
    energy_share,
    mean_scores,
    pointing_chance,
    pointing_hit,
    top_iou,
    top_region,
)
from tumorlab.models import CNN9, ResNet3, SmallCNN, TimmClassifier, UNetWithClassifier
from tumorlab.runs.load import load_run

# --- localisation scores against hand computations -------------------------------------------------------------


def test_dilation_is_a_disk_of_the_tolerance_radius():
    mask = np.zeros((11, 11), dtype=np.uint8)
    mask[5, 5] = 1
    assert dilate(mask, 2).sum() == 13  # integer points with dy² + dx² <= 4
    assert dilate(mask, 0).sum() == 1
    edge = np.zeros((5, 5), dtype=np.uint8)
    edge[0, 0] = 1
    assert dilate(edge, 1).sum() == 3  # clipped at the border: (0,0), (0,1), (1,0)


def test_pointing_game_is_1_for_a_cam_equal_to_the_mask():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = np.zeros((32, 32), dtype=np.uint8)
        y, x = rng.integers(0, 28, 2)
        mask[y : y + rng.integers(1, 5), x : x + rng.integers(1, 5)] = 1
        assert pointing_hit(mask.astype(float), mask, tolerance=0)
        assert pointing_hit(mask.astype(float), mask)


@pytest.mark.parametrize("tolerance", [0, 3])
def test_random_cams_point_at_the_tumour_at_chance_rate(tolerance):
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[10:18, 12:20] = 1
    chance = pointing_chance(mask, tolerance)
    assert chance == pytest.approx(64 / 1024 if tolerance == 0 else dilate(mask, 3).sum() / 1024)
    rng = np.random.default_rng(1)
    trials = 4000
    rate = np.mean([pointing_hit(rng.random((32, 32)), mask, tolerance) for _ in range(trials)])
    assert abs(rate - chance) < 4 * math.sqrt(chance * (1 - chance) / trials)


def test_top_15_percent_iou_by_hand():
    cam = np.arange(100, dtype=float).reshape(10, 10)
    assert top_region(cam).sum() == 15 and top_region(cam).ravel()[85:].all()
    mask = np.zeros(100, dtype=np.uint8)
    mask[90:] = 1  # inside the top 15
    mask[:5] = 1  # outside it
    # intersection 10 (90..99), union 15 (85..99) + 5 (0..4) = 20
    assert top_iou(cam, mask.reshape(10, 10)) == pytest.approx(0.5)
    # a flat map selects everything (ties at the threshold are kept): IoU is the mask's share
    assert top_iou(np.zeros((10, 10)), mask.reshape(10, 10)) == pytest.approx(0.15)


def test_energy_share_by_hand():
    mask = np.array([[0, 1], [0, 1]])
    assert energy_share(np.array([[1.0, 2.0], [3.0, 4.0]]), mask) == pytest.approx(6 / 10)
    assert energy_share(np.array([[-5.0, 2.0], [3.0, 4.0]]), mask) == pytest.approx(6 / 9)  # negatives clipped
    assert math.isnan(energy_share(np.zeros((2, 2)), mask))
    means = mean_scores([{"energy_share": 0.2}, {"energy_share": math.nan}, {"energy_share": 0.6}])
    assert means["energy_share"] == pytest.approx(0.4)


# --- a CAM for every network ------------------------------------------------------------------------------------

NETS = {
    "CNN9": lambda: CNN9(width=8),
    "SmallCNN": lambda: SmallCNN(num_classes=2, image_size=64),
    "ResNet3": lambda: ResNet3(width=8),
    "TimmClassifier-resnet18": lambda: TimmClassifier("resnet18", num_classes=2),
    "TimmClassifier-vit": lambda: TimmClassifier("vit_tiny_patch16_224", image_size=64, num_classes=2),
    "UNetWithClassifier": lambda: UNetWithClassifier(encoder_depth=3, decoder_channels=(16, 8, 4)),
}


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_every_network_has_a_cam_of_the_class_asked_for(name, method):
    torch.manual_seed(0)
    net = NETS[name]().eval()
    x = torch.randn(2, 3, 64, 64)  # resnet18's last stage is still 2×2 there
    logits = ClassLogits(net)(x)
    assert logits.shape == (2, 2)  # the U-Net's class_logits, the classifiers' logits
    extractor = cam_extractor(net, method)
    cams = {c: compute_cams(extractor, x, [c, c]) for c in (0, 1)}
    for cam in cams.values():
        assert cam.shape == (2, 64, 64) and np.isfinite(cam).all()
        assert cam.min() >= 0 and cam.max() <= 1 + 1e-6
    assert not np.allclose(cams[0], cams[1])  # the target class changes the map


def test_score_cam_runs_on_a_small_network():
    torch.manual_seed(0)
    net = CNN9(width=4).eval()
    cam = compute_cams(cam_extractor(net, "scorecam"), torch.randn(1, 3, 32, 32), [1])
    assert cam.shape == (1, 32, 32) and np.isfinite(cam).all()


# --- tumorlab cam on trained runs -------------------------------------------------------------------------------


@pytest.fixture
def quick_run(cnn9_run):
    """The shared CNN9 after two batches at 32 px: a run to draw overlays of, not one that has learnt much."""
    return cnn9_run


@pytest.fixture(scope="module")
def trained_cnn9(tmp_path_factory, lgg_phantom):
    """CNN9 trained on the phantom at 64 px for 10 short epochs (about 10 s): enough to find the tumours."""
    from tumorlab.cli.main import main

    root = tmp_path_factory.mktemp("cam_runs")
    code = main(
        ["fit", "--config", str(REPO / "configs/experiments/lgg_cnn9.yaml"), *FAST_TRAINER,
         "--trainer.limit_train_batches", "1.0", "--trainer.limit_val_batches", "1.0",
         "--trainer.limit_test_batches", "1.0", "--trainer.max_epochs", "10", "--trainer.enable_progress_bar", "false",
         "--data.root", str(lgg_phantom), "--data.image_size", "64", "--run.root", str(root), "--run.name", "cnn9"]
    )  # fmt: skip
    assert code == 0
    return only_run_dir(root, "cnn9")


@pytest.mark.slow  # 10 s of training unloaded, twice that on a busy 2-core machine
def test_trained_cnn9_points_at_the_tumour_above_chance(trained_cnn9, tmp_path, cli):
    out = tmp_path / "cam"
    result = cli("cam", "--ckpt_path", str(trained_cnn9), "--out", str(out), "--score")
    assert result.returncode == 0, result.stderr
    scores = json.loads((out / "localisation.json").read_text())
    assert scores["slices"] >= 5 and scores["tolerance_px"] == 3
    # chance: a maximum anywhere hits the dilated tumour in a few % of cases
    assert scores["pointing_chance"] < 0.1
    assert scores["pointing_game"] >= 0.25 and scores["pointing_game"] > 3 * scores["pointing_chance"]
    assert scores["energy_share"] > scores["mask_share"]
    assert f"pointing game {scores['pointing_game']:.3f}" in result.stdout
    with open(out / "localisation.csv") as f:
        per_slice = list(csv.DictReader(f))
    assert len(per_slice) == scores["slices"]
    assert np.mean([float(r["pointing_game"]) for r in per_slice]) == pytest.approx(scores["pointing_game"])


def test_images_are_prepared_exactly_as_the_run_fed_them(quick_run):
    task, dm = load_run(quick_run)
    spec, mean, std = run_preprocessing(quick_run)
    assert spec.image_size == 32 and not task.training
    dm.setup("test")
    ds = dm.datasets["test"]
    for k in (0, len(ds) - 1):
        fed = ds[k]
        sample = dm.store.samples[int(ds.indices[k])]
        item = load_item(fed["image_path"], spec, mean, std, sample)
        assert torch.equal(item.tensor, fed["image"]) and item.label == int(fed["label"])
        assert item.mask is not None and item.mask.shape == (32, 32)


def test_overlays_name_true_and_predicted_class(quick_run, lgg_phantom, tmp_path, cli):
    tumour = sorted(lgg_phantom.glob("kaggle_3m/*/*_mask.tif"))
    with_tumour = next(m for m in tumour if m.stat().st_size and _has_tumour(m))
    image = with_tumour.with_name(with_tumour.name.replace("_mask", ""))
    out = tmp_path / "cam"
    ckpt = quick_run / "checkpoints" / "last.ckpt"  # a checkpoint file in a run folder works as well
    args = ["--ckpt_path", str(ckpt), "--images", str(image), "--out", str(out), "--misclassified"]
    result = cli("cam", *args, "--method", "gradcam++")
    assert result.returncode == 0, result.stderr
    with open(out / "cams.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["file"] == str(image) and rows[0]["true_class"] == "tumour"
    assert all(r["true_class"] != r["predicted_class"] for r in rows[1:])  # the misclassified test images
    from PIL import Image

    for row in rows:
        with Image.open(out / row["overlay"]) as png:
            assert png.size[0] > 300 and png.size[1] > 200
    assert "true tumour, predicted" in result.stdout


def _has_tumour(mask_path) -> bool:
    from tumorlab.data.io import read_mask

    return bool(read_mask(mask_path).sum() > 200)


def test_cam_explains_the_unet_classification_head(lgg_phantom, tmp_path, cli):
    config = str(REPO / "configs/experiments/lgg_unet_multitask.yaml")
    fit = cli("fit", "--config", config, *FAST_TRAINER, *TINY_UNET, "--data.root", str(lgg_phantom),
              "--run.root", str(tmp_path), "--run.name", "unet")  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    run = only_run_dir(tmp_path, "unet")
    image = sorted(lgg_phantom.glob("kaggle_3m/*/*_5.tif"))[0]
    out = tmp_path / "cam"
    result = cli("cam", "--ckpt_path", str(run), "--images", str(image), "--out", str(out), "--score")
    assert result.returncode == 0, result.stderr
    scores = json.loads((out / "localisation.json").read_text())
    for key in ("pointing_game", "iou_top", "energy_share"):
        assert 0 <= scores[key] <= 1
    assert (out / f"000_{image.stem}.png").is_file()


def test_cam_needs_something_to_explain(quick_run, tmp_path, cli):
    result = cli("cam", "--ckpt_path", str(quick_run), "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "--images" in result.stderr
    result = cli("cam", "--ckpt_path", str(tmp_path), "--out", str(tmp_path / "x"), "--score")
    assert result.returncode == 2 and "not a run folder" in result.stderr


@pytest.mark.slow
def test_cam_explains_a_vit_on_class_folders(folders_phantom, tmp_path, cli):
    fit = cli("fit", "--config", str(REPO / "configs/model/timm_classifier.yaml"),
              "--config", str(REPO / "configs/data/mri4.yaml"), *FAST_TRAINER,
              "--model.net.init_args.name", "vit_tiny_patch16_224", "--model.net.init_args.pretrained", "false",
              "--data.root", str(folders_phantom), "--data.image_size", "32", "--run.root", str(tmp_path),
              "--run.name", "vit")  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    run = only_run_dir(tmp_path, "vit")
    # starting weights are never fetched for a CAM: the checkpoint replaces them (this file would not even load)
    config = (run / "config.yaml").read_text().replace("weights_file: null", "weights_file: /nonexistent.safetensors")
    (run / "config.yaml").write_text(config.replace("pretrained: false", "pretrained: true"))
    image = sorted((folders_phantom / "Testing" / "glioma_tumor").iterdir())[0]
    out = tmp_path / "cam"
    result = cli("cam", "--ckpt_path", str(run), "--images", str(image), "--out", str(out), "--misclassified")
    assert result.returncode == 0, result.stderr
    with open(out / "cams.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["true_class"] == "glioma" and len(rows) >= 2  # an untrained ViT gets most test images wrong
    result = cli("cam", "--ckpt_path", str(run), "--out", str(out), "--score")
    assert result.returncode == 2 and "tumour masks" in result.stderr


def test_an_lgg_slice_from_elsewhere_is_titled_with_its_mask_beside_it(
    quick_run, lgg_phantom, tmp_path, cli, monkeypatch
):
    """A slice outside the run's data: its ``_mask.tif`` beside it gives the true class and the per-image scores."""
    import shutil

    from tumorlab.evaluation import cam as cam_module
    from tumorlab.evaluation.localisation import localisation_scores

    mask_file = next(m for m in sorted(lgg_phantom.glob("kaggle_3m/*/*_mask.tif")) if _has_tumour(m))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    image = elsewhere / mask_file.name.replace("_mask", "")
    shutil.copy(mask_file.with_name(image.name), image)
    shutil.copy(mask_file, elsewhere / mask_file.name)
    lonely = tmp_path / "lonely" / image.name  # the same slice without its mask
    lonely.parent.mkdir()
    shutil.copy(image, lonely)
    titles = []
    draw = cam_module.draw_overlay
    monkeypatch.setattr(
        cam_module, "draw_overlay", lambda item, c, title, path: (titles.append(title), draw(item, c, title, path))[1]
    )
    out = tmp_path / "cam"
    result = cli("cam", "--ckpt_path", str(quick_run), "--images", str(image), str(lonely), "--out", str(out))
    assert result.returncode == 0, result.stderr
    with open(out / "cams.csv") as f:
        with_mask, without = list(csv.DictReader(f))
    predicted = with_mask["predicted_class"]
    assert with_mask["true_class"] == "tumour" and with_mask["explained_class"] == predicted
    assert f"true: tumour, predicted: {predicted}" in titles[0] and f"explains: {predicted} (predicted)" in titles[0]
    assert without["true_class"] == "unknown" and without["pointing_game"] == "" and "true: unknown" in titles[1]
    assert f"explains {predicted} (predicted); pointing game" in result.stdout
    # the scores recomputed: the CAM of the true class (tumour) against the mask prepared as the run fed it
    task, _ = load_run(quick_run)
    spec, mean, std = run_preprocessing(quick_run)
    item = load_item(image, spec, mean, std)
    assert item.label == 1 and item.mask is not None and item.mask.any()
    (cam,) = compute_cams(cam_extractor(task.net), item.tensor[None], [1])
    expected = localisation_scores(cam, item.mask)
    for key in ("pointing_game", "iou_top", "energy_share"):
        assert float(with_mask[key]) == pytest.approx(expected[key], abs=1e-3)
