"""On real LGG patients: the metrics `tumorlab test` logs (torchmetrics, during the test pass) and those
`tumorlab report` recomputes from the run's predictions.csv (``tumorlab.evaluation.metrics``) are the same."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import REPO, TINY_UNET, only_run_dir
from tests.helpers import assert_logged_metrics_agree
from tumorlab.cli.main import main

CNN9 = ["--config", str(REPO / "configs" / "experiments" / "lgg_cnn9.yaml"), "--model.net.init_args.width", "8"]
UNET = ["--config", str(REPO / "configs" / "demo.yaml"), *TINY_UNET]


@pytest.fixture(scope="module")
def five_patients(real_data, tmp_path_factory):
    """The first five real kaggle_3m patients (a patient-level split gives the test split at least one)."""
    cases = sorted(p for p in (real_data / "lgg-mri-segmentation" / "kaggle_3m").iterdir() if p.is_dir())[:5]
    root = tmp_path_factory.mktemp("lgg5")
    for case in cases:
        shutil.copytree(case, root / "kaggle_3m" / case.name)
    return root


@pytest.mark.slow  # real data; the phantom agreement tests of test_report.py run in the quick tier
@pytest.mark.parametrize(
    ("model", "logged"),
    [
        pytest.param(CNN9, {"acc", "precision", "recall", "f1", "f2", "auroc", "f1_tumour"}, id="cnn9"),
        pytest.param(UNET, {"acc", "auroc", "dice", "iou", "dice_volume"}, id="unet"),
    ],
)
def test_real_data_logged_metrics_agree_with_predictions_csv(five_patients, tmp_path, model, logged):
    args = ["fit", *model, "--config", str(REPO / "configs" / "trainer" / "fast.yaml")]
    args += ["--data.root", str(five_patients), "--data.image_size", "32", "--data.batch_size", "16"]
    args += ["--data.num_workers", "0", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1"]
    args += ["--trainer.limit_test_batches", "1.0", "--trainer.logger", "false", "--run.report", "false"]
    args += ["--run.test_after_fit", "true", "--run.root", str(tmp_path), "--run.name", "agree"]
    assert main(args) == 0
    run_dir = only_run_dir(tmp_path, "agree")
    assert logged <= set(assert_logged_metrics_agree(run_dir))
