"""Phantom volumes written in the layouts users download: BraTS 2021/2023, the Decathlon, nnU-Net raw, a datalist
with free file names, and DICOM series.

A phantom subject (``phantom_subject``) is a head-shaped brain in RAS with four modalities (FLAIR, T1, T1ce, T2)
and a glioma of three parts in BraTS 2021 numbering: 1 necrotic / non-enhancing core, 2 oedema, 4 enhancing rim.
Every writer stores the same subjects (subject ``p`` draws from ``default_rng([seed, p])``), each in its own
conventions: BraTS 2023 renumbers enhancing to 3, the Decathlon stores a 4D volume with 1 oedema, 2 non-enhancing,
3 enhancing, DICOM stores integers with a rescale slope and intercept. ``orientation: LPS`` writes the NIfTI
arrays flipped along x and y with the affine to match (the same anatomy, stored as many scanners export it).
Intensities are integers so that every layout, DICOM included, holds exactly the same values.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "VOLUME_LAYOUTS",
    "PhantomSubject",
    "phantom_subject",
    "write_brats",
    "write_decathlon",
    "write_nnunet",
    "write_datalist",
    "write_dicom",
    "write_volumes",
]

VOLUME_LAYOUTS = ("brats", "brats2023", "decathlon", "nnunet", "datalist", "dicom")
MODALITIES = ("flair", "t1", "t1ce", "t2")
CLASSES = ("astrocytoma", "glioblastoma")
# Mean intensity of (brain, oedema, enhancing rim, necrotic core) per modality.
_LOOK = {
    "flair": (300, 620, 520, 380),
    "t1": (420, 330, 360, 260),
    "t1ce": (400, 340, 900, 250),
    "t2": (350, 700, 560, 800),
}
_TO_2023 = {0: 0, 1: 1, 2: 2, 4: 3}
_TO_DECATHLON = {0: 0, 1: 2, 2: 1, 4: 3}
_DICOM_SLOPE, _DICOM_INTERCEPT = 0.5, -100.0


@dataclass
class PhantomSubject:
    """One phantom: id, class, modality volumes (float32 of integers, RAS), BraTS-2021 labels, RAS affine."""

    id: str
    class_name: str
    images: dict[str, np.ndarray]
    label: np.ndarray
    affine: np.ndarray


def phantom_subject(
    index: int, seed: int = 0, shape: tuple[int, int, int] = (32, 32, 12), spacing=(1.0, 1.0, 2.0)
) -> PhantomSubject:
    """Draw phantom subject ``index``: a brain ellipsoid, a three-part glioma in part of the slices, noise."""
    rng = np.random.default_rng([seed, index])
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"), axis=-1)
    head = rng.uniform(0.75, 0.9, size=3)
    brain = ((grid / head) ** 2).sum(-1) < 1.0
    centre = np.array([rng.uniform(-0.35, 0.35), rng.uniform(-0.35, 0.35), rng.uniform(-0.3, 0.3)])
    radius = rng.uniform(0.22, 0.32)
    r = np.sqrt((((grid - centre) / np.array([1.0, 1.0, 1.4])) ** 2).sum(-1)) / radius
    label = np.zeros(shape, np.uint8)
    label[(r < 1.6) & brain] = 2  # oedema
    label[(r < 1.0) & brain] = 4  # enhancing rim
    label[(r < 0.55) & brain] = 1  # necrotic core
    images = {}
    for m in MODALITIES:
        look = _LOOK[m]
        vol = np.where(brain, look[0], 0).astype(np.float32)
        for value, part in ((2, 1), (4, 2), (1, 3)):
            vol[label == value] = look[part]
        vol = vol * rng.uniform(0.9, 1.1) + np.where(brain, rng.normal(0, 25, shape), 0)
        images[m] = np.where(brain, np.clip(np.round(vol), 1, 4000), 0).astype(np.float32)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = [-(n - 1) * s / 2 for n, s in zip(shape, spacing, strict=True)]
    return PhantomSubject(f"Phantom_{index + 1:03d}", CLASSES[index % len(CLASSES)], images, label, affine)


def _subjects(n: int, seed: int, shape: tuple[int, int, int]) -> list[PhantomSubject]:
    return [phantom_subject(i, seed, shape) for i in range(n)]


def _save(array: np.ndarray, affine: np.ndarray, path: Path, orientation: str, dtype=np.float32) -> None:
    import nibabel as nib  # on first use: `tumorlab synth --layout lgg` never needs it

    if orientation == "LPS":  # the same anatomy, stored with x and y reversed
        array = array[::-1, ::-1].copy()
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        flip[:3, 3] = [array.shape[0] - 1, array.shape[1] - 1, 0]
        affine = affine @ flip
    elif orientation != "RAS":
        raise ValueError(f"orientation must be RAS or LPS, got {orientation!r}")
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))


def _relabel(label: np.ndarray, table: dict[int, int]) -> np.ndarray:
    out = np.zeros_like(label)
    for a, b in table.items():
        out[label == a] = b
    return out


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; choose a new --out or pass --overwrite")


def write_brats(out, subjects=3, seed=0, shape=(32, 32, 12), release="2021", orientation="RAS", overwrite=False):
    """``out/<case>/<case>_{flair,t1,t1ce,t2,seg}.nii.gz`` (2021) or ``<case>-{t2f,t1n,t1c,t2w,seg}`` (2023)."""
    out = Path(out)
    _check_out(out, overwrite)
    files = ("flair", "t1", "t1ce", "t2") if release == "2021" else ("t2f", "t1n", "t1c", "t2w")
    names = dict(zip(MODALITIES, files, strict=True))
    sep = "_" if release == "2021" else "-"
    for s in _subjects(subjects, seed, shape):
        for m, name in names.items():
            _save(s.images[m], s.affine, out / s.id / f"{s.id}{sep}{name}.nii.gz", orientation)
        seg = s.label if release == "2021" else _relabel(s.label, _TO_2023)
        _save(seg, s.affine, out / s.id / f"{s.id}{sep}seg.nii.gz", orientation, np.uint8)
    return {"layout": f"brats{release}", "subjects": subjects, "root": str(out)}


def write_decathlon(out, subjects=3, seed=0, shape=(32, 32, 12), orientation="RAS", overwrite=False):
    """``out/imagesTr/<case>.nii.gz`` 4D (FLAIR, T1w, t1gd, T2w), ``labelsTr/<case>.nii.gz``, ``dataset.json``."""
    out = Path(out)
    _check_out(out, overwrite)
    training = []
    for s in _subjects(subjects, seed, shape):
        four = np.stack([s.images[m] for m in MODALITIES], axis=-1)
        _save(four, s.affine, out / "imagesTr" / f"{s.id}.nii.gz", orientation)
        _save(_relabel(s.label, _TO_DECATHLON), s.affine, out / "labelsTr" / f"{s.id}.nii.gz", orientation, np.uint8)
        training.append({"image": f"./imagesTr/{s.id}.nii.gz", "label": f"./labelsTr/{s.id}.nii.gz"})
    meta = {
        "name": "BRATS",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        "numTraining": len(training),
        "training": training,
        "test": [],
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2))
    return {"layout": "decathlon", "subjects": subjects, "root": str(out)}


def write_nnunet(out, subjects=3, seed=0, shape=(32, 32, 12), orientation="RAS", overwrite=False):
    """nnU-Net v2 raw: ``imagesTr/<case>_000{0..3}.nii.gz``, ``labelsTr/<case>.nii.gz`` (Decathlon numbering),
    ``dataset.json`` with region labels, as nnU-Net's BraTS conversion writes them."""
    out = Path(out)
    _check_out(out, overwrite)
    for s in _subjects(subjects, seed, shape):
        for ch, m in enumerate(MODALITIES):
            _save(s.images[m], s.affine, out / "imagesTr" / f"{s.id}_{ch:04d}.nii.gz", orientation)
        _save(_relabel(s.label, _TO_DECATHLON), s.affine, out / "labelsTr" / f"{s.id}.nii.gz", orientation, np.uint8)
    meta = {
        "channel_names": {"0": "FLAIR", "1": "T1", "2": "T1GD", "3": "T2"},
        "labels": {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing": [3]},
        "regions_class_order": [1, 2, 3],
        "numTraining": subjects,
        "file_ending": ".nii.gz",
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2))
    return {"layout": "nnunet", "subjects": subjects, "root": str(out)}


