"""The command line on volumes: synth --layout, audit ROOT|DATALIST.json [--json]."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

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
