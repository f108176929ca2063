"""The command line on volumes: synth --layout, audit ROOT|DATALIST.json [--json]."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tumorlab.synth.volumes import VOLUME_LAYOUTS


def test_synth_writes_each_volume_layout(cli, tmp_path):
    for layout in VOLUME_LAYOUTS:
        out = tmp_path / layout
        r = cli("synth", "--layout", layout, "--out", str(out), "--subjects", "2", "--volume-size", "16",
                "--volume-slices", "6")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "wrote 2 subjects (16x16x6 voxels)" in r.stdout
    assert nib.load(tmp_path / "brats" / "Phantom_001" / "Phantom_001_flair.nii.gz").shape == (16, 16, 6)
    assert len(list((tmp_path / "dicom").rglob("*.dcm"))) == 2 * 4 * 6
    again = cli("synth", "--layout", "brats", "--out", str(tmp_path / "brats"))
    assert again.returncode != 0 and "exists and is not empty" in again.stderr


def test_audit_of_a_volume_root_and_of_a_datalist(cli, tmp_path):
    cli("synth", "--layout", "brats", "--out", str(tmp_path / "b"), "--subjects", "4", "--volume-size", "16",
        "--volume-slices", "6")  # fmt: skip
    victim = tmp_path / "b" / "Phantom_004" / "Phantom_004_t2.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 15, 6), np.float32), np.eye(4)), victim)
    r = cli("audit", str(tmp_path / "b"), "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["layout"] == "brats" and sorted(report["subjects"]) == ["Phantom_001", "Phantom_002", "Phantom_003"]
    first = report["subjects"]["Phantom_001"]
    assert first["shape_ras"] == [16, 16, 6] and first["spacing_mm"] == [1.0, 1.0, 2.0]
    assert first["label_values"] == [0, 1, 2, 4] and first["orientation_stored"] == "RAS"
    (skipped,) = report["skipped_subjects"]
    assert skipped["subject"] == "Phantom_004" and skipped["problem"].startswith(f"{victim}: shape (16, 15, 6)")
    assert sum(len(v) for v in report["splits"].values()) == 3
    text = cli("audit", str(tmp_path / "b"))
    assert "Phantom_002" in text.stdout and "skipped Phantom_004" in text.stdout and "1x1x2" in text.stdout

    cli("synth", "--layout", "datalist", "--out", str(tmp_path / "d"), "--subjects", "3", "--volume-size", "16",
        "--volume-slices", "6")  # fmt: skip
    r = cli("audit", str(tmp_path / "d" / "datalist.json"), "--json")
    report = json.loads(r.stdout)
    assert report["layout"] == "datalist" and len(report["subjects"]) == 3
    assert any("set data.label_map (brats2021)" in w for w in report["warnings"])


def test_audit_names_a_missing_datalist_file(cli, tmp_path):
    cli("synth", "--layout", "datalist", "--out", str(tmp_path / "d"), "--subjects", "2", "--volume-size", "16",
        "--volume-slices", "6")  # fmt: skip
    path = tmp_path / "d" / "datalist.json"
    meta = json.loads(path.read_text())
    gone = Path(tmp_path / "d" / meta["training"][0]["image"][2])
    shutil.move(gone, tmp_path / "elsewhere.nii.gz")
    r = cli("audit", str(path))
    assert r.returncode != 0
    assert f"tumorlab: error: {path}, training[0], image[2]: file {gone} does not exist" in r.stderr


@pytest.mark.slow
def test_brats_experiment_runs_end_to_end_with_3d_report_and_nifti_masks(cli, tmp_path):
    """configs/experiments/brats_unet_multitask.yaml on LPS-stored phantoms: fit, test, 3D report, predict."""
    from tests.conftest import FAST_TRAINER, REPO, TINY_UNET

    root = tmp_path / "brats"
    cli("synth", "--layout", "brats", "--out", str(root), "--subjects", "6", "--volume-size", "32",
        "--volume-slices", "12", "--orientation", "LPS")  # fmt: skip
    config = REPO / "configs" / "experiments" / "brats_unet_multitask.yaml"
    r = cli("fit", "--config", str(config), *FAST_TRAINER, *TINY_UNET, "--data.root", str(root), "--run.report", "true",
            "--run.test_after_fit", "true", "--run.root", str(tmp_path / "runs"), "--trainer.max_epochs", "1",
            cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (fit,) = (tmp_path / "runs" / "brats_unet_multitask").iterdir()
    metrics = json.loads((fit / "metrics.json").read_text())
    regions = metrics["volumes"]["regions"]
    assert list(regions) == ["whole_tumour", "tumour_core", "enhancing"]
    rows = list(csv.DictReader(open(fit / "volumes.csv")))
    test_subjects = {row["subject"] for row in rows}
    assert len(rows) == 3 * len(test_subjects) and all(0 <= float(row["dice"]) <= 1 for row in rows)
    assert regions["whole_tumour"]["dice_mean"] == pytest.approx(
        np.mean([float(row["dice"]) for row in rows if row["region"] == "whole_tumour"])
    )
    assert "## Per volume (3D)" in (fit / "report.md").read_text()
    p = cli("predict", "--ckpt_path", str(fit), "--trainer.logger", "false", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    (masks,) = (tmp_path / "runs" / "brats_unet_multitask").glob("*_predict/masks")
    written = sorted(masks.glob("*.nii.gz"))
    assert [w.name for w in written] == [f"{s}.nii.gz" for s in sorted(test_subjects)]
    for path in written:
        subject = path.name.removesuffix(".nii.gz")
        source = nib.load(root / subject / f"{subject}_flair.nii.gz")
        mask = nib.load(path)
        assert nib.aff2axcodes(mask.affine) == ("L", "P", "S")
        np.testing.assert_allclose(mask.affine, source.affine, atol=1e-6)
        assert mask.shape == source.shape and set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 4}
    # cam on volume slices, named as in predictions.csv
    first = next(csv.DictReader(open(fit / "predictions.csv")))["file"]
    assert "#axial=" in first
    c = cli("cam", "--ckpt_path", str(fit), "--out", str(tmp_path / "cams"), "--images", first, "--score", cwd=tmp_path)
    assert c.returncode == 0, c.stderr
    (row,) = list(csv.DictReader(open(tmp_path / "cams" / "cams.csv")))
    assert row["file"] == first and (tmp_path / "cams" / row["overlay"]).is_file()
    assert json.loads((tmp_path / "cams" / "localisation.json").read_text())["slices"] > 0
