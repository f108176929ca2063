"""``tumorlab predict``: the columns of predictions.csv, its rows per split, and the numbers in them."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

from tests.conftest import FAST_TRAINER, REPO
from tumorlab.cli.main import main
from tumorlab.data import LGGDataModule
from tumorlab.data.io import read_mask
from tumorlab.errors import ConfigError
from tumorlab.models import UNetWithClassifier
from tumorlab.runs.predictions import prediction_rows
from tumorlab.tasks import MultiTaskTask, SegmentationTask

DEMO = str(REPO / "configs" / "demo.yaml")
CNN9 = str(REPO / "configs" / "experiments" / "lgg_cnn9.yaml")
SMALL_UNET = ["--model.net.init_args.encoder_depth", "3", "--model.net.init_args.decoder_channels", "[16, 8, 4]"]
NAMES = ["no_tumour", "tumour"]
FIRST = ["file", "patient", "split", "true_class", "predicted_class"]


def _args(config: str, root: Path, phantom: Path, name: str, *extra: str) -> list[str]:
    return [
        "--config",
        config,
        *FAST_TRAINER,
        "--data.root",
        str(phantom),
        "--data.image_size",
        "32",
        "--data.num_workers",
        "0",
        "--run.root",
        str(root),
        "--run.name",
        name,
        *extra,
    ]


def _predict(fit_dir: Path, args: list[str], *extra: str) -> tuple[Path, list[dict]]:
    """Run ``tumorlab predict`` on ``fit_dir``'s best checkpoint; its run folder and its rows."""
    before = set(fit_dir.parent.iterdir())
    assert main(["predict", *args, *extra, "--ckpt_path", str(fit_dir)]) == 0
    (run_dir,) = set(fit_dir.parent.iterdir()) - before
    with open(run_dir / "predictions.csv", newline="") as f:
        return run_dir, list(csv.DictReader(f))


def _data(run_dir: Path) -> LGGDataModule:
    """The data module of a run, from its resolved config (same root, seed, size and normalisation)."""
    dm = LGGDataModule(**yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["init_args"])
    dm.setup()
    return dm


def _mask_of(image: str) -> Path:
    return Path(image).with_name(Path(image).stem + "_mask.tif")


@pytest.fixture(scope="module")
def demo_fit(tmp_path_factory, lgg_phantom) -> tuple[Path, list[str]]:
    """A multi-task U-Net fitted for two batches on the LGG phantom: its run folder and CLI arguments."""
    root = tmp_path_factory.mktemp("runs")
    args = _args(DEMO, root, lgg_phantom, "demo", *SMALL_UNET)
    assert main(["fit", *args]) == 0
    (fit_dir,) = (root / "demo").iterdir()
    return fit_dir, args


def test_segmentation_predictions_name_classes_and_recompute_dice(demo_fit):
    fit_dir, args = demo_fit
    run_dir, rows = _predict(fit_dir, args)
    assert list(rows[0]) == [*FIRST, "prob_no_tumour", "prob_tumour", "tumour_pixels", "true_pixels", "dice"]
    dm = _data(run_dir)
    test = dm.datasets["test"]
    assert [r["file"] for r in rows] == [str(s.image) for s in test.samples]  # one row per test slice, in order
    assert {r["split"] for r in rows} == {"test"}
    assert [r["patient"] for r in rows] == [s.patient for s in test.samples]
    truth = [NAMES[int(read_mask(_mask_of(r["file"])).any())] for r in rows]
    assert [r["true_class"] for r in rows] == truth and set(truth) == set(NAMES)
    assert {r["predicted_class"] for r in rows} <= set(NAMES)

    # the per-slice Dice and tumour area, recomputed with numpy from the checkpoint's network
    net = UNetWithClassifier("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4))
    best = json.loads((fit_dir / "run.json").read_text())["best_checkpoint"]  # what --ckpt_path <folder> loads
    state = torch.load(best, map_location="cpu", weights_only=True)
    net.load_state_dict({k[4:]: v for k, v in state["state_dict"].items() if k.startswith("net.")})
    net.eval()
    items = [test[k] for k in range(len(test))]
    with torch.no_grad():
        logits = net(torch.stack([x["image"] for x in items])).mask_logits
    pred = (logits > 0).numpy().reshape(len(items), -1)
    true = np.stack([x["mask"].numpy() > 0.5 for x in items]).reshape(len(items), -1)
    for row, p, t in zip(rows, pred, true, strict=True):
        expected = 1.0 if not (p.any() or t.any()) else 2 * (p & t).sum() / (p.sum() + t.sum())
        assert float(row["dice"]) == pytest.approx(expected, abs=1e-6)
        assert int(row["tumour_pixels"]) == p.sum() and int(row["true_pixels"]) == t.sum()

    # the report's per-patient volume Dice, recovered from those columns, equals one pooled over the pixels
    from tumorlab.evaluation.metrics import compute_metrics, parse_predictions

    patients = compute_metrics(parse_predictions(rows))["per_patient"]["patients"]
    for patient, values in patients.items():
        idx = [i for i, r in enumerate(rows) if r["patient"] == patient]
        inter, total = (pred[idx] & true[idx]).sum(), pred[idx].sum() + true[idx].sum()
        assert values["dice"] == pytest.approx(2 * inter / total if total else 1.0, abs=1e-6), patient


@pytest.mark.slow
def test_predict_split_all_covers_every_slice_once(demo_fit, lgg_phantom):
    fit_dir, args = demo_fit
    run_dir, rows = _predict(fit_dir, args, "--data.predict_split", "all")
    dm = _data(run_dir)
    expected = [(str(s.image), name) for name in ("train", "val", "test") for s in dm.datasets[name].samples]
    assert [(r["file"], r["split"]) for r in rows] == expected
    assert len(rows) == len(list(lgg_phantom.rglob("*_mask.tif")))
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows)


