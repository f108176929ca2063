"""The volume phantoms: each layout's file names and conventions, valid DICOM, the same subjects everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tumorlab.synth.volumes import phantom_subject, write_volumes


def test_brats_2021_and_2023_naming_and_labels(tmp_path):
    write_volumes(tmp_path / "a", "brats", subjects=2)
    write_volumes(tmp_path / "b", "brats2023", subjects=2)
    assert sorted(p.name for p in (tmp_path / "a" / "Phantom_001").iterdir()) == [
        f"Phantom_001_{m}.nii.gz" for m in ("flair", "seg", "t1", "t1ce", "t2")
    ]
    assert sorted(p.name for p in (tmp_path / "b" / "Phantom_001").iterdir()) == [
        f"Phantom_001-{m}.nii.gz" for m in ("seg", "t1c", "t1n", "t2f", "t2w")
    ]
    seg21 = np.asarray(nib.load(tmp_path / "a" / "Phantom_001" / "Phantom_001_seg.nii.gz").dataobj)
    seg23 = np.asarray(nib.load(tmp_path / "b" / "Phantom_001" / "Phantom_001-seg.nii.gz").dataobj)
    assert set(np.unique(seg21)) == {0, 1, 2, 4} and set(np.unique(seg23)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(seg21 == 4, seg23 == 3)


def test_decathlon_is_4d_with_its_own_numbering(tmp_path):
    write_volumes(tmp_path, "decathlon", subjects=2)
    image = nib.load(tmp_path / "imagesTr" / "Phantom_002.nii.gz")
    assert image.shape == (32, 32, 12, 4)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["modality"] == {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"} and len(meta["training"]) == 2
    label = np.asarray(nib.load(tmp_path / "labelsTr" / "Phantom_002.nii.gz").dataobj)
    truth = phantom_subject(1).label
    np.testing.assert_array_equal(label == 1, truth == 2)  # oedema
    np.testing.assert_array_equal(label == 2, truth == 1)  # non-enhancing core
    np.testing.assert_array_equal(label == 3, truth == 4)  # enhancing


def test_dicom_files_are_valid_and_carry_what_a_reader_needs(tmp_path):
    write_volumes(tmp_path, "dicom", subjects=1)
    files = sorted(tmp_path.rglob("*.dcm"))
    assert len(files) == 4 * 12
    ds = pydicom.dcmread(files[0])  # raises on a file without the DICOM preamble and meta header
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    for tag in (
        "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "Modality",
        "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "RescaleSlope", "RescaleIntercept",
    ):  # fmt: skip
        assert tag in ds, tag
    assert ds.pixel_array.shape == (32, 32) and ds.pixel_array.dtype == np.uint16
    assert len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 4
    assert (tmp_path / "classes.csv").read_text().splitlines()[0] == "subject,class"


def test_same_seed_same_subjects_other_seed_other(tmp_path):
    a, b, c = phantom_subject(0, seed=0), phantom_subject(0, seed=0), phantom_subject(0, seed=1)
    np.testing.assert_array_equal(a.images["flair"], b.images["flair"])
    assert not np.array_equal(a.images["flair"], c.images["flair"])
    assert (a.label > 0).any() and (a.label == 0).any()


def test_refuses_to_overwrite(tmp_path):
    write_volumes(tmp_path, "brats", subjects=1)
    with pytest.raises(FileExistsError):
        write_volumes(tmp_path, "brats", subjects=1)
    assert Path(write_volumes(tmp_path, "brats", subjects=1, overwrite=True)["root"]) == tmp_path
