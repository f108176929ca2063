"""What a user meets: test on a run folder without a config, one-line errors that create nothing."""

from __future__ import annotations

import csv
import json
import re
import shutil

import pytest

from tests.conftest import FAST_TRAINER, REPO

DEMO = str(REPO / "configs" / "demo.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, lgg_phantom):
    """A demo U-Net fitted at 48 px (not the demo config's 64) and tested after fit."""
    from tumorlab.cli.main import main

    root = tmp_path_factory.mktemp("runs")
    args = ["fit", "--config", DEMO, *FAST_TRAINER, "--data.root", str(lgg_phantom), "--data.image_size", "48"]
    assert main([*args, "--run.root", str(root), "--run.test_after_fit", "true"]) == 0
    (fit_dir,) = [p for p in (root / "demo").iterdir() if p.name.endswith("_fit")]
    return fit_dir


def _record(run_dir) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def test_test_without_a_config_evaluates_the_run_as_trained(trained, cli):
    r = cli("test", "--ckpt_path", str(trained), "--trainer.logger", "false")
    assert r.returncode == 0, r.stderr[-2000:]
    test_dir = max(p for p in trained.parent.iterdir() if p.name.endswith("_test"))
    record = _record(test_dir)
    assert record["tested"] == str(trained) and record["preprocessing"]["image_size"] == 48
    after_fit = _record(trained)["test_metrics"]
    assert record["test_metrics"] == pytest.approx(after_fit, abs=1e-6), "the same numbers as test_after_fit"


def test_test_of_an_experiment_folder_takes_its_newest_finished_fit(trained, cli, tmp_path):
    experiment = tmp_path / "demo"  # runs/<name>/ as a user types it: a copy holding an older and an unfinished fit
    shutil.copytree(trained, experiment / "2000-01-01_00-00-00_fit")
    shutil.copytree(trained, experiment / trained.name)
    unfinished = experiment / "2999-01-01_00-00-00_fit"
    shutil.copytree(trained, unfinished)
    record = _record(unfinished)
    del record["epochs"]  # a fit that never ended (killed) records no epochs
    (unfinished / "run.json").write_text(json.dumps(record))
    r = cli("test", "--ckpt_path", str(experiment), "--trainer.logger", "false", "--run.report", "false")
    assert r.returncode == 0, r.stderr[-2000:]
    newest = (experiment / trained.name).resolve()
    assert f"evaluating its newest finished fit {newest}" in r.stderr
    (test_dir,) = [p for p in experiment.iterdir() if p.name.endswith("_test")]
    assert _record(test_dir)["tested"] == str(newest)


def test_an_experiment_folder_without_a_finished_fit_lists_its_runs(cli, tmp_path):
    folder = tmp_path / "demo" / "2000-01-01_00-00-00_fit"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"command": "fit"}))
    (folder / "config.yaml").write_text("model: {}\n")
    r = cli("test", "--ckpt_path", str(tmp_path / "demo"))
    assert r.returncode == 2
    assert "no finished fit among its run folders (2000-01-01_00-00-00_fit)" in r.stderr


def test_a_config_that_changes_the_numbers_is_refused(trained, cli, lgg_phantom):
    before = set(trained.parent.iterdir())
    r = cli("test", "--config", DEMO, "--data.root", str(lgg_phantom), "--ckpt_path", str(trained))
    assert r.returncode == 2
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("tumorlab: error:")]
    assert "data.init_args.image_size is 64 here but 48 in the run" in line
    assert set(trained.parent.iterdir()) == before, "nothing is created"


