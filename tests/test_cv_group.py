"""Leave-one-group-out cross-validation (``tumorlab cv --group institution``): each fold tests on one institution,
every institution is held out once, and the summary gives per-institution and pooled metrics."""

from __future__ import annotations

import csv
import json
import shlex
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FAST_TRAINER, REPO
from tumorlab.data import LGGDataModule, ManifestDataModule
from tumorlab.data.lgg import institution_of, scan_kaggle_3m
from tumorlab.errors import ConfigError, DataError
from tumorlab.synth import write_lgg

CNN9 = str(REPO / "configs/experiments/lgg_cnn9.yaml")
SITES = ("AA", "BB", "CC")
TINY = {"image_size": 32, "batch_size": 4, "cache": "none", "num_workers": 0}


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> Path:
    """9 phantom patients of 4-5 slices at 32 px from three institutions (AA, BB, CC: three patients each)."""
    out = tmp_path_factory.mktemp("lgg_sites")
    write_lgg(out, patients=9, slices=(4, 5), size=32, seed=2, sites=SITES)
    return out


def test_each_fold_tests_one_institution_and_each_is_held_out_once(sites):
    everyone = {s.patient for s in scan_kaggle_3m(sites)}
    tested = []
    for site in SITES:
        dm = LGGDataModule(str(sites), test_group_by="institution", test_group=site, **TINY)
        dm.setup()
        test = set(dm.split_patients("test"))
        assert test == {p for p in everyone if institution_of(p) == site}
        rest = set(dm.split_patients("train")) | set(dm.split_patients("val"))
        assert rest == everyone - test and not rest & test
        tested.append(test)
    assert set().union(*tested) == everyone and sum(map(len, tested)) == len(everyone)


def test_bad_groups_are_one_line(sites, tmp_path):
    with pytest.raises(DataError, match=r"^data.test_group 'ZZ' is not a value of institution: AA, BB, CC$"):
        LGGDataModule(str(sites), test_group_by="institution", test_group="ZZ", **TINY).setup()
    with pytest.raises(DataError, match="LGG data groups by 'institution' or a data.csv column"):
        LGGDataModule(str(sites), test_group_by="scanner", test_group="x", **TINY).setup()
    with pytest.raises(ConfigError, match="go together"):
        LGGDataModule(str(sites), test_group_by="institution", **TINY)
    one_site = tmp_path / "one"
    write_lgg(one_site, patients=3, slices=(3, 3), size=32, seed=1)
    with pytest.raises(DataError, match=r"institution: every sample has the same value \('PH'\)"):
        LGGDataModule(str(one_site), test_group_by="institution", test_group="PH", **TINY).setup()


def _manifest(folders_phantom: Path, tmp_path: Path, site_of) -> Path:
    rows = []
    for i, path in enumerate(sorted((folders_phantom / "Training").rglob("*.jpg"))):
        rows.append({"path": path, "label": path.parent.name, "patient": f"p{i}", "site": site_of(i)})
    path = tmp_path / f"m{len(list(tmp_path.glob('*.csv')))}.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "label", "patient", "site"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_a_manifest_groups_by_any_column(folders_phantom, tmp_path):
    csv_path = _manifest(folders_phantom, tmp_path, lambda i: "north" if i % 2 else "south")
    dm = ManifestDataModule(str(csv_path), test_group_by="site", test_group="north", **TINY)
    dm.setup()
    test_files = {str(s.image) for s in dm.datasets["test"].samples}
    with open(csv_path) as f:
        north = {r["path"] for r in csv.DictReader(f) if r["site"] == "north"}
    assert test_files == north
    with pytest.raises(DataError, match=r"m0.csv: no column 'hospital' for data.test_group_by \(columns: path, "):
        ManifestDataModule(str(csv_path), test_group_by="hospital", test_group="x", **TINY).setup()


