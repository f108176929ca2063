"""`tumorlab cam --layer` and `--restrict brain`: the hooked layer by name, the brain mask, and scores (with their
chance levels) judged on the brain's pixels only."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from tumorlab.errors import ConfigError
from tumorlab.evaluation.cam import load_item, run_preprocessing
from tumorlab.evaluation.cam_maps import (
    ClassLogits,
    brain_mask,
    cam_extractor,
    compute_cams,
    layer_name,
    resolve_layer,
    restrict,
)
from tumorlab.evaluation.localisation import (
    dilate,
    energy_share,
    iou_chance,
    localisation_scores,
    peak_diagnostics,
    pointing_chance,
    pointing_hit,
    top_iou,
    top_region,
)
from tumorlab.models import CNN9
from tumorlab.runs.load import load_run

# --- scores judged on a region, against hand computations -------------------------------------------------------


def _square(size: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    out = np.zeros((size, size), dtype=bool)
    out[y0:y1, x0:x1] = True
    return out


def test_the_maximum_outside_the_region_is_not_looked_at():
    mask, region = _square(16, 6, 9, 6, 9), _square(16, 2, 14, 2, 14)
    cam = np.zeros((16, 16))
    cam[0, 0] = 1.0  # outside the region: ignored
    cam[7, 7] = 0.5  # the region's maximum, on the tumour
    assert not pointing_hit(cam, mask, tolerance=0) and pointing_hit(cam, mask, tolerance=0, region=region)
    # chance: the dilated mask's share of the region, not of the image
    assert pointing_chance(mask, 0, region) == pytest.approx(9 / 144)
    assert pointing_chance(mask, 1, region) == pytest.approx(dilate(mask, 1).sum() / 144)
    assert pointing_chance(mask, 0) == pytest.approx(9 / 256)


def test_random_maps_inside_the_region_hit_at_its_chance_rate():
    rng = np.random.default_rng(0)
    mask, region = _square(32, 10, 16, 12, 18), _square(32, 4, 28, 4, 28)
    chance = pointing_chance(mask, 3, region)
    trials = 3000
    rate = np.mean([pointing_hit(rng.random((32, 32)), mask, 3, region) for _ in range(trials)])
    assert abs(rate - chance) < 4 * math.sqrt(chance * (1 - chance) / trials)


def test_top_share_is_taken_of_the_region_and_its_iou_chance_matches_random_draws():
    region = _square(10, 0, 10, 0, 5)  # 50 pixels
    cam = np.arange(100, dtype=float).reshape(10, 10)
    selected = top_region(cam, 0.2, region)
    assert selected.sum() == 10 and not selected[~region].any()  # ceil(0.2 * 50) pixels, all inside
    assert selected[8:, :5].all()  # the region's 10 highest: its last two rows
    mask = _square(10, 8, 10, 0, 10)  # 20 pixels, 10 of them inside the region
    assert top_iou(cam, mask, 0.2, region) == pytest.approx(10 / 20)
    # iou_chance: k = 10 drawn from 50, 10 of which are tumour: E = 2; IoU 2 / (10 + 20 - 2)
    assert iou_chance(mask, 0.2, region) == pytest.approx(2 / 28)
    rng = np.random.default_rng(1)
    big_region, big_mask = _square(64, 8, 56, 8, 56), _square(64, 20, 32, 24, 36)
    drawn = [top_iou(rng.random((64, 64)), big_mask, 0.15, big_region) for _ in range(400)]
    assert np.mean(drawn) == pytest.approx(iou_chance(big_mask, 0.15, big_region), rel=0.05)


def test_energy_share_and_mask_share_count_the_region_only():
    mask, region = np.array([[0, 1], [0, 1]]), np.array([[1, 1], [0, 1]])
    cam = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert energy_share(cam, mask, region) == pytest.approx(6 / 7)  # 3.0 lies outside the region
    scores = localisation_scores(cam, mask, 0, 0.5, region)
    assert scores["mask_share"] == pytest.approx(2 / 3) and scores["pointing_chance"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="empty"):
        localisation_scores(cam, mask, region=np.zeros((2, 2)))


def test_peak_diagnostics_by_hand():
    mask = _square(32, 10, 14, 10, 14)
    brain = _square(32, 2, 26, 2, 30)
    cam = np.zeros((32, 32))
    cam[30, 20] = 1.0  # the lower border (the band is 32 / 8 = 4 px), below the brain, 16 rows below the mask
    d = peak_diagnostics(cam, mask, brain)
    assert (d["peak_y"], d["peak_x"]) == (30, 20) and d["peak_at_border"] == 1 and d["peak_at_bottom"] == 1
    assert d["peak_in_brain"] == 0 and d["peak_distance_px"] == pytest.approx(math.hypot(30 - 13, 20 - 13))
    inside = peak_diagnostics(cam, mask, brain, region=brain)  # the restricted map's maximum: inside the brain
    assert inside["peak_in_brain"] == 1 and inside["peak_at_bottom"] == 0
    cam[12, 12] = 2.0
    assert peak_diagnostics(cam, mask)["peak_distance_px"] == 0 and peak_diagnostics(cam, mask)["peak_at_border"] == 0


# --- the brain mask and the restriction -------------------------------------------------------------------------


def test_brain_mask_is_the_filled_foreground():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:64, :64]
    head = (yy - 30) ** 2 / 24**2 + (xx - 32) ** 2 / 20**2 <= 1
    ventricle = (yy - 30) ** 2 + (xx - 32) ** 2 <= 25  # dark inside the brain: kept by the hole filling
    image = np.where(head & ~ventricle, 120, 0) + rng.integers(0, 8, (64, 64))  # noisy background
    brain = brain_mask(np.repeat(image.astype(np.uint8)[..., None], 3, axis=2))
    assert brain[30, 32] and not brain[0, 0]
    assert (brain & head).sum() / (brain | head).sum() > 0.95
    assert brain_mask(np.full((16, 16, 3), 7, dtype=np.uint8)).all()  # nothing to tell apart: nothing excluded


def test_restrict_zeroes_outside_and_rescales_inside():
    cam = np.array([[0.9, 0.2], [0.4, 0.6]], dtype=np.float32)
    region = np.array([[0, 1], [1, 1]], dtype=bool)
    np.testing.assert_allclose(restrict(cam, region), [[0.0, 0.0], [0.5, 1.0]])
    assert not restrict(np.ones((2, 2)), region).any()  # flat inside the region: all zero


# --- --layer ------------------------------------------------------------------------------------------------------


def test_layer_by_name_changes_the_hooked_module_and_the_map():
    torch.manual_seed(0)
    net = CNN9(width=4).eval()
    assert resolve_layer(net, "features.13") is net.features[13]
    assert layer_name(net, net.cam_layer) == "features.29"
    x = torch.randn(1, 3, 32, 32)
    default = compute_cams(cam_extractor(net), x, [1])
    named = compute_cams(cam_extractor(net, layer="features.29"), x, [1])
    early = compute_cams(cam_extractor(net, layer="features.13"), x, [1])
    np.testing.assert_allclose(default, named)
    assert early.shape == (1, 32, 32) and not np.allclose(early, default)
    with pytest.raises(ConfigError, match=r"--layer 'features\.99'.*features\.") as info:
        resolve_layer(net, "features.99")
    assert "\n" not in str(info.value)


def test_cam_rejects_an_unknown_layer_in_one_line(cnn9_run, tmp_path, cli):
    result = cli("cam", "--ckpt_path", str(cnn9_run), "--out", str(tmp_path / "x"), "--score", "--layer", "nope")
    assert result.returncode == 2
    assert "--layer 'nope'" in result.stderr and "features." in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_score_on_a_named_layer_restricted_to_the_brain(cnn9_run, lgg_phantom, tmp_path, cli):
    out = tmp_path / "cam"
    image = next(p for p in sorted(lgg_phantom.glob("kaggle_3m/*/*.tif")) if "_mask" not in p.name)
    args = ["cam", "--ckpt_path", str(cnn9_run), "--out", str(out), "--score", "--images", str(image)]
    result = cli(*args, "--layer", "features.21", "--restrict", "brain", "--method", "gradcam++")
    assert result.returncode == 0, result.stderr
    scores = json.loads((out / "localisation.json").read_text())
    assert (scores["layer"], scores["method"], scores["restriction"]) == ("features.21", "gradcam++", "brain")
    assert scores["layer_shape"] == [8, 8]  # 32 px after two poolings
    assert scores["peak_in_brain"] == 1.0  # a restricted map peaks inside the brain
    with open(out / "cams.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["layer"], row["method"], row["restriction"]) == ("features.21", "gradcam++", "brain")
    with open(out / "localisation.csv") as f:
        per_slice = list(csv.DictReader(f))
    # recomputed: the restricted maps and the chance levels inside each slice's brain
    task, dm = load_run(cnn9_run)
    spec, mean, std = run_preprocessing(cnn9_run)
    dm.setup("test")
    samples = {str(dm.store.samples[i].image): dm.store.samples[i] for i in dm.datasets["test"].indices}
    extractor = cam_extractor(task.net, "gradcam++", "features.21")
    chances, plain_chances = [], []
    for row in per_slice[:4]:
        item = load_item(row["file"], spec, mean, std, samples[row["file"]])
        brain = brain_mask(item.display)
        (cam,) = compute_cams(extractor, item.tensor[None], [item.label])
        expected = localisation_scores(restrict(cam, brain), item.mask, region=brain)
        for key in ("pointing_game", "pointing_chance", "iou_top", "iou_chance", "energy_share", "mask_share"):
            assert float(row[key]) == pytest.approx(expected[key], abs=1e-6), key
        predicted = int(ClassLogits(task.net).eval()(item.tensor[None]).argmax())
        assert float(row["detected"]) == float(predicted == item.label)
        chances.append(expected["pointing_chance"])
        plain_chances.append(pointing_chance(item.mask))
    assert np.mean(chances) > np.mean(plain_chances)  # a random point inside the brain hits more often
    # the means over the slices the network classifies correctly: those rows of localisation.csv
    detected = [r for r in per_slice if float(r["detected"]) == 1]
    assert scores["detected"]["slices"] == len(detected)
    if detected:
        hits = np.mean([float(r["pointing_game"]) for r in detected])
        assert scores["detected"]["pointing_game"] == pytest.approx(hits)
    assert f"pointing game {scores['pointing_game']:.3f}" in result.stdout and "the brain" in result.stdout


def test_a_layer_the_class_head_never_sees_is_refused_for_gradient_methods():
    from tumorlab.evaluation.cam_maps import layer_shape
    from tumorlab.models import UNetWithClassifier

    net = UNetWithClassifier(encoder_depth=3, decoder_channels=(16, 8, 4)).eval()
    x = torch.randn(3, 32, 32)
    assert layer_shape(net, net.cam_layer, x) == [4, 4]  # the deepest encoder map, read by the head
    decoder = resolve_layer(net, "net.decoder.blocks.2")
    with pytest.raises(ConfigError, match=r"net\.decoder\.blocks\.2: the class logits .* do not depend on it"):
        layer_shape(net, decoder, x)
    assert layer_shape(net, decoder, x, gradient=False) == [32, 32]  # Score-CAM needs no gradient


@pytest.mark.parametrize("method", ["layercam", "hirescam"])
def test_layercam_and_hirescam_give_maps_of_a_named_layer(method):
    torch.manual_seed(0)
    net = CNN9(width=4).eval()
    x = torch.randn(2, 3, 32, 32)
    cams = compute_cams(cam_extractor(net, method, "features.13"), x, [1, 1])
    assert cams.shape == (2, 32, 32) and np.isfinite(cams).all() and cams.max() <= 1 + 1e-6
    assert not np.allclose(cams, compute_cams(cam_extractor(net, "gradcam", "features.13"), x, [1, 1]))


# --- --pad ---------------------------------------------------------------------------------------------------------


def test_pad_puts_the_slice_in_a_canvas_of_background():
    from tumorlab.evaluation.cam_maps import pad_images

    images = torch.randn(2, 3, 8, 8)
    canvas = pad_images(images, 4, (-1.0, -2.0, -3.0))
    assert canvas.shape == (2, 3, 16, 16) and torch.equal(canvas[:, :, 4:12, 4:12], images)
    assert (canvas[:, 1, :4] == -2.0).all() and (canvas[:, 2, :, -4:] == -3.0).all()


def test_a_canvas_the_network_cannot_take_is_a_one_line_error():
    from types import SimpleNamespace

    from tumorlab.evaluation.cam_maps import build_maps
    from tumorlab.models import UNetWithClassifier

    net = UNetWithClassifier(encoder_depth=3, decoder_channels=(16, 8, 4)).eval()
    item = SimpleNamespace(tensor=torch.randn(3, 32, 32))
    black = dict(mean=[0.5] * 3, std=[0.25] * 3)
    assert build_maps(net, [item], pad=4, **black)[1] == [5, 5]  # 40 px: divisible by 2^3
    with pytest.raises(ConfigError, match=r"--pad 3: UNetWithClassifier cannot take 38×38 px inputs") as info:
        build_maps(net, [item], pad=3, **black)
    assert "\n" not in str(info.value)


def test_score_with_pad_explains_the_slice_in_its_canvas(cnn9_run, tmp_path, cli):
    out = tmp_path / "cam"
    result = cli("cam", "--ckpt_path", str(cnn9_run), "--out", str(out), "--score", "--pad", "8")
    assert result.returncode == 0, result.stderr
    scores = json.loads((out / "localisation.json").read_text())
    assert scores["pad_px"] == 8 and scores["layer_shape"] == [6, 6]  # (32 + 16) px / 8
    with open(out / "localisation.csv") as f:
        rows = list(csv.DictReader(f))
    row = rows[0]
    assert scores["detected_in_canvas_slices"] == sum(float(r["detected_in_canvas"]) for r in rows)
    task, dm = load_run(cnn9_run)
    spec, mean, std = run_preprocessing(cnn9_run)
    dm.setup("test")
    sample = next(
        dm.store.samples[i] for i in dm.datasets["test"].indices if str(dm.store.samples[i].image) == row["file"]
    )
    item = load_item(row["file"], spec, mean, std, sample)
    canvas = torch.stack([torch.full((48, 48), -m / s) for m, s in zip(mean, std, strict=True)])
    canvas[:, 8:40, 8:40] = item.tensor
    net = ClassLogits(task.net).eval()
    assert float(row["detected"]) == float(int(net(item.tensor[None]).argmax()) == item.label)  # the run's own call
    assert float(row["detected_in_canvas"]) == float(int(net(canvas[None]).argmax()) == item.label)
    (cam,) = compute_cams(cam_extractor(task.net), canvas[None], [item.label])
    cam = cam[8:40, 8:40]
    expected = localisation_scores((cam - cam.min()) / (cam.max() - cam.min()), item.mask)
    for key in ("pointing_game", "iou_top", "energy_share"):
        assert float(row[key]) == pytest.approx(expected[key], abs=1e-5), key