def test_classification_predictions_are_probabilities_with_named_argmax(tmp_path, lgg_phantom):
    args = _args(CNN9, tmp_path, lgg_phantom, "cnn9", "--model.net.init_args.width", "4")
    assert main(["fit", *args]) == 0
    (fit_dir,) = (tmp_path / "cnn9").iterdir()
    _, rows = _predict(fit_dir, args)
    assert list(rows[0]) == [*FIRST, "prob_no_tumour", "prob_tumour"]
    probs = np.array([[float(r["prob_no_tumour"]), float(r["prob_tumour"])] for r in rows])
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert [r["predicted_class"] for r in rows] == [NAMES[k] for k in probs.argmax(1)]
    assert [r["true_class"] for r in rows] == [NAMES[int(read_mask(_mask_of(r["file"])).any())] for r in rows]


class _Logits(torch.nn.Module):
    """A "network" that returns the batch's image as mask logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_slice_dice_by_hand_and_the_empty_convention():
    logits = -torch.ones(4, 1, 4, 4)
    mask = torch.zeros(4, 1, 4, 4)
    logits[1, 0, 0, :2] = 1  # predicted 2 pixels, 1 of them in a 2-pixel mask: Dice 2·1 / (2 + 2)
    mask[1, 0, 0, 1:3] = 1
    mask[2, 0, 0, 0] = 1  # tumour missed entirely: 0
    logits[3, 0, 3, 3] = 1  # tumour where there is none: 0; slice 0 is empty in both: 1
    batch = {"image": logits, "mask": mask, "label": torch.tensor([0, 1, 1, 0]), "patient": list("abcd")}
    batch |= {"image_path": [f"{c}.tif" for c in "abcd"], "split": ["val"] * 4}
    out = SegmentationTask(_Logits()).predict_step(batch, 0)
    assert "mask_prob" not in out  # no masks kept across the data set
    rows = prediction_rows([out], class_names=NAMES)
    assert [r["dice"] for r in rows] == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert [r["tumour_pixels"] for r in rows] == [0, 2, 0, 1]
    assert [r["predicted_class"] for r in rows] == ["no_tumour", "tumour", "no_tumour", "tumour"]
    assert [r["true_class"] for r in rows] == ["no_tumour", "tumour", "tumour", "no_tumour"]
    assert list(prediction_rows([out])[0])[5:7] == ["prob_0", "prob_1"]  # no names known: indices


def test_multitask_outputs_carry_what_the_rows_need():
    torch.manual_seed(0)
    task = MultiTaskTask(UNetWithClassifier("resnet18", encoder_depth=3, decoder_channels=(16, 8, 4))).eval()
    batch = {"image": torch.randn(2, 3, 32, 32), "mask": torch.zeros(2, 1, 32, 32), "label": torch.tensor([0, 1])}
    batch |= {"patient": ["p", "q"], "image_path": ["a.tif", "b.tif"], "split": ["train", "test"]}
    with torch.no_grad():
        rows = prediction_rows([task.predict_step(batch, 0)])
    assert [r["split"] for r in rows] == ["train", "test"] and [r["true_class"] for r in rows] == ["0", "1"]
    for row in rows:  # an empty true mask: Dice 1 exactly when nothing is predicted
        assert row["dice"] == (1.0 if row["tumour_pixels"] == 0 else 0.0)


def test_predict_loader_is_unaugmented_tagged_and_sharded(lgg_phantom):
    dm = LGGDataModule(str(lgg_phantom), image_size=32, augment={"hflip": 1.0}, num_workers=0, predict_split="train")
    dm.setup()
    shown = dm.predict_dataset()
    assert shown[0]["split"] == dm.datasets["train"][0]["split"] == "train"
    # training items are always flipped here; the predicted ones are the same images unflipped
    assert torch.equal(shown[0]["image"].flip(-1), dm.datasets["train"][0]["image"])
    dm.predict_split = "all"
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)
    loader = dm.predict_dataloader()
    total = sum(len(dm.datasets[name]) for name in ("train", "val", "test"))
    assert isinstance(loader.sampler, UnrepeatedDistributedSampler)
    assert list(loader.sampler) == list(range(1, total, 2))  # every other sample, none repeated, in order
    with pytest.raises(ConfigError, match="data.predict_split must be one of"):
        LGGDataModule(str(lgg_phantom), predict_split="everything")
