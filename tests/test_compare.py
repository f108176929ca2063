"""``tumorlab compare``: one row per run, sorted as asked, other data flagged, non-run folders skipped."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import FAST_TRAINER, REPO
from tests.test_report import assert_real_png
from tumorlab.cli.main import main
from tumorlab.errors import ConfigError
from tumorlab.evaluation.compare import compare_runs

pytestmark = pytest.mark.slow  # several trained runs: make test runs them, make test-fast does not

CNN9 = str(REPO / "configs" / "experiments" / "lgg_cnn9.yaml")


def _fit(root: Path, name: str, phantom: Path, *extra: str) -> Path:
    args = ["--config", CNN9, *FAST_TRAINER, "--data.root", str(phantom), "--data.image_size", "32"]
    assert main(["fit", *args, "--data.num_workers", "0", *extra, "--run.root", str(root), "--run.name", name]) == 0
    (fit_dir,) = [p for p in (root / name).iterdir() if p.name.endswith("_fit")]
    return fit_dir


def _test(fit_dir: Path) -> Path:
    before = set(fit_dir.parent.iterdir())
    assert main(["test", "--ckpt_path", str(fit_dir), "--trainer.logger", "false", "--run.report", "false"]) == 0
    (test_dir,) = set(fit_dir.parent.iterdir()) - before
    return test_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, lgg_phantom) -> dict[str, Path]:
    """Two tested CNN9 runs (``a`` over 3 epochs), one fit tested at its end (``c``), one on another split."""
    root = tmp_path_factory.mktemp("runs")
    a = _fit(root, "a", lgg_phantom, "--trainer.max_epochs", "3", "--model.optimizer.init_args.lr", "0.01")
    b = _fit(root, "b", lgg_phantom, "--seed_everything", "1")
    c = _fit(root, "c", lgg_phantom, "--seed_everything", "2", "--run.test_after_fit", "true")
    other = _fit(root, "other", lgg_phantom, "--data.seed", "5", "--run.test_after_fit", "true")
    return {"a": _test(a), "b": _test(b), "c": c, "other": other, "a_fit": a}


def test_three_runs_sorted_with_the_numbers_of_their_files(runs, tmp_path, capsys):
    not_a_run = tmp_path / "notes"
    not_a_run.mkdir()
    result = compare_runs([runs["c"], not_a_run, runs["b"], runs["a"]], sort="test/auroc", out_dir=tmp_path / "out")
    assert f"{not_a_run}: not a run folder" in capsys.readouterr().err and result.skipped == [str(not_a_run)]
    assert len(result.rows) == 3
    aurocs = [r["test/auroc"] for r in result.rows]
    assert aurocs == sorted(aurocs, reverse=True) and aurocs[0] > aurocs[-1]  # given worst first: reordered
    assert all(r["data_check"] == "same" for r in result.rows)
    by_run = {r["run"].split("/")[0]: r for r in result.rows}
    for name in ("a", "b"):  # test runs: test metrics of their run.json, training facts of the fit they tested
        tested = json.loads((runs[name] / "run.json").read_text())
        fit = json.loads((Path(tested["tested"]) / "run.json").read_text())
        assert by_run[name]["test/acc"] == tested["test_metrics"]["acc"]
        assert by_run[name]["epochs"] == fit["epochs"] and by_run[name]["trainable_params"] == 1_173_730
    assert by_run["c"]["test/f1"] == json.loads((runs["c"] / "run.json").read_text())["test_metrics"]["f1"]
    with open(result.csv, newline="") as f:
        assert [r["run"] for r in csv.DictReader(f)] == [r["run"] for r in result.rows]
    table = result.markdown.read_text()
    assert table.index(result.rows[0]["run"]) < table.index(result.rows[2]["run"])
    assert_real_png(result.png)


def test_train_and_val_come_from_the_best_epoch(runs, tmp_path):
    (row,) = compare_runs([runs["a"]], sort=None, out_dir=tmp_path).rows
    with open(runs["a_fit"] / "metrics.csv", newline="") as f:
        epochs = list(csv.DictReader(f))
    assert len(epochs) == 3
    best = max(range(3), key=lambda k: (float(epochs[k]["val/auroc"]), -k))  # monitor val/auroc, first best
    assert row["epoch"] == best + 1
    assert row["val/loss"] == pytest.approx(float(epochs[best]["val/loss"]))
    assert row["train/acc"] == pytest.approx(float(epochs[best]["train/acc"]))
    best_ckpt = json.loads((runs["a_fit"] / "run.json").read_text())["best_checkpoint"]
    assert Path(best_ckpt).name == f"epoch{best:02d}.ckpt"  # the epoch whose checkpoint was tested


def test_other_data_is_flagged_and_losses_sort_ascending(runs, tmp_path, capsys):
    result = compare_runs([runs["other"], runs["b"], runs["a"]], sort="val/loss", out_dir=tmp_path)
    flags = {r["run"].split("/")[0]: r["data_check"] for r in result.rows}
    assert flags["a"] == flags["b"] == "same"
    assert flags["other"].startswith("DIFFERENT DATA") and "seed 5 (others 42)" in flags["other"]
    assert "other data than the other runs" in capsys.readouterr().err
    losses = [r["val/loss"] for r in result.rows]
    assert losses == sorted(losses) and losses[0] < losses[-1]


def test_a_split_that_ignores_duplicates_is_flagged(runs, tmp_path):
    leaky = tmp_path / "leaky" / runs["b"].name
    shutil.copytree(runs["b"], leaky)
    config = yaml.safe_load((leaky / "config.yaml").read_text())
    config["data"]["init_args"]["duplicates"] = "none"  # the same data, split as if it held no copies
    (leaky / "config.yaml").write_text(yaml.safe_dump(config))
    result = compare_runs([runs["a"], runs["b"], leaky], sort="", out_dir=tmp_path / "out")
    flags = [r["data_check"] for r in result.rows]
    assert flags[:2] == ["same", "same"] and "duplicates none (others" in flags[2]


def test_command_line_expands_globs_and_refuses_an_unknown_sort(runs, cli, tmp_path):
    pattern = str(runs["a"].parent.parent / "[ab]" / "*_test")
    result = cli("compare", pattern, "--out", str(tmp_path / "cmp"), "--sort", "test/acc")
    assert result.returncode == 0, result.stderr
    assert "comparison.csv" in result.stdout and result.stdout.count("_test |") == 2
    with pytest.raises(ConfigError, match="not a column"):
        compare_runs([runs["a"]], sort="test/accuracy", out_dir=tmp_path)
    bad = cli("compare", str(tmp_path / "nothing"), "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "no run folder" in bad.stderr
