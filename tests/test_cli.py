"""The `tumorlab` command as users type it, in subprocesses: help, synth, fit -> test -> predict, bad input."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from tests.conftest import REPO, TINY_UNET, run_cli
from tumorlab.cli.config import expand_model_shorthand
from tumorlab.data.io import read_mask

DEMO = str(REPO / "configs" / "demo.yaml")
TINY = [*TINY_UNET, "--trainer.max_epochs", "2"]


def test_help_lists_every_command_without_heavy_imports(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("fit", "validate", "test", "predict", "synth", "audit"):
        assert command in result.stdout
    probe = (
        "import sys; from tumorlab.cli.main import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'lightning', 'timm', 'segmentation_models_pytorch', 'wandb') "
        "if m in sys.modules))"
    )
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_synth_cli_writes_both_layouts(tmp_path, cli):
    r = cli(
        "synth",
        "--layout",
        "lgg",
        "--out",
        "lgg",
        "--patients",
        "3",
        "--slices",
        "4",
        "6",
        "--size",
        "64",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "lgg" / "kaggle_3m").iterdir())) == 4  # 3 cases + data.csv
    r = cli(
        "synth",
        "--layout",
        "folders",
        "--out",
        "mri4",
        "--train-per-class",
        "2",
        "--test-per-class",
        "1",
        "--size",
        "64",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "mri4" / "Training").rglob("*.jpg"))) == 8
    again = cli("synth", "--layout", "lgg", "--out", "lgg", cwd=tmp_path)
    assert again.returncode == 2 and "not empty" in again.stderr


def test_model_shorthand_expands_to_the_task():
    assert expand_model_shorthand(["fit", "--model", "UNetWithClassifier", "--data", "LGGDataModule"]) == [
        "fit",
        "--model",
        "MultiTaskTask",
        "--model.net",
        "UNetWithClassifier",
        "--data",
        "LGGDataModule",
    ]
    assert expand_model_shorthand(["fit", "--model=tumorlab.models.UNetWithClassifier"])[1:4] == [
        "--model",
        "MultiTaskTask",
        "--model.net",
    ]


def test_print_config_composes_and_accepts_short_names(tmp_path, lgg_phantom, cli):
    r = cli(
        "fit",
        "--model",
        "UNetWithClassifier",
        "--model.theta",
        "0.25",
        "--data",
        "LGGDataModule",
        "--data.root",
        str(lgg_phantom),
        "--print_config",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load(r.stdout)
    assert cfg["model"]["class_path"] == "tumorlab.tasks.MultiTaskTask"
    assert cfg["model"]["init_args"]["net"]["class_path"] == "tumorlab.models.UNetWithClassifier"
    assert cfg["model"]["init_args"]["theta"] == 0.25
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  init_args:\n    theta: 0.8\n")
    r = cli("fit", "--config", DEMO, "--config", str(extra), "--print_config", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["model"]["init_args"]["theta"] == 0.8
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("make_root", [pytest.param("missing", marks=pytest.mark.slow), "empty"])
def test_bad_root_is_one_clear_line_and_writes_nothing(tmp_path, make_root, cli):
    root = tmp_path / make_root
    if make_root == "empty":
        root.mkdir()
    run = run_cli if make_root == "missing" else cli  # one as a user types it, one in-process
    r = run("fit", "--config", DEMO, "--data.root", str(root), cwd=tmp_path)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("tumorlab: error:")]
    assert len(errors) == 1 and str(root) in errors[0] and "kaggle_3m" in errors[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()


def _only_run(base: Path) -> Path:
    runs = sorted(p for p in base.iterdir() if p.is_dir())
    assert len(runs) == 1, runs
    return runs[0]


def _test_slices(fit_dir: Path):
    """The test split's slices, from the resolved config of the fit (the same seed and root)."""
    from tumorlab.data import LGGDataModule

    init = yaml.safe_load((fit_dir / "config.yaml").read_text())["data"]["init_args"]
    dm = LGGDataModule(**init)
    dm.setup()
    return dm.datasets["test"].samples