def test_data_keys_set_on_purpose_are_noted_not_refused(trained, cli):
    r = cli("test", "--ckpt_path", str(trained), "--data.image_size", "32", "--trainer.logger", "false")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tumorlab: note: data.init_args.image_size is 32 for this evaluation (48 when the run trained)" in r.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--data.image_sise", "32"], "unknown key 'data.image_sise' (did you mean 'data.image_size'?)"),
        (["--trainer.max_epoch", "2"], "unknown key 'trainer.max_epoch' (did you mean 'trainer.max_epochs'?)"),
        (
            ["--model.net.init_args.encoder_nam", "x"],
            "unknown key 'model.net.init_args.encoder_nam' (did you mean 'model.net.init_args.encoder_name'?)",
        ),
        (["--data.image_size", "big"], "invalid value for 'data.image_size': expected int, got big"),
        (["--ckpt_path", "nowhere.ckpt"], "--ckpt_path nowhere.ckpt: no such checkpoint file or run folder"),
        (["--data", "LGGDataModul"], "unknown class 'LGGDataModul' for 'data' (did you mean 'LGGDataModule'?)"),
        (
            ["--model.net", "UNetWithClasifier"],
            "unknown class 'UNetWithClasifier' for 'model.net' (did you mean 'UNetWithClassifier'?)",
        ),
    ],
    ids=["typo", "abbreviation", "nested typo", "wrong type", "missing checkpoint", "class typo", "net typo"],
)
def test_user_errors_are_one_line_and_create_nothing(args, line, cli, tmp_path, lgg_phantom):
    command = "test" if "--ckpt_path" in args else "fit"
    r = cli(command, "--config", DEMO, "--data.root", str(lgg_phantom), *args, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"tumorlab: error: {line}"]
    assert not any(tmp_path.iterdir()), "no run folder, no W&B run"


def test_a_typo_in_a_yaml_file_names_the_key(cli, tmp_path, lgg_phantom):
    extra = tmp_path / "extra.yaml"
    extra.write_text("data:\n  init_args:\n    image_sise: 32\n")
    r = cli("fit", "--config", DEMO, "--config", str(extra), "--data.root", str(lgg_phantom), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "tumorlab: error: unknown key 'data.init_args.image_sise' (did you mean 'data.init_args.image_size'?)"
    )


@pytest.mark.slow
def test_a_log_file_gets_one_line_per_epoch_and_metrics_csv_one_row_per_epoch(cli, tmp_path, lgg_phantom):
    args = ["fit", "--config", DEMO, *FAST_TRAINER, "--data.root", str(lgg_phantom), "--data.image_size", "32"]
    r = cli(*args, "--trainer.max_epochs", "3", "--run.root", str(tmp_path), cwd=tmp_path)  # stdout: not a TTY
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("epoch ")]
    assert [ln.split(":")[0] for ln in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("val/loss" in ln and "val/dice" in ln for ln in lines)
    assert "it/s" not in r.stdout + r.stderr, "no progress bar in a log file"
    (run_dir,) = (tmp_path / "demo").iterdir()
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == [0, 1, 2]
    assert all(float(row["val/loss"]) > 0 and row["train/loss"] for row in rows)
    assert not any(k.endswith("_step") for k in rows[0]), "epoch values only"
    png = (run_dir / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_fit_prints_a_one_line_model_summary_and_no_accelerator_noise(cli, tmp_path, lgg_phantom, caplog):
    import logging

    handler = caplog.handler  # Lightning's loggers do not propagate to the root logger
    logging.getLogger("lightning.pytorch").addHandler(handler)
    try:
        # (an earlier prune/export command in this process may have raised rank_zero's level: reset it here)
        with (
            caplog.at_level(logging.INFO, logger="lightning.pytorch"),
            caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"),
        ):
            args = ["fit", "--config", DEMO, *FAST_TRAINER, "--data.root", str(lgg_phantom)]
            r = cli(*args, "--data.image_size", "32", "--run.root", str(tmp_path), cwd=tmp_path)
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    assert r.returncode == 0, r.stderr[-2000:]
    shown = [rec.getMessage() for rec in caplog.records if rec.name.startswith("lightning.pytorch")]
    shown += (r.stdout + r.stderr).splitlines()
    assert [m for m in shown if re.fullmatch(r"UNetWithClassifier: [\d,]+ trainable of [\d,]+ parameters", m)]
    assert not [m for m in shown if "Trainable params" in m or "FLOPs" in m], "no model-summary table by default"
    assert not [m for m in shown if m.startswith(("GPU available: False", "TPU available: False"))]


def test_fit_help_is_short_and_says_where_the_rest_is(cli):
    r = cli("fit", "--help")
    assert r.returncode == 0 and len(r.stdout.splitlines()) < 40
    assert "--model.help" in r.stdout and "--data.help" in r.stdout and "--help-all" in r.stdout
