"""Ensembles (``tumorlab ensemble``): probabilities averaged (per pixel for masks), flip TTA, members checked, and
the ensemble a run folder that report, compare and cam read."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from tests.conftest import FAST_TRAINER, REPO, TINY_UNET, only_run_dir
from tumorlab.models import CNN9, SegClsOutput
from tumorlab.models.ensemble import EnsembleNet
from tumorlab.synth import write_lgg

CNN9_CONFIG = str(REPO / "configs/experiments/lgg_cnn9.yaml")
UNET_CONFIG = str(REPO / "configs/experiments/lgg_unet_multitask.yaml")
FULL_TEST = ["--trainer.limit_test_batches", "1.0", "--run.test_after_fit", "true"]


class Constant(nn.Module):
    """A member that answers every image with the same class logits and mask logits."""

    def __init__(self, class_logits: list[float], mask_logit: float | None = None) -> None:
        super().__init__()
        self.class_logits, self.mask_logit = torch.tensor(class_logits), mask_logit

    def forward(self, x):
        logits = self.class_logits.expand(x.shape[0], -1)
        if self.mask_logit is None:
            return logits
        return SegClsOutput(torch.full((x.shape[0], 1, *x.shape[2:]), self.mask_logit), logits)


def test_the_average_is_of_probabilities_not_of_logits_or_votes():
    # p(tumour): 1.0, 0.119, 0.119 -> mean 0.413 (no tumour); mean logits (1.33, 3.33) say tumour
    members = [Constant([0.0, 10.0], 4.0), Constant([2.0, 0.0], -2.0), Constant([2.0, 0.0], -2.0)]
    out = EnsembleNet(members)(torch.zeros(2, 3, 8, 8))
    probs = out.class_logits.softmax(dim=1)
    by_hand = torch.stack([m.class_logits.softmax(0) for m in members]).mean(0)
    assert torch.allclose(probs[0], by_hand, atol=1e-6) and probs[0, 1] == pytest.approx(0.4128, abs=1e-3)
    assert probs[0].argmax() == 0
    assert torch.stack([m.class_logits for m in members]).mean(0).argmax() == 1  # averaging logits would differ
    # per pixel: sigmoid(4), sigmoid(-2) twice -> 0.406 < 0.5 (no tumour pixel); mean logit 0 would be a tie
    pixel = out.mask_logits.sigmoid()
    expected = (torch.sigmoid(torch.tensor(4.0)) + 2 * torch.sigmoid(torch.tensor(-2.0))) / 3
    assert torch.allclose(pixel, expected.expand_as(pixel), atol=1e-6) and (out.mask_logits < 0).all()
    # votes: one member in three says tumour at p 1.0, two say no at p 0.475 -> the mean 0.65 says tumour
    members = [Constant([0.0, 10.0]), Constant([0.1, 0.0]), Constant([0.1, 0.0])]
    probs = EnsembleNet(members)(torch.zeros(1, 3, 8, 8)).softmax(dim=1)
    votes = [int(m.class_logits.argmax()) for m in members]
    assert probs[0].argmax() == 1 and max(set(votes), key=votes.count) == 0


def test_one_member_is_itself_and_identical_members_change_nothing():
    torch.manual_seed(0)
    net = CNN9(in_channels=3, num_classes=2, width=8).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        alone = net(x).softmax(1)
        assert torch.allclose(EnsembleNet([net])(x).softmax(1), alone, atol=1e-6)
        assert torch.allclose(EnsembleNet([net, net])(x).softmax(1), alone, atol=1e-6)


def test_flip_tta_maps_masks_back_and_changes_nothing_on_a_symmetric_image():
    torch.manual_seed(1)
    cnn = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 2)).eval()  # sees where things are: flips matter
    x = torch.randn(2, 3, 32, 32)
    symmetric = (x + x.flip(-1)) / 2
    with torch.no_grad():
        plain, flipped = EnsembleNet([cnn]), EnsembleNet([cnn], tta=("hflip",))
        assert torch.allclose(flipped(symmetric).softmax(1), plain(symmetric).softmax(1), atol=1e-6)
        assert not torch.allclose(flipped(x).softmax(1), plain(x).softmax(1), atol=1e-4)  # TTA does something
        # a per-pixel mask model commutes with flips: the flipped-back mask is the mask, on any image
        pixelwise = nn.Conv2d(3, 1, 1)
        assert torch.allclose(EnsembleNet([pixelwise], ("hflip",))(x), EnsembleNet([pixelwise])(x), atol=1e-5)
        # a mask that is not flipped back would be mirrored: an asymmetric member shows the difference
        left = nn.Conv2d(3, 1, 3, padding=1)
        mirrored = EnsembleNet([left], ("hflip",))(x).sigmoid()
        by_hand = (left(x).sigmoid() + left(x.flip(-1)).flip(-1).sigmoid()) / 2
        assert torch.allclose(mirrored, by_hand, atol=1e-5)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, lgg_phantom):
    """Two CNN9 runs (seeds 1 and 2) and one tiny multi-task U-Net run on the phantom, each tested whole."""
    from tumorlab.cli.main import main

    root = tmp_path_factory.mktemp("ensemble_runs")
    for name, config, extra in (
        ("cnn_a", CNN9_CONFIG, ["--data.image_size", "32", "--seed_everything", "1"]),
        ("cnn_b", CNN9_CONFIG, ["--data.image_size", "32", "--seed_everything", "2"]),
        ("unet", UNET_CONFIG, TINY_UNET),
    ):
        args = ["fit", "--config", config, *FAST_TRAINER, *extra, *FULL_TEST, "--data.root", str(lgg_phantom),
                "--run.root", str(root), "--run.name", name]  # fmt: skip
        assert main(args) == 0
    return root, {name: only_run_dir(root, name) for name in ("cnn_a", "cnn_b", "unet")}


def _rows(run: Path) -> list[dict]:
    with open(run / "predictions.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("split", "test") == "test"]


def _ensemble(cli, *args, root: Path) -> Path:
    result = cli("ensemble", *args, "--root", str(root), "--name", "ens", "--no-slices")
    assert result.returncode == 0, result.stderr
    return max((root / "ens").glob("*_ensemble*"), key=lambda p: p.stat().st_mtime)


@pytest.mark.slow
def test_an_ensemble_of_two_identical_runs_is_the_run(runs, tmp_path, cli):
    _, named = runs
    twin = tmp_path / "twin"
    shutil.copytree(named["cnn_a"], twin)
    ens = _ensemble(cli, str(named["cnn_a"]), str(twin), root=tmp_path)
    single, together = _rows(named["cnn_a"]), _rows(ens)
    assert [r["file"] for r in together] == [r["file"] for r in single]
    for a, b in zip(single, together, strict=True):
        assert float(a["prob_tumour"]) == pytest.approx(float(b["prob_tumour"]), abs=1e-5)
        assert a["predicted_class"] == b["predicted_class"]
    mine = json.loads((named["cnn_a"] / "run.json").read_text())["test_metrics"]
    theirs = json.loads((ens / "run.json").read_text())["test_metrics"]
    for key in ("acc", "auroc", "f1"):
        assert theirs[key] == pytest.approx(mine[key], abs=1e-5)


@pytest.mark.slow
def test_two_runs_average_their_test_probabilities_and_are_a_run_folder(runs, tmp_path, cli):
    _, named = runs
    ens = _ensemble(cli, str(named["cnn_a"]), str(named["cnn_b"]), "--tta", "flip", root=tmp_path)
    record = json.loads((ens / "run.json").read_text())
    assert [m["run"] for m in record["members"]] == [str(named["cnn_a"]), str(named["cnn_b"])]
    assert record["tta"] == ["hflip"] and record["split"] == "test" and record["command"] == "ensemble"
    assert yaml.safe_load((ens / "config.yaml").read_text())["ensemble"]["tta"] == ["hflip"]
    report = (ens / "report.md").read_text()
    assert "## Ensemble" in report and str(named["cnn_b"]) in report and "hflip" in report
    assert json.loads((ens / "metrics.json").read_text())["samples"] == len(_rows(named["cnn_a"]))
    # the same test slices as each member; without TTA the probabilities are the members' mean
    plain = _ensemble(cli, str(named["cnn_a"]), str(named["cnn_b"]), root=tmp_path)
    a, b, mean = _rows(named["cnn_a"]), _rows(named["cnn_b"]), _rows(plain)
    assert [r["file"] for r in mean] == [r["file"] for r in a] == [r["file"] for r in b]
    p = np.array([[float(r["prob_tumour"]) for r in rows] for rows in (a, b, mean)])
    assert np.allclose(p[2], (p[0] + p[1]) / 2, atol=1e-5)
    compared = cli("compare", str(named["cnn_a"]), str(plain), "--sort", "", "--out", str(tmp_path / "cmp"))
    assert compared.returncode == 0, compared.stderr
    assert plain.name in compared.stdout and "same" in compared.stdout
    again = cli("report", str(plain), "--no-slices")
    assert again.returncode == 0, again.stderr
    image = sorted(Path(a[0]["file"]).parent.glob("*.tif"))[0]
    cam = cli("cam", "--ckpt_path", str(plain), "--images", str(image), "--out", str(tmp_path / "cam"))
    assert cam.returncode == 0, cam.stderr
    assert (tmp_path / "cam" / f"000_{image.stem}.png").is_file()
    refused = cli("test", "--ckpt_path", str(plain))
    assert refused.returncode == 2 and "an ensemble of several runs" in refused.stderr


@pytest.mark.slow
def test_a_cv_folder_stands_for_its_fold_runs_and_masks_are_averaged_per_pixel(runs, tmp_path, cli):
    _, named = runs
    summary = tmp_path / "x-cv" / "2026-01-01_00-00-00_cv"
    summary.mkdir(parents=True)
    folds = [{"fold": k, "run": str(named[n])} for k, n in enumerate(("cnn_a", "cnn_b"))]
    (summary / "summary.json").write_text(json.dumps({"folds": folds}))
    ens = _ensemble(cli, str(tmp_path / "x-cv"), root=tmp_path)
    assert [m["run"] for m in json.loads((ens / "run.json").read_text())["members"]] == [f["run"] for f in folds]
    unet = _ensemble(cli, str(named["unet"]), "--tta", "flip", root=tmp_path)
    rows = _rows(unet)
    assert rows and all(r["dice"] != "" and r["tumour_pixels"] != "" for r in rows)
    cam = cli("cam", "--ckpt_path", str(unet), "--score", "--out", str(tmp_path / "cam_unet"))
    assert cam.returncode == 0, cam.stderr
    assert 0 <= json.loads((tmp_path / "cam_unet" / "localisation.json").read_text())["pointing_game"] <= 1


def _edited(run: Path, dest: Path, edit) -> Path:
    shutil.copytree(run, dest)
    config = yaml.safe_load((dest / "config.yaml").read_text())
    edit(config)
    (dest / "config.yaml").write_text(yaml.safe_dump(config))
    return dest


@pytest.mark.slow
def test_members_that_disagree_are_refused_in_one_line_and_nothing_is_written(runs, tmp_path, cli):
    _, named = runs
    a = named["cnn_a"]
    bigger = _edited(a, tmp_path / "bigger", lambda c: c["data"]["init_args"].update(image_size=48))
    other_seed = _edited(a, tmp_path / "seed", lambda c: c["data"]["init_args"].update(seed=7))
    for members, message in (
        ([a, named["unet"]], "disagree on the task: model.class_path"),
        ([a, bigger], "disagree on the preprocessing: data.init_args.image_size is 32"),
        ([a, other_seed], "disagree on the data: data.init_args.seed"),
        ([a, a], "is named twice"),
        ([tmp_path / "nothing"], "neither a run folder"),
    ):
        result = cli("ensemble", *map(str, members), "--root", str(tmp_path / "out"))
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (message, result.stderr)
        assert message in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_flip_tta_on_a_left_right_symmetric_phantom_changes_nothing(tmp_path, cli):
    import tifffile

    write_lgg(tmp_path / "symdata", patients=6, slices=(4, 5), size=32, seed=3)
    for path in (tmp_path / "symdata").rglob("*.tif"):
        image = tifffile.imread(path)
        mirrored = np.maximum(image, image[:, ::-1]) if image.ndim == 2 else (image // 2 + image[:, ::-1] // 2)
        tifffile.imwrite(path, np.ascontiguousarray(mirrored.astype(image.dtype)))
    fit = cli("fit", "--config", CNN9_CONFIG, *FAST_TRAINER, *FULL_TEST, "--data.image_size", "32",
              "--data.augment", "{}", "--data.root", str(tmp_path / "symdata"), "--run.root", str(tmp_path),
              "--run.name", "sym")  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    run = only_run_dir(tmp_path, "sym")
    plain = _rows(_ensemble(cli, str(run), root=tmp_path / "a"))
    flipped = _rows(_ensemble(cli, str(run), "--tta", "flip", root=tmp_path / "b"))
    assert [float(r["prob_tumour"]) for r in flipped] == pytest.approx([float(r["prob_tumour"]) for r in plain])
