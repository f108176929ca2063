"""ManifestDataModule: CSV manifests with patients, masks and fixed splits; errors name the CSV, line and column."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tumorlab.data import ManifestDataModule, scan_kaggle_3m
from tumorlab.data.io import read_mask
from tumorlab.errors import ConfigError, DataError
from tumorlab.synth import write_folders

TINY = {"image_size": 32, "batch_size": 4, "num_workers": 0}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("manifest_images")
    write_folders(out, train_per_class=8, test_per_class=0, size=40, seed=9)
    return out


def _write(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _rows(images: Path) -> list[dict]:
    """32 images of 16 patients (2 slices each), paths relative to ``images``; labels are the folder names."""
    files = sorted((images / "Training").rglob("*.jpg"))
    return [
        {"path": str(p.relative_to(images)), "label": p.parent.name, "patient": f"P{i // 2:02d}", "age": str(40 + i)}
        for i, p in enumerate(files)
    ]


def test_manifest_reads_patients_and_splits_by_patient(images):
    csv_path = _write(images / "manifest.csv", _rows(images))
    dm = ManifestDataModule(str(csv_path), **TINY)
    assert dm.class_names == ["glioma_tumor", "meningioma_tumor", "no_tumor", "pituitary_tumor"]
    assert len(dm.samples) == 32 and dm.rows[0]["age"] == "40"
    dm.setup()
    patients = {k: set(dm.split_patients(k)) for k in ("train", "val", "test")}
    assert not (
        patients["train"] & patients["val"]
        or patients["train"] & patients["test"]
        or patients["val"] & patients["test"]
    )
    assert sum(map(len, patients.values())) == 16
    batch = next(iter(dm.val_dataloader()))
    assert set(batch["patient"]) <= patients["val"] and "mask" not in batch


def test_relative_to_root_min_class_count_max_per_patient_and_classes(images, tmp_path):
    rows = _rows(images)
    rows = [r for r in rows if r["label"] != "no_tumor"] + [r for r in rows if r["label"] == "no_tumor"][:3]
    csv_path = _write(tmp_path / "elsewhere.csv", rows)
    with pytest.raises(DataError, match="does not exist"):
        ManifestDataModule(str(csv_path), **TINY)  # paths are relative to the CSV's folder by default
    dm = ManifestDataModule(str(csv_path), root=str(images), min_class_count=4, **TINY)
    assert dm.dropped_classes == {"no_tumor": 3} and "no_tumor" not in dm.class_names
    capped = ManifestDataModule(str(csv_path), root=str(images), max_per_patient=1, **TINY)
    per_patient = Counter(s.patient for s in capped.samples)
    assert set(per_patient.values()) == {1} and len(per_patient) == len({r["patient"] for r in rows})
    again = ManifestDataModule(str(csv_path), root=str(images), max_per_patient=1, **TINY)
    assert [s.image for s in again.samples] == [s.image for s in capped.samples]  # drawn with the seed
    ordered = ManifestDataModule(str(csv_path), root=str(images), classes=["pituitary_tumor", "glioma_tumor"], **TINY)
    assert ordered.class_names == ["pituitary_tumor", "glioma_tumor"]
    assert {s.label for s in ordered.samples} == {0, 1}
    with pytest.raises(ConfigError, match="astrocytoma"):
        ManifestDataModule(str(csv_path), root=str(images), classes=["astrocytoma"], **TINY)


def test_split_column_fixes_the_splits_and_is_checked_for_leaks(images, tmp_path):
    rows = _rows(images)
    for r in rows:
        r["split"] = ["train", "train", "validation", "test"][int(r["patient"][1:]) % 4]
        r["path"] = str(images / r["path"])  # absolute paths work too
    dm = ManifestDataModule(str(_write(tmp_path / "m.csv", rows)), **TINY)
    dm.setup()
    for name in ("train", "val", "test"):
        want = {r["path"] for r in rows if r["split"] == {"val": "validation"}.get(name, name)}
        assert {str(s.image) for s in dm.datasets[name].samples} == want
    rows[0]["split"] = "test"  # P00's first slice in test, its second in train: a leak
    dm = ManifestDataModule(str(_write(tmp_path / "leak.csv", rows)), **TINY)
    with pytest.raises(DataError, match=r"patient leakage between splits: P00"):
        dm.setup()


def test_manifest_with_masks_serves_them(lgg_phantom, tmp_path):
    slices = scan_kaggle_3m(lgg_phantom)
    rows = [
        {"path": str(s.image), "mask": str(s.mask), "label": int(read_mask(s.mask).any()), "patient": s.patient}
        for s in slices
    ]
    dm = ManifestDataModule(str(_write(tmp_path / "seg.csv", rows)), **TINY)
    assert dm.with_mask and dm.class_names == ["0", "1"]
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["mask"].shape == (4, 1, 32, 32) and set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    no_masks = ManifestDataModule(str(tmp_path / "seg.csv"), use_masks=False, **TINY)
    assert not no_masks.with_mask and all(s.mask is None for s in no_masks.samples)


def test_manifest_errors_name_csv_line_and_column(images, tmp_path):
    rows = _rows(images)
    base = _write(images / "ok.csv", rows)
    bad = images / "bad.csv"
    bad.write_text(base.read_text().replace("patient", "subject", 1))
    with pytest.raises(
        DataError, match=re.escape(f"{bad}: missing column 'patient' (found: path, label, subject, age)")
    ):
        ManifestDataModule(str(bad), **TINY)
    rows[4]["path"] = "Training/glioma_tumor/missing.jpg"
    bad = _write(images / "missing.csv", rows)
    with pytest.raises(
        DataError,
        match=re.escape(
            f"{bad}, line 6, column 'path': file {images}/Training/glioma_tumor/missing.jpg does not exist"
        ),
    ):
        ManifestDataModule(str(bad), **TINY)
    skipping = ManifestDataModule(str(bad), on_bad_file="skip", **TINY)
    assert len(skipping.samples) == 31 and len(skipping.skipped_files) == 1
    rows = _rows(images)
    for r in rows:
        r["split"] = "train"
    rows[2]["split"] = "holdout"
    bad = _write(images / "split.csv", rows)
    with pytest.raises(DataError, match=re.escape(f"{bad}, line 4, column 'split': unknown split 'holdout'")):
        ManifestDataModule(str(bad), **TINY)
    rows[2]["split"], rows[7]["label"] = "test", ""
    bad = _write(images / "empty.csv", rows)
    with pytest.raises(DataError, match=re.escape(f"{bad}, line 9, column 'label': empty value")):
        ManifestDataModule(str(bad), **TINY)
    with pytest.raises(DataError, match="does not exist"):
        ManifestDataModule(str(images / "nope.csv"), **TINY)
    assert np.all([s.image.is_file() for s in ManifestDataModule(str(base), **TINY).samples])
