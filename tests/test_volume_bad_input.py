"""Bad volumes: one line naming the file, raised before anything is decoded where the headers show it;
``on_bad_file: skip`` leaves the whole subject out and lists it."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tumorlab.data.volumes import VolumeData
from tumorlab.errors import DataError
from tumorlab.synth.volumes import write_volumes

SMALL = {"image_size": 32, "num_workers": 0, "slices": "all", "split": (0.34, 0.33, 0.33)}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_volumes")
    return {layout: Path(write_volumes(base / layout, layout, subjects=3)["root"]) for layout in ("brats", "decathlon")}


@pytest.fixture
def brats(clean, tmp_path) -> Path:
    return Path(shutil.copytree(clean["brats"], tmp_path / "brats"))


def _resave(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    old = nib.load(path)
    nib.save(nib.Nifti1Image(data, old.affine if affine is None else affine), path)


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_modalities_of_different_shapes(brats):
    t2 = brats / "Phantom_002" / "Phantom_002_t2.nii.gz"
    _resave(t2, np.zeros((32, 30, 12), np.float32))
    with pytest.raises(DataError) as err:
        VolumeData(str(brats), **SMALL)
    assert _one_line(err).startswith(f"{t2}: shape (32, 30, 12) differs from ") and "_flair.nii.gz" in str(err.value)


def test_modalities_of_different_affines(brats):
    t1 = brats / "Phantom_001" / "Phantom_001_t1.nii.gz"
    img = nib.load(t1)
    affine = img.affine.copy()
    affine[0, 3] += 2.0
    _resave(t1, np.asarray(img.dataobj), affine)
    with pytest.raises(DataError, match=rf"^{t1}: affine differs from .*_flair\.nii\.gz by up to 2 mm"):
        VolumeData(str(brats), **SMALL)


def test_missing_modality_and_skip_lists_the_subject(brats):
    (brats / "Phantom_003" / "Phantom_003_t1ce.nii.gz").unlink()
    with pytest.raises(DataError, match=r"subject Phantom_003 lacks modality t1ce \(has: flair, t1, t2\)"):
        VolumeData(str(brats), **SMALL)
    dm = VolumeData(str(brats), on_bad_file="skip", **SMALL)
    assert [s for s, _ in dm.skipped_subjects] == ["Phantom_003"]
    assert [s.id for s in dm.subjects] == ["Phantom_001", "Phantom_002"]


def test_4d_where_3d_is_expected_and_the_reverse(brats, clean, tmp_path):
    flair = brats / "Phantom_001" / "Phantom_001_flair.nii.gz"
    _resave(flair, np.zeros((32, 32, 12, 2), np.float32))
    with pytest.raises(DataError, match=rf"^{flair}: 4D volume of shape \(32, 32, 12, 2\) where a 3D volume"):
        VolumeData(str(brats), **SMALL)
    dec = Path(shutil.copytree(clean["decathlon"], tmp_path / "dec"))
    image = dec / "imagesTr" / "Phantom_002.nii.gz"
    _resave(image, np.zeros((32, 32, 12), np.float32))
    with pytest.raises(DataError, match=rf"^{image}: 3D volume .* where a 4D volume \(one channel per modality\)"):
        VolumeData(str(dec), **SMALL)


def test_label_values_outside_the_map(brats):
    seg = brats / "Phantom_002" / "Phantom_002_seg.nii.gz"
    data = np.asarray(nib.load(seg).dataobj).copy()
    data[0, 0, 0] = 3  # BraTS 2021 has no label 3
    _resave(seg, data)
    with pytest.raises(DataError) as err:
        VolumeData(str(brats), **SMALL)
    assert _one_line(err).startswith(f"{seg}: label values [3] are not in the label map")


def test_nan_voxels_and_skip_never_half_reads_a_subject(brats, tmp_path):
    t2 = brats / "Phantom_001" / "Phantom_001_t2.nii.gz"
    data = np.asarray(nib.load(t2).dataobj).copy()
    data[3, 3, 3] = np.nan
    _resave(t2, data)
    with pytest.raises(DataError, match=rf"^{t2}: holds 1 NaN or Inf voxels"):
        VolumeData(str(brats), **SMALL)
    dm = VolumeData(str(brats), on_bad_file="skip", **{**SMALL, "split": (0.5, 0.25, 0.25)})
    assert [s for s, _ in dm.skipped_subjects] == ["Phantom_001"]
    assert {s.patient for s in dm.samples} == {"Phantom_002", "Phantom_003"}  # no slice of the bad subject


def test_truncated_nii_gz(brats):
    flair = brats / "Phantom_003" / "Phantom_003_flair.nii.gz"
    raw = gzip.decompress(flair.read_bytes())
    flair.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    with pytest.raises(DataError) as err:
        VolumeData(str(brats), **SMALL)
    assert _one_line(err).startswith(f"{flair}: truncated or corrupt volume")


def test_datalist_entry_pointing_at_a_missing_file(tmp_path):
    root = Path(write_volumes(tmp_path / "dl", "datalist", subjects=2)["root"])
    meta = json.loads(root.read_text())
    meta["training"][1]["label"] = "nowhere/roi.nii.gz"
    root.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=rf"^{root}, training\[1\], label: file .*nowhere/roi.nii.gz does not exist"):
        VolumeData(str(root), **SMALL)


@pytest.fixture(scope="module")
def dicom(tmp_path_factory) -> Path:
    return Path(write_volumes(tmp_path_factory.mktemp("dicom") / "d", "dicom", subjects=1)["root"])


def _series_files(root: Path) -> list[Path]:
    folder = sorted(p for p in root.rglob("series1"))[0]
    return sorted(folder.iterdir(), key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))


@pytest.mark.parametrize("fault", ["missing", "duplicated", "uneven"])
def test_dicom_series_geometry(dicom, tmp_path, fault):
    root = Path(shutil.copytree(dicom, tmp_path / "d"))
    files = _series_files(root)
    if fault == "missing":
        files[5].unlink()
        expected = r"missing slice\(s\) \(median spacing 2.000 mm; gaps at -3.00 -> 1.00 mm\)"
    elif fault == "duplicated":
        ds = pydicom.dcmread(files[5])
        ds.ImagePositionPatient = pydicom.dcmread(files[4]).ImagePositionPatient
        ds.save_as(files[5])
        expected = r"two slices at position -3.00 mm along the slice normal"
    else:
        ds = pydicom.dcmread(files[5])
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.7]
        ds.save_as(files[5])
        expected = r"uneven slice spacing .*gaps at -3.00 -> -0.30 mm; -0.30 -> 1.00 mm"
    with pytest.raises(DataError, match=rf"^DICOM series [\d.]+ in {files[0].parent}: {expected}"):
        VolumeData(str(root), task="classification", class_csv=str(root / "classes.csv"), **SMALL)


@pytest.mark.parametrize("fault", ["nan", "shape"])
def test_refused_volumes_through_the_cli_are_one_line_and_write_nothing(brats, tmp_path, cli, fault):
    from tests.conftest import FAST_TRAINER, REPO, TINY_UNET

    victim = brats / "Phantom_002" / "Phantom_002_t1ce.nii.gz"
    data = np.asarray(nib.load(victim).dataobj).copy()
    if fault == "nan":
        data[5, 5, 5] = np.inf
        expected = f"{victim}: holds 1 NaN or Inf voxels; expected finite intensities"
    else:
        data = data[:, :30]
        expected = f"{victim}: shape (32, 30, 12) differs from {victim.parent / 'Phantom_002_flair.nii.gz'}"
    _resave(victim, data)
    config = REPO / "configs" / "experiments" / "brats_unet_multitask.yaml"
    r = cli("fit", "--config", str(config), *FAST_TRAINER, *TINY_UNET, "--data.root", str(brats),
            "--run.root", str(tmp_path / "runs"), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("tumorlab: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"tumorlab: error: {expected}"), r.stderr
    assert not (tmp_path / "runs").exists()
