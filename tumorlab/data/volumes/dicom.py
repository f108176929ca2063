"""DICOM series through pydicom: one series (``SeriesInstanceUID``) is one volume.

pydicom reads the files; what it does not do is written here: slices are ordered by their position along the
slice normal (``ImagePositionPatient`` · (row × column direction of ``ImageOrientationPatient``)), never by
file name or ``InstanceNumber``, which exports shuffle; the geometry is checked (one orientation, no two slices
at one position, even spacing: a missing slice shows as a gap); the voxel-to-patient affine is built from the
position, orientation and ``PixelSpacing`` (DICOM's patient frame is LPS; the affine returned is RAS, as
nibabel's), and ``RescaleSlope``/``RescaleIntercept`` are applied to the stored values.

The header pass (``scan_dicom``) reads no pixel data, so a bad series is refused before anything is decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tumorlab.data.volumes.nifti import VolumeHeader, canonical_geometry, nib
from tumorlab.errors import DataError

__all__ = ["DicomSeries", "scan_dicom", "read_series", "SPACING_TOLERANCE"]

SPACING_TOLERANCE = 0.01  # relative: slice gaps may differ by 1 % (rounding in exported positions), not more
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class DicomSeries:
    """One series: its UID, patient, description, files in slice order and the geometry they imply."""

    uid: str
    patient: str
    description: str
    files: tuple[Path, ...]
    header: VolumeHeader
    lps_affine: np.ndarray  # voxel (column, row, slice) of the stored order -> LPS millimetres
    folder: Path

    @property
    def path(self) -> Path:
        """The folder that holds the series (what error messages and the audit name)."""
        return self.folder


def _read_header(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError):
        return None


def scan_dicom(root: str | Path, skipped: list[tuple[str, str]] | None = None) -> list[DicomSeries]:
    """Every DICOM image series under ``root``, grouped by ``SeriesInstanceUID``, headers checked.

    Files that are not DICOM (a README, ``DICOMDIR`` aside) are passed over and listed in ``skipped``.

    Raises:
        DataError: ``root`` holds no DICOM series; a series lacks the geometry tags, mixes orientations or
            sizes, repeats a slice position, or has uneven spacing (the message names the series folder and
            the positions).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"DICOM root {root} does not exist or is not a folder")
    groups: dict[str, list[tuple[Path, object]]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            path = Path(dirpath) / name
            ds = _read_header(path)
            if ds is None or "SeriesInstanceUID" not in ds:
                if skipped is not None:
                    skipped.append((str(path), "not a DICOM image"))
                continue
            groups.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    if not groups:
        raise DataError(f"{root}: no DICOM series found (files with a SeriesInstanceUID)")
    return [_series(uid, members) for uid, members in sorted(groups.items())]


def _series(uid: str, members: list[tuple[Path, object]]) -> DicomSeries:
    folder = Path(os.path.commonpath([str(p.parent) for p, _ in members]))
    where = f"DICOM series {uid} in {folder}"
    for path, ds in members:
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if tag not in ds:
                raise DataError(f"{path}: lacks {tag}, which {where} needs to place its slices")
    iops = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in members])
    if not np.allclose(iops, iops[0], atol=1e-4):
        raise DataError(f"{where}: slices with different ImageOrientationPatient; expected one orientation")
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in members}
    if len(sizes) > 1:
        raise DataError(f"{where}: slices of different sizes {sorted(sizes)}")
    row_dir, col_dir = iops[0][:3], iops[0][3:]
    normal = np.cross(row_dir, col_dir)
    ipps = np.array([[float(v) for v in ds.ImagePositionPatient] for _, ds in members])
    positions = ipps @ normal
    order = np.argsort(positions, kind="stable")
    positions, ipps = positions[order], ipps[order]
    members = [members[i] for i in order]
    _check_positions(where, positions)
    rows, cols = sizes.pop()
    dr, dc = (float(v) for v in members[0][1].PixelSpacing)  # spacing between rows, between columns
    step = (ipps[-1] - ipps[0]) / (len(ipps) - 1) if len(ipps) > 1 else normal * _slice_thickness(members[0][1])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_dir * dc, col_dir * dr, step, ipps[0]
    ras = _LPS_TO_RAS @ lps
    shape = (cols, rows, len(members))
    ras_affine, ras_shape = canonical_geometry(ras, shape)
    spacing = tuple(float(v) for v in np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0)))
    codes = tuple(nib().orientations.aff2axcodes(ras))
    header = VolumeHeader(folder, ras_shape, ras_affine, spacing, codes)  # type: ignore[arg-type]
    first = members[0][1]
    return DicomSeries(
        uid,
        str(getattr(first, "PatientID", "") or folder.name),
        str(getattr(first, "SeriesDescription", "") or getattr(first, "ProtocolName", "") or uid),
        tuple(p for p, _ in members),
        header,
        lps,
        folder,
    )


def _slice_thickness(ds) -> float:
    return float(getattr(ds, "SpacingBetweenSlices", None) or getattr(ds, "SliceThickness", None) or 1.0)


def _check_positions(where: str, positions: np.ndarray) -> None:
    """No two slices at one position; even gaps (a missing slice shows as a gap of twice the spacing)."""
    if len(positions) < 2:
        return
    gaps = np.diff(positions)
    same = np.flatnonzero(gaps < 1e-3)
    if len(same):
        shown = ", ".join(f"{positions[i]:.2f}" for i in same[:5])
        raise DataError(f"{where}: two slices at position {shown} mm along the slice normal (duplicated slice)")
    spacing = float(np.median(gaps))
    off = np.flatnonzero(np.abs(gaps - spacing) > SPACING_TOLERANCE * spacing)
    if len(off):
        detail = "; ".join(f"{positions[i]:.2f} -> {positions[i + 1]:.2f} mm" for i in off[:5])
        missing = all(abs(gaps[i] / spacing - round(gaps[i] / spacing)) < 0.05 and gaps[i] > spacing for i in off)
        what = "missing slice(s)" if missing else "uneven slice spacing"
        raise DataError(f"{where}: {what} (median spacing {spacing:.3f} mm; gaps at {detail})")


def read_series(series: DicomSeries) -> tuple[np.ndarray, VolumeHeader]:
    """Decode a series into a float32 ``(X, Y, Z)`` array in RAS, with rescale slope and intercept applied.

    Raises:
        DataError: a file whose pixel data cannot be decoded, or NaN/Inf after rescaling.
    """
    import pydicom

    planes = []
    for path in series.files:
        try:
            ds = pydicom.dcmread(str(path))
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as err:  # pydicom raises many kinds for truncated or unsupported pixel data
            raise DataError(f"{path}: DICOM pixel data cannot be decoded ({type(err).__name__}: {err})") from None
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        planes.append((pixels * slope + intercept).T)  # (rows, columns) -> (column, row) = voxel axes 0, 1
    data = np.stack(planes, axis=-1)
    if not np.isfinite(data).all():
        raise DataError(f"{series.folder}: DICOM series {series.uid} holds NaN or Inf values after rescaling")
    img = nib().as_closest_canonical(nib().Nifti1Image(data, _LPS_TO_RAS @ series.lps_affine))
    out = np.asarray(img.dataobj, dtype=np.float32)
    if out.shape != series.header.shape or not np.allclose(img.affine, series.header.affine, atol=1e-4):
        raise DataError(f"{series.folder}: DICOM series {series.uid} decoded to an unexpected grid {out.shape}")
    return out, series.header
