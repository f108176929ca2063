"""k-fold cross-validation by patient (tumorlab cv): disjoint validation folds and the aggregates of the fold runs."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST_TRAINER, REPO
from tumorlab.data import LGGDataModule
from tumorlab.evaluation.cv import summarise

pytestmark = pytest.mark.slow  # one trained run per fold: make test runs them, make test-fast does not

CNN9 = str(REPO / "configs/experiments/lgg_cnn9.yaml")


def test_validation_folds_partition_the_non_test_patients(lgg_phantom):
    folds = 3
    splits = []
    for k in range(folds):
        dm = LGGDataModule(str(lgg_phantom), num_folds=folds, fold=k, image_size=32, cache="none")
        dm.setup()
        splits.append({name: set(dm.split_patients(name)) for name in ("train", "val", "test")})
    test = splits[0]["test"]
    assert test and all(s["test"] == test for s in splits)  # one held-out test set for every fold
    vals = [s["val"] for s in splits]
    for i in range(folds):
        for j in range(i + 1, folds):
            assert not vals[i] & vals[j], f"folds {i} and {j} validate on the same patients"
    everyone = set(LGGDataModule(str(lgg_phantom), image_size=32).patients)
    assert set().union(*vals) == everyone - test
    for s in splits:
        assert s["train"] == everyone - test - s["val"]


def _write_run(folder, metrics: dict, best: float):
    folder.mkdir(parents=True)
    record = {"test_metrics": metrics, "best_score": {"val/auroc": best}}
    (folder / "run.json").write_text(json.dumps(record))
    return folder


def test_summary_is_mean_and_sample_std_by_hand(tmp_path):
    runs = [
        _write_run(tmp_path / f"f{k}", {"acc": acc, "f1": 0.5}, best)
        for k, (acc, best) in enumerate([(0.5, 0.6), (0.7, 0.8), (0.9, 1.0)])
    ]
    summary = summarise(runs)
    acc = summary["metrics"]["test/acc"]
    # mean 0.7; sample std sqrt((0.2² + 0 + 0.2²) / (3 - 1)) = 0.2 (the population std would be 0.163)
    assert acc["mean"] == pytest.approx(0.7) and acc["std"] == pytest.approx(0.2) and acc["n"] == 3
    assert summary["metrics"]["test/f1"]["std"] == 0
    assert summary["metrics"]["val/auroc_best"]["mean"] == pytest.approx(0.8)
    assert "ddof=1" in summary["std"]


@pytest.fixture(scope="module")
def cv_result(tmp_path_factory, lgg_phantom):
    """Two folds of CNN9 at 32 px through ``tumorlab cv`` (a few batches each)."""
    from tumorlab.cli.main import main

    root = tmp_path_factory.mktemp("cv_runs")
    args = ["--folds", "2", "--config", CNN9, *FAST_TRAINER, "--data.root", str(lgg_phantom),
            "--data.image_size", "32", "--run.root", str(root), "--run.name", "cvx"]  # fmt: skip
    assert main(["cv", *args]) == 0
    return root, args


def test_cv_runs_every_fold_and_aggregates_their_run_json(cv_result):
    root, _ = cv_result
    out = min((root / "cvx-cv").glob("*_cv*"))  # the first summary (the collect test adds another)
    summary = json.loads((out / "summary.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [0, 1]
    per_fold = []
    for k, fold in enumerate(summary["folds"]):
        run = root / "cvx-cv" / f"fold{k}"
        assert fold["run"].startswith(str(run))
        record = json.loads((Path(fold["run"]) / "run.json").read_text())
        assert "--data.fold" in record["argv"] and record["argv"][record["argv"].index("--data.fold") + 1] == str(k)
        per_fold.append(record["test_metrics"])
    assert "acc" in per_fold[0] and "auroc" in per_fold[0]
    for name in per_fold[0]:
        values = np.array([np.nan if m[name] is None else m[name] for m in per_fold])  # null: undefined
        stats = summary["metrics"][f"test/{name}"]
        assert stats["mean"] == pytest.approx(values.mean(), nan_ok=True)
        assert stats["std"] == pytest.approx(values.std(ddof=1), nan_ok=True)
    with open(out / "folds.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["test/acc"]) for r in rows] == pytest.approx([m["acc"] for m in per_fold])
    table = (out / "summary.md").read_text()
    assert "| test/acc |" in table and "±" in table


def test_collect_summarises_the_finished_folds_again(cv_result, cli):
    root, args = cv_result
    result = cli("cv", *args, "--collect")
    assert result.returncode == 0, result.stderr
    first, second = sorted((root / "cvx-cv").glob("*_cv*"), key=lambda p: (p / "summary.json").stat().st_mtime)
    a, b = (json.loads((p / "summary.json").read_text()) for p in (first, second))
    assert a["metrics"] == b["metrics"] and [f["run"] for f in a["folds"]] == [f["run"] for f in b["folds"]]
    assert "| test/acc |" in result.stdout


def test_print_commands_prints_one_fit_per_fold_and_runs_nothing(tmp_path, lgg_phantom, cli):
    args = ["--config", CNN9, "--folds", "3", "--data.root", str(lgg_phantom), "--run.root", str(tmp_path)]
    result = cli("cv", *args, "--print-commands")
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.strip().splitlines()]
    assert len(commands) == 3 and not any(tmp_path.iterdir())
    for k, command in enumerate(commands):
        assert command[:2] == ["tumorlab", "fit"]
        assert command[command.index("--data.fold") + 1] == str(k)
        assert command[command.index("--data.num_folds") + 1] == "3"
        assert command[command.index("--run.name") + 1] == f"lgg_cnn9-cv/fold{k}"  # the config's run.name
        assert command[command.index("--data.root") + 1] == str(lgg_phantom)


def test_cv_refuses_the_keys_it_sets(tmp_path, cli):
    result = cli("cv", "--config", CNN9, "--folds", "2", "--data.fold", "1", "--print-commands")
    assert result.returncode == 2 and "--data.fold is set by tumorlab cv" in result.stderr
    result = cli("cv", "--config", CNN9, "--folds", "1", "--print-commands")
    assert result.returncode == 2 and "--folds must be at least 2" in result.stderr