@pytest.mark.slow  # builds the data module through jsonargparse (imports Lightning)
def test_cv_group_prints_one_fit_per_institution(sites, tmp_path, cli):
    args = ["cv", "--config", CNN9, "--group", "institution", "--data.root", str(sites), "--run.root", str(tmp_path)]
    result = cli(*args, "--print-commands")
    assert result.returncode == 0, result.stderr
    commands = [shlex.split(line) for line in result.stdout.strip().splitlines()]
    assert [c[c.index("--data.test_group") + 1] for c in commands] == list(SITES)
    for command, site in zip(commands, SITES, strict=True):
        assert command[command.index("--data.test_group_by") + 1] == "institution"
        assert command[command.index("--run.name") + 1] == f"lgg_cnn9-cv/institution-{site}"
        assert "--data.num_folds" not in command
    assert not any(tmp_path.iterdir())


def test_cv_group_bad_input_is_one_line_and_writes_nothing(sites, folders_phantom, tmp_path, cli):
    base = ["cv", "--config", CNN9, "--data.root", str(sites), "--run.root", str(tmp_path / "runs")]
    for extra, message in (
        (["--group", "scanner"], "data.test_group_by 'scanner': LGG data groups by 'institution' or a data.csv"),
        (["--group", "institution", "--folds", "3"], "give --folds K (k-fold by patient) or --group KEY"),
        ([], "give --folds K (k-fold by patient) or --group KEY"),
        (["--group", "institution", "--data.test_group", "AA"], "--data.test_group is set by tumorlab cv"),
    ):
        r = cli(*base, *extra)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (extra, r.stderr)
        assert message in r.stderr, (extra, r.stderr)
    one = _manifest(folders_phantom, tmp_path, lambda i: "only")
    config = tmp_path / "manifest.yaml"
    config.write_text(f"data:\n  class_path: tumorlab.data.ManifestDataModule\n  init_args: {{csv: {one}}}\n")
    r = cli("cv", "--config", str(config), "--group", "site", "--run.root", str(tmp_path / "runs"), "--print-commands")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--group site: every sample has the same value ('only')" in r.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_cv_group_runs_one_fold_per_institution_and_pools_them(sites, tmp_path, cli):
    args = ["cv", "--config", CNN9, "--group", "institution", *FAST_TRAINER, "--data.root", str(sites),
            "--data.image_size", "32", "--trainer.limit_test_batches", "1.0", "--run.root", str(tmp_path),
            "--run.name", "loio"]  # fmt: skip
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    (out,) = (tmp_path / "loio-cv").glob("*_cv")
    summary = json.loads((out / "summary.json").read_text())
    assert [f["group"]["value"] for f in summary["folds"]] == list(SITES)
    rows = []
    for fold, site in zip(summary["folds"], SITES, strict=True):
        assert Path(fold["run"]).parent.name == f"institution-{site}"
        with open(Path(fold["run"]) / "predictions.csv") as f:
            fold_rows = list(csv.DictReader(f))
        assert {institution_of(r["patient"]) for r in fold_rows} == {site}  # tested on one institution only
        assert fold["group"]["patients"] == len({r["patient"] for r in fold_rows}) == 3
        assert fold["group"]["samples"] == len(fold_rows)
        rows += fold_rows
    assert len(rows) == len(scan_kaggle_3m(sites)) == summary["pooled"]["samples"]  # every slice tested once
    right = np.mean([r["true_class"] == r["predicted_class"] for r in rows])
    assert summary["pooled"]["test/acc"] == pytest.approx(right)
    acc = [f["metrics"]["test/acc"] for f in summary["folds"]]
    assert summary["metrics"]["test/acc"]["mean"] == pytest.approx(np.mean(acc))
    table = (out / "summary.md").read_text()
    assert "leave-one-institution-out" in table and "institution AA (3 patients" in table and "pooled" in table
    again = cli(*args, "--collect")
    assert again.returncode == 0, again.stderr
    assert "| test/acc |" in again.stdout and "institution CC" in again.stdout
