"""``tumorlab report``: files of the report, its numbers against scikit-learn, undefined metrics, figures."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    fbeta_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from tests.conftest import FAST_TRAINER, REPO, TINY_UNET
from tests.helpers import assert_logged_metrics_agree
from tumorlab.cli.lightning import run_predict
from tumorlab.cli.main import main
from tumorlab.evaluation.metrics import compute_metrics, parse_predictions
from tumorlab.evaluation.report import pick_slices, write_report

CNN9 = str(REPO / "configs" / "experiments" / "lgg_cnn9.yaml")
DEMO = str(REPO / "configs" / "demo.yaml")


def _fit_and_test(root: Path, name: str, config: str, phantom: Path, *extra: str) -> tuple[Path, Path]:
    """Fit on the phantom, then `tumorlab test --ckpt_path FIT`; the fit and the test run folders."""
    args = ["--config", config, *FAST_TRAINER, "--data.root", str(phantom), "--data.image_size", "32"]
    args += ["--data.num_workers", "0", *extra, "--run.root", str(root), "--run.name", name]
    assert main(["fit", *args, "--trainer.max_epochs", "2"]) == 0
    (fit_dir,) = (root / name).iterdir()
    # --run.report false: `tumorlab report` (tested below) makes the predictions and the report itself
    assert main(["test", "--ckpt_path", str(fit_dir), "--trainer.logger", "false", "--run.report", "false"]) == 0
    (test_dir,) = set((root / name).iterdir()) - {fit_dir}
    return fit_dir, test_dir


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, lgg_phantom) -> tuple[Path, Path]:
    """CNN9 on the LGG phantom at 32 px, tested, reported through the command line."""
    fit_dir, test_dir = _fit_and_test(tmp_path_factory.mktemp("runs"), "cnn", CNN9, lgg_phantom)
    assert main(["report", str(test_dir)]) == 0
    return fit_dir, test_dir


@pytest.fixture(scope="module")
def unet_run(tmp_path_factory, lgg_phantom) -> tuple[Path, Path]:
    """The tiny multi-task U-Net on the LGG phantom, tested and reported (with the slice panel)."""
    fit_dir, test_dir = _fit_and_test(tmp_path_factory.mktemp("runs"), "unet", DEMO, lgg_phantom, *TINY_UNET)
    write_report(test_dir)
    return fit_dir, test_dir


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


def _metrics(run_dir: Path) -> dict:
    def refuse(constant: str):
        raise AssertionError(f"metrics.json holds {constant}")

    return json.loads((run_dir / "metrics.json").read_text(), parse_constant=refuse)  # no NaN, no Infinity


def assert_real_png(path: Path) -> None:
    """A PNG file of a few KB that matplotlib reads back and that is not one flat colour."""
    from matplotlib.image import imread

    assert path.suffix == ".png" and path.stat().st_size > 5_000, path
    assert imread(path).std() > 0, path


def test_report_writes_every_file(cnn_run):
    fit_dir, test_dir = cnn_run
    metrics = _metrics(test_dir)
    rows = _rows(test_dir)
    assert len(rows) == metrics["samples"] == metrics["source"]["rows"] > 0
    # the test pass wrote predictions.csv: no predict run for the report, and the same rows as the test's own
    assert metrics["source"]["made_by_predict_run"] is None
    assert not [p for p in fit_dir.parent.iterdir() if p.name.endswith("_predict")]
    tested = json.loads((test_dir / "confusion_matrix.json").read_text())
    assert tested["matrix"] == metrics["confusion_matrix"]["matrix"] and tested["class_names"] == metrics["class_names"]
    assert json.loads((test_dir / "run.json").read_text())["test_metrics"]["acc"] == pytest.approx(
        metrics["overall"]["accuracy"]
    )
    figures = {name: Path(p) for name, p in metrics["figures"].items()}
    assert set(figures) == {"confusion_matrix", "roc_pr", "training_curves"}  # classification: no Dice figures
    for path in figures.values():
        assert path.parent == test_dir / "figures"
        assert_real_png(path)
    report = (test_dir / "report.md").read_text()
    for link in ("figures/confusion_matrix.png", "figures/roc_pr.png", "figures/training_curves.png"):
        assert f"]({link})" in report
    fit = json.loads((fit_dir / "run.json").read_text())
    assert f"{fit['parameters']['trainable']:,} trainable" in report
    root = yaml.safe_load((test_dir / "config.yaml").read_text())["data"]["init_args"]["root"]
    assert f"root: `{root}`" in report
    assert "CNN9" in report and "seed: `42`" in report
    assert f"{metrics['overall']['accuracy']:.4f}" in report


def _check_against_sklearn(run_dir: Path) -> None:
    rows = _rows(run_dir)
    metrics = _metrics(run_dir)
    names = metrics["class_names"]
    assert names == ["no_tumour", "tumour"]
    y = np.array([names.index(r["true_class"]) for r in rows])
    pred = np.array([names.index(r["predicted_class"]) for r in rows])
    prob = np.array([float(r["prob_tumour"]) for r in rows])
    overall = metrics["overall"]
    assert overall["accuracy"] == pytest.approx((y == pred).mean())
    assert overall["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert overall["recall"] == pytest.approx(recall_score(y, pred))
    assert overall["f1"] == pytest.approx(f1_score(y, pred))
    assert overall["f2"] == pytest.approx(fbeta_score(y, pred, beta=2))
    assert overall["auroc"] == pytest.approx(roc_auc_score(y, prob))
    if (pred == 1).any():
        assert overall["precision"] == pytest.approx(precision_score(y, pred))
    else:
        assert overall["precision"] is None and "overall.precision" in metrics["undefined"]
    assert metrics["confusion_matrix"]["matrix"] == confusion_matrix(y, pred, labels=[0, 1]).tolist()
    no_tumour = metrics["per_class"]["no_tumour"]
    assert no_tumour["support"] == int((y == 0).sum()) and no_tumour["predicted"] == int((pred == 0).sum())
    assert no_tumour["auroc"] == pytest.approx(roc_auc_score(y == 0, 1 - prob, average=None), abs=1e-6)
    if (y == 0).any():
        assert no_tumour["recall"] == pytest.approx(((pred == 0) & (y == 0)).sum() / (y == 0).sum())


def test_metrics_match_sklearn_classification(cnn_run):
    _check_against_sklearn(cnn_run[1])


def test_metrics_match_sklearn_segmentation_and_per_patient(unet_run):
    _, test_dir = unet_run
    _check_against_sklearn(test_dir)
    rows, metrics = _rows(test_dir), _metrics(test_dir)
    dice = np.array([float(r["dice"]) for r in rows])
    assert metrics["overall"]["mean_slice_dice"] == pytest.approx(dice.mean())
    patients = metrics["per_patient"]["patients"]
    assert set(patients) == {r["patient"] for r in rows}
    for patient, values in patients.items():
        mine = [float(r["dice"]) for r in rows if r["patient"] == patient]
        tumour = [float(r["dice"]) for r in rows if r["patient"] == patient and r["true_class"] == "tumour"]
        assert values["slices"] == len(mine) and values["tumour_slices"] == len(tumour)
        assert values["mean_slice_dice"] == pytest.approx(np.mean(mine))
        assert values["mean_slice_dice_tumour"] == (pytest.approx(np.mean(tumour)) if tumour else None)


def test_logged_test_metrics_agree_with_the_report(cnn_run, unet_run):
    """What `tumorlab test` logged (torchmetrics, during the test pass) and what `compute_metrics` recomputes
    from predictions.csv are the same numbers, per class included; Dice and IoU pooled as the task pools them."""
    classes = {"acc", "precision", "recall", "f1", "f2", "auroc", "precision_tumour", "recall_no_tumour"}
    assert classes <= set(assert_logged_metrics_agree(cnn_run[1]))
    assert classes | {"dice", "iou", "dice_volume"} <= set(assert_logged_metrics_agree(unet_run[1]))


def test_no_tumour_predicted_prints_n_a_as_report_md_does(cnn_run, tmp_path, cli):
    """A model whose head says no tumour for every slice: tumour precision is undefined. torchmetrics logs 0;
    the console prints n/a, run.json holds null with the reason, and report.md agrees."""
    import torch

    fit_dir, _ = cnn_run
    fit = tmp_path / "cnn" / fit_dir.name
    shutil.copytree(fit_dir, fit)
    ckpt = fit / "checkpoints" / Path(json.loads((fit_dir / "run.json").read_text())["best_checkpoint"]).name
    state = torch.load(ckpt, weights_only=True)
    state["state_dict"]["net.head.2.weight"].zero_()
    state["state_dict"]["net.head.2.bias"].copy_(torch.tensor([5.0, -5.0]))  # no_tumour, always
    torch.save(state, ckpt)
    result = cli("test", "--ckpt_path", str(ckpt), "--trainer.logger", "false", "--run.report", "true")
    assert result.returncode == 0, result.stderr
    (test_dir,) = [p for p in (tmp_path / "cnn").iterdir() if p.name.endswith("_test")]
    assert re.search(r"^  precision +n/a$", result.stdout, re.M), result.stdout
    assert re.search(r"^  tumour +n/a ", result.stdout, re.M), result.stdout  # its row: precision first
    assert not re.search(r"^  precision +0$", result.stdout, re.M)
    record = json.loads((test_dir / "run.json").read_text())
    assert record["test_metrics"]["precision"] is None and record["test_metrics"]["precision_tumour"] is None
    assert record["test_undefined_metrics"]["precision"] == "no sample predicted as tumour"
    assert record["test_metrics"]["acc"] is not None
    report = (test_dir / "report.md").read_text()
    assert "- `overall.precision`: no sample predicted as tumour" in report
    metrics = _metrics(test_dir)
    assert metrics["overall"]["precision"] is None and metrics["per_class"]["tumour"]["predicted"] == 0
    assert_logged_metrics_agree(test_dir)
    # validate writes no predictions.csv: the same rule on the task's confusion matrix
    result = cli("validate", "--ckpt_path", str(ckpt), "--trainer.logger", "false")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^  precision +n/a$", result.stdout, re.M), result.stdout
    (val_dir,) = [p for p in (tmp_path / "cnn").iterdir() if p.name.endswith("_validate")]
    record = json.loads((val_dir / "run.json").read_text())
    assert record["val_metrics"]["precision"] is None and record["val_metrics"]["acc"] is not None
    assert record["val_undefined_metrics"]["precision_tumour"] == "no sample predicted as tumour"


def test_slice_panel_predicts_the_masks_again(unet_run):
    _, test_dir = unet_run
    metrics = _metrics(test_dir)
    assert {"patient_dice", "slices"} <= set(metrics["figures"])
    for name in ("patient_dice", "slices", "confusion_matrix", "roc_pr", "training_curves"):
        assert_real_png(Path(metrics["figures"][name]))
    panel = metrics["slice_panel"]
    tumour = sorted(float(r["dice"]) for r in _rows(test_dir) if r["true_class"] == "tumour")
    assert [p["label"] for p in panel][0] == "best" and panel[0]["dice_csv"] == pytest.approx(tumour[-1])
    assert panel[-1]["dice_csv"] == pytest.approx(tumour[0])
    # the network rebuilt from config.yaml + checkpoint reproduces what `tumorlab predict` wrote
    for item in panel:
        assert item["dice_recomputed"] == pytest.approx(item["dice_csv"], abs=1e-6)


def test_pick_slices_best_median_worst_among_tumour_slices():
    rows = [
        {"file": f"f{k}", "true_class": c, "dice": d}
        for k, (c, d) in enumerate(
            [("tumour", "0.5"), ("no_tumour", "1.0"), ("tumour", "0.9"), ("tumour", "0.1"), ("", "1")]
        )
    ]
    assert [(label, r["file"]) for label, r in pick_slices(rows)] == [("best", "f2"), ("median", "f0"), ("worst", "f3")]
    assert [label for label, _ in pick_slices(rows[:2])] == ["best"]  # one tumour slice: drawn once


def _crafted(test_dir: Path, tmp_path: Path, rows: list[dict]) -> Path:
    """A copy of the run folder whose predictions.csv holds ``rows``."""
    crafted = tmp_path / test_dir.name
    shutil.copytree(test_dir, crafted)
    with open(crafted / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return crafted


def test_one_class_auroc_is_null_with_a_reason(cnn_run, tmp_path):
    _, test_dir = cnn_run
    rows = _rows(test_dir)
    for row in rows:
        row["true_class"] = "tumour"
    crafted = _crafted(test_dir, tmp_path, rows)
    write_report(crafted)
    metrics = _metrics(crafted)
    assert metrics["source"]["made_by_predict_run"] is None  # the crafted file is used as it is
    assert metrics["overall"]["auroc"] is None and "only positives" in metrics["undefined"]["overall.auroc"]
    assert metrics["per_class"]["no_tumour"]["auroc"] is None
    assert metrics["per_class"]["no_tumour"]["recall"] is None
    assert "no sample of class no_tumour" in metrics["undefined"]["per_class.no_tumour.recall"]
    assert metrics["overall"]["recall"] == pytest.approx(np.mean([r["predicted_class"] == "tumour" for r in rows]))
    assert "n/a" in (crafted / "report.md").read_text()
    assert_real_png(crafted / "figures" / "roc_pr.png")


def test_only_test_rows_are_scored_and_unlabelled_rows_are_left_out(cnn_run, tmp_path):
    _, test_dir = cnn_run
    rows = _rows(test_dir)
    train = [{**r, "split": "train", "true_class": "no_tumour", "predicted_class": "tumour"} for r in rows]
    unlabelled = {**rows[0], "true_class": ""}
    crafted = _crafted(test_dir, tmp_path, [*train, *rows, unlabelled])
    write_report(crafted, slice_panel=False)
    metrics, reference = _metrics(crafted), _metrics(test_dir)
    assert metrics["source"]["rows_in_file"] == 2 * len(rows) + 1 and metrics["source"]["splits"] == ["test"]
    assert metrics["samples"] == len(rows) and metrics["unlabelled_rows_left_out"] == 1
    assert metrics["overall"] == reference["overall"]


def test_multiclass_macro_metrics_and_a_missing_class():
    names = ["glioma", "meningioma", "no_tumour", "pituitary"]
    truth = ["glioma", "glioma", "meningioma", "meningioma", "no_tumour", "no_tumour"]  # no pituitary sample
    predicted = ["glioma", "meningioma", "meningioma", "pituitary", "no_tumour", "glioma"]
    rng = np.random.default_rng(0)
    rows = []
    for t, p in zip(truth, predicted, strict=True):
        prob = rng.dirichlet(np.ones(4))
        rows.append(
            {
                "file": "x",
                "patient": "p",
                "split": "test",
                "true_class": t,
                "predicted_class": p,
                **{f"prob_{n}": str(v) for n, v in zip(names, prob, strict=True)},
            }
        )
    metrics = compute_metrics(parse_predictions(rows))
    y = [names.index(t) for t in truth]
    yp = [names.index(p) for p in predicted]
    assert metrics["overall"]["accuracy"] == pytest.approx(3 / 6)
    assert metrics["overall"]["f1"] == pytest.approx(
        f1_score(y, yp, labels=[0, 1, 2, 3], average="macro", zero_division=np.nan)
    )
    assert metrics["overall"]["auroc"] is None and "pituitary" in metrics["undefined"]["overall.auroc"]
    assert metrics["per_class"]["pituitary"]["recall"] is None  # no pituitary sample
    defined = [metrics["per_class"][n]["recall"] for n in names[:3]]
    # torchmetrics' macro mean, as the task logs it: pituitary was predicted once, so it counts, as 0
    assert metrics["overall"]["recall"] == pytest.approx(np.mean([*defined, 0.0]))
    assert metrics["overall"]["recall"] == pytest.approx(recall_score(y, yp, average="macro", zero_division=0))
    assert (
        "pituitary counted as 0" in metrics["notes"]["overall.recall"]
        and "4 of 4" in metrics["notes"]["overall.recall"]
    )
    assert metrics["per_class"]["pituitary"]["precision"] == 0.0  # one predicted, wrongly: defined, 0
    assert metrics["per_class"]["glioma"]["auroc"] == pytest.approx(
        roc_auc_score(np.array(y) == 0, [float(r["prob_glioma"]) for r in rows])
    )
    assert metrics["per_patient"] is None  # no dice column


def test_a_class_neither_present_nor_predicted_is_left_out_of_the_macro_mean():
    import torch
    from torchmetrics.functional.classification import multiclass_precision

    names = ["a", "b", "c"]
    truth, predicted = ["a", "b", "b", "a"], ["a", "b", "a", "a"]  # no c at all
    rows = [
        {"file": "x", "patient": "p", "split": "test", "true_class": t, "predicted_class": q}
        | {f"prob_{n}": str(0.8 if n == q else 0.1) for n in names}
        for t, q in zip(truth, predicted, strict=True)
    ]
    metrics = compute_metrics(parse_predictions(rows))
    y, yp = torch.tensor([names.index(t) for t in truth]), torch.tensor([names.index(q) for q in predicted])
    assert metrics["overall"]["precision"] == pytest.approx(float(multiclass_precision(yp, y, 3, average="macro")))
    assert metrics["overall"]["precision"] == pytest.approx((2 / 3 + 1) / 2)  # over a and b
    assert (
        "2 of 3 classes" in metrics["notes"]["overall.precision"]
        and "c left out" in metrics["notes"]["overall.precision"]
    )
    assert metrics["per_class"]["c"]["precision"] is None and metrics["overall"]["auroc"] is None


def test_report_of_a_fit_run_folder(cnn_run):
    fit_dir, _ = cnn_run
    path = write_report(fit_dir, slice_panel=False, predict=run_predict)
    metrics = _metrics(fit_dir)
    assert path == fit_dir / "report.md" and (fit_dir / "predictions.csv").is_file()
    assert metrics["source"]["splits"] == ["test"]
    assert_real_png(Path(metrics["figures"]["training_curves"]))


def test_report_of_a_folder_that_is_not_a_run(cli, tmp_path):
    result = cli("report", str(tmp_path))
    assert result.returncode == 2 and "not a run folder" in result.stderr and str(tmp_path) in result.stderr


def test_a_report_without_predictions_and_no_runner_names_the_command(cnn_run, tmp_path):
    """evaluation never runs the CLI itself: without a predict runner it says what to run."""
    fit_dir, _ = cnn_run
    bare = tmp_path / "2026-01-01_00-00-00_fit"
    shutil.copytree(fit_dir, bare, ignore=shutil.ignore_patterns("predictions.csv", "metrics.json", "report.md"))
    from tumorlab.errors import DataError

    with pytest.raises(DataError, match=r"no predictions.csv; make it with `tumorlab predict .*--ckpt_path"):
        write_report(bare, slice_panel=False)