def write_datalist(out, subjects=3, seed=0, shape=(32, 32, 12), orientation="RAS", overwrite=False):
    """Volumes under names that follow no pattern, described only by ``out/datalist.json`` (BraTS 2021 labels)."""
    out = Path(out)
    _check_out(out, overwrite)
    rng = np.random.default_rng([seed, 99])
    training = []
    for s in _subjects(subjects, seed, shape):
        folder = out / f"scans_{rng.integers(10**5):05d}"
        files = []
        for m in MODALITIES:
            path = folder / f"acq{rng.integers(10**6):06d}.nii.gz"
            _save(s.images[m], s.affine, path, orientation)
            files.append(str(path.relative_to(out)))
        label = folder / f"roi{rng.integers(10**6):06d}.nii.gz"
        _save(s.label, s.affine, label, orientation, np.uint8)
        training.append({"image": files, "label": str(label.relative_to(out)), "subject": s.id, "class": s.class_name})
    meta = {"modality": {str(i): m.upper() for i, m in enumerate(MODALITIES)}, "training": training}
    (out / "datalist.json").write_text(json.dumps(meta, indent=2))
    return {"layout": "datalist", "subjects": subjects, "root": str(out / "datalist.json")}


def write_dicom(out, subjects=3, seed=0, shape=(32, 32, 12), overwrite=False, shuffle=True):
    """One axial DICOM series per modality and subject (MR Image Storage, 16-bit, rescale slope 0.5, intercept
    −100) under ``out/<subject>/<series>/``, with shuffled file names and instance numbers (``shuffle``), and
    ``out/classes.csv`` (``subject,class``)."""
    out = Path(out)
    _check_out(out, overwrite)
    rng = np.random.default_rng([seed, 98])
    rows = []
    for s in _subjects(subjects, seed, shape):
        study = _uid(seed, s.id, "study")
        for n, m in enumerate(MODALITIES):
            _write_series(out / s.id / f"series{n + 1}", s, m, study, _uid(seed, s.id, m), rng, shuffle)
        rows.append((s.id, s.class_name))
    with open(out / "classes.csv", "w", newline="") as f:
        csv.writer(f).writerows([("subject", "class"), *rows])
    return {"layout": "dicom", "subjects": subjects, "root": str(out)}


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _write_series(folder: Path, s: PhantomSubject, modality: str, study: str, series: str, rng, shuffle: bool):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    volume = s.images[modality]
    nx, ny, nz = volume.shape
    sx, sy, sz = (float(v) for v in np.sqrt((s.affine[:3, :3] ** 2).sum(0)))
    x0, y0, z0 = s.affine[:3, 3]
    order = rng.permutation(nz) if shuffle else np.arange(nz)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(nz):
        # LPS: rows run posterior (+y), columns to the subject's left (+x): pixel [r, c] = RAS voxel [nx-1-c, ny-1-r]
        plane = volume[::-1, ::-1, k].T
        stored = np.round((plane - _DICOM_INTERCEPT) / _DICOM_SLOPE).astype(np.uint16)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID = MRImageStorage, ExplicitVRLittleEndian
        meta.MediaStorageSOPInstanceUID = _uid(series, k)
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, _uid(study, "frame")
        ds.PatientID, ds.PatientName, ds.Modality = s.id, s.id, "MR"
        ds.SeriesDescription, ds.SeriesNumber = modality.upper(), MODALITIES.index(modality) + 1
        ds.InstanceNumber = int(order[k]) + 1
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.ImagePositionPatient = [-(x0 + (nx - 1) * sx), -(y0 + (ny - 1) * sy), z0 + k * sz]
        ds.PixelSpacing, ds.SliceThickness, ds.SpacingBetweenSlices = [sy, sx], sz, sz
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _DICOM_SLOPE, _DICOM_INTERCEPT, "US"
        ds.PixelData = stored.tobytes()
        name = f"IM{rng.integers(10**8):08d}.dcm" if shuffle else f"IM{k + 1:04d}.dcm"
        ds.save_as(str(folder / name), enforce_file_format=True)


def write_volumes(out, layout: str, subjects: int = 3, seed: int = 0, size: int = 32, slices: int = 12, **kw) -> dict:
    """Write ``subjects`` phantoms in ``layout`` (one of ``VOLUME_LAYOUTS``) with ``size``² × ``slices`` voxels."""
    shape = (size, size, slices)
    writers = {
        "brats": lambda: write_brats(out, subjects, seed, shape, "2021", **kw),
        "brats2023": lambda: write_brats(out, subjects, seed, shape, "2023", **kw),
        "decathlon": lambda: write_decathlon(out, subjects, seed, shape, **kw),
        "nnunet": lambda: write_nnunet(out, subjects, seed, shape, **kw),
        "datalist": lambda: write_datalist(out, subjects, seed, shape, **kw),
        "dicom": lambda: write_dicom(out, subjects, seed, shape, **{k: v for k, v in kw.items() if k != "orientation"}),
    }
    if layout not in writers:
        raise ValueError(f"unknown volume layout {layout!r}; expected one of {', '.join(VOLUME_LAYOUTS)}")
    return writers[layout]()