@pytest.mark.slow
def test_fit_then_test_then_predict(tmp_path, lgg_phantom, cli):
    root = str(lgg_phantom)
    r = cli("fit", "--config", DEMO, "--data.root", root, "--run.root", "out", "--run.name", "e2e", *TINY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    fit_dir = _only_run(tmp_path / "out" / "e2e")
    record = json.loads((fit_dir / "run.json").read_text())
    assert record["command"] == "fit" and record["versions"]["torch"]
    best = Path(record["best_checkpoint"])
    assert best.is_file() and best.parent == fit_dir / "checkpoints"
    assert (fit_dir / "checkpoints" / "last.ckpt").is_file()
    assert yaml.safe_load((fit_dir / "config.yaml").read_text())["data"]["init_args"]["root"] == root
    assert list((fit_dir / "wandb").glob("offline-run-*")), "W&B logs offline into the run folder"
    # one line and run.json say what went into each split: slices and patients, none of them in two splits
    splits = record["splits"]
    assert splits["units"] == {"samples": "slices", "patients": "patients"}
    slices = list(lgg_phantom.glob("kaggle_3m/*/*[0-9].tif"))
    assert sum(splits[k]["samples"] for k in ("train", "val", "test")) == len(slices)
    assert sum(splits[k]["patients"] for k in ("train", "val", "test")) == len({p.parent for p in slices})
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("data: "))
    assert f"train {splits['train']['samples']} slices of {splits['train']['patients']} patients (" in line, line
    params = record["parameters"]
    assert params["trainable"] == params["total"] == params["trainable_at_end"]

    # test: a run folder as --ckpt_path resolves to its best checkpoint; a new run folder holds the metrics
    r = cli(
        "test",
        "--config",
        DEMO,
        "--data.root",
        root,
        "--run.root",
        "out",
        "--run.name",
        "e2e",
        *TINY,
        "--ckpt_path",
        str(fit_dir),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    test_dir = next(p for p in (tmp_path / "out" / "e2e").iterdir() if p.name.endswith("_test"))
    metrics = json.loads((test_dir / "run.json").read_text())["test_metrics"]
    for key in ("dice", "iou", "acc", "f1", "auroc", "loss"):
        assert math.isfinite(metrics[key]), key
    assert 0.0 <= metrics["dice"] <= 1.0 and 0.0 <= metrics["acc"] <= 1.0
    assert "test metrics:" in r.stdout and str(test_dir) in r.stdout
    confusion = json.loads((test_dir / "confusion_matrix.json").read_text())
    assert np.array(confusion["matrix"]).sum() == len(list(_test_slices(fit_dir)))
    assert (test_dir / "report.md").is_file() and (test_dir / "figures" / "confusion_matrix.png").is_file()
    logged = {p.name.split("_")[0] for p in (test_dir / "wandb").glob("offline-run-*/files/media/images/test/*.png")}
    assert {"confusion", "roc"} <= logged, f"the report's figures are on W&B: {logged}"

    # predict writes one row per test slice; accuracy and AUROC recomputed from it match `tumorlab test`
    r = cli(
        "predict",
        "--config",
        DEMO,
        "--data.root",
        root,
        "--run.root",
        "out",
        "--run.name",
        "e2e",
        *TINY,
        "--ckpt_path",
        str(fit_dir),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    pred_dir = max(p for p in (tmp_path / "out" / "e2e").iterdir() if p.name.endswith("_predict"))
    with open(pred_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    truth = np.array(
        [int(read_mask(Path(row["file"]).with_name(Path(row["file"]).stem + "_mask.tif")).any()) for row in rows]
    )
    prob = np.array([float(row["prob_tumour"]) for row in rows])
    assert len(rows) == len(truth) > 0
    assert np.isclose((prob > 0.5).astype(int).__eq__(truth).mean(), metrics["acc"], atol=1e-6)
    if 0 < truth.sum() < len(truth):
        assert np.isclose(roc_auc_score(truth, prob), metrics["auroc"], atol=1e-4)
    # fit, test (which writes its report's predictions itself), predict: three folders, none overwrote another
    assert len({p.name for p in (tmp_path / "out" / "e2e").iterdir()}) == 3, "no run overwrote another"
    assert os.listdir(tmp_path / "out" / "e2e")
