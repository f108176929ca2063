"""NIfTI volumes through nibabel: header checks without decompression, reading in RAS, writing masks back.

Every volume is reoriented to the closest canonical orientation (RAS+: the first array axis runs to the
subject's Right, the second Anterior, the third Superior) with ``nibabel.as_closest_canonical``, so that an
axial slice ``k`` is ``array[:, :, k]`` for every subject whatever orientation the file was written in.
``write_like`` puts a mask computed in RAS back into the source file's own orientation, affine and header,
so that it opens on top of the input in ITK-SNAP or 3D Slicer.

Every failure is a ``DataError`` naming the file.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tumorlab.errors import DataError

if TYPE_CHECKING:
    import nibabel

__all__ = ["VolumeHeader", "read_header", "read_nifti", "canonical_geometry", "write_like", "NIFTI_SUFFIXES"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def nib() -> Any:
    """nibabel, imported on first use: it loads pydicom and requests, which a fit on 2D data never needs."""
    import nibabel

    return nibabel


@dataclass(frozen=True)
class VolumeHeader:
    """What a NIfTI header says, in RAS: shape (3 spatial axes, then channels), affine, spacing in mm, axis codes
    of the file as stored (``('L', 'P', 'S')`` ...)."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    source_axcodes: tuple[str, str, str]

    @property
    def channels(self) -> int:
        """1 for a 3D volume, the length of the fourth axis for a 4D one."""
        return int(np.prod(self.shape[3:])) if len(self.shape) > 3 else 1


def _load(path: Path) -> nibabel.spatialimages.SpatialImage:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return nib().load(str(path))
    except Exception as err:  # nibabel raises ImageFileError, EOFError, zlib errors ... for a bad header
        raise DataError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from None


def _spatial_shape(img: nibabel.spatialimages.SpatialImage) -> tuple[int, ...]:
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:  # (X, Y, Z, 1): a 3D volume written with a channel axis
        shape = shape[:-1]
    return shape


def canonical_geometry(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """The RAS affine and shape a volume of ``affine`` and ``shape`` has after ``as_closest_canonical``."""
    o = nib().orientations
    transform = o.ornt_transform(o.io_orientation(affine), o.axcodes2ornt(("R", "A", "S")))
    spatial = shape[:3]
    new_affine = affine @ nib().orientations.inv_ornt_aff(transform, spatial)
    new_shape = tuple(int(spatial[int(axis)]) for axis in np.argsort(transform[:, 0]))
    return new_affine, new_shape + tuple(shape[3:])


def read_header(path: str | Path, ndim: int = 3) -> VolumeHeader:
    """Read only the header of ``path`` (no decompression of the voxels) and check its dimensionality.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        ndim: 3 where a 3D volume is expected (one modality, a label map), 4 for a 4D file of modalities.

    Raises:
        DataError: unreadable header, or a 4D file where a 3D one is expected and the reverse.
    """
    path = Path(path)
    img = _load(path)
    shape = _spatial_shape(img)
    if len(shape) != ndim:
        want = "a 3D volume" if ndim == 3 else "a 4D volume (one channel per modality)"
        raise DataError(f"{path}: {len(shape)}D volume of shape {shape} where {want} is expected")
    affine = np.asarray(img.affine, dtype=np.float64)
    ras_affine, ras_shape = canonical_geometry(affine, shape)
    spacing = tuple(float(v) for v in np.sqrt((ras_affine[:3, :3] ** 2).sum(axis=0)))
    codes = tuple(nib().orientations.aff2axcodes(affine))
    return VolumeHeader(path, ras_shape, ras_affine, spacing, codes)  # type: ignore[arg-type]


def read_nifti(path: str | Path, ndim: int = 3) -> tuple[np.ndarray, VolumeHeader]:
    """Decode ``path`` into a float32 array in RAS orientation (``(X, Y, Z)`` or ``(X, Y, Z, C)``).

    Scaling in the header (``scl_slope``/``scl_inter``) is applied by nibabel.

    Raises:
        DataError: the checks of ``read_header``; a truncated or corrupt ``.nii.gz``; NaN or Inf voxels.
    """
    path = Path(path)
    header = read_header(path, ndim)
    img = nib().as_closest_canonical(_load(path))
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (EOFError, OSError, zlib.error, ValueError) as err:
        raise DataError(f"{path}: truncated or corrupt volume, the voxels cannot be read ({err})") from None
    data = data.reshape(header.shape)
    bad = ~np.isfinite(data)
    if bad.any():
        raise DataError(f"{path}: holds {int(bad.sum())} NaN or Inf voxels; expected finite intensities")
    if not np.allclose(img.affine, header.affine, atol=1e-4):
        raise DataError(f"{path}: reorientation to RAS gave an unexpected affine")  # guards canonical_geometry
    return data, header


def write_like(mask: np.ndarray, source: str | Path | None, out: str | Path, ras_affine: np.ndarray) -> Path:
    """Write ``mask`` (uint8, in RAS, ``(X, Y, Z)``) as NIfTI in the orientation, affine and header of ``source``.

    Args:
        mask: the predicted label volume in the RAS grid of the source.
        source: the NIfTI file the mask belongs to (its header is copied, data type set to uint8), or
            ``None`` for volumes without one (DICOM series): the mask is then written in RAS with ``ras_affine``.
        out: the ``.nii.gz`` to write.
        ras_affine: the RAS affine of the source (``VolumeHeader.affine``), checked against ``mask``'s grid.
    """
    out = Path(out)
    mask = np.asarray(mask, dtype=np.uint8)
    if source is None or not str(source).endswith(NIFTI_SUFFIXES):
        img = nib().Nifti1Image(mask, ras_affine)
        img.set_qform(ras_affine, code=1)
        img.set_sform(ras_affine, code=1)
    else:
        src = _load(Path(source))
        src_affine = np.asarray(src.affine, dtype=np.float64)
        ras = nib().Nifti1Image(mask, ras_affine)
        o = nib().orientations
        back = ras.as_reoriented(o.ornt_transform(o.axcodes2ornt(("R", "A", "S")), o.io_orientation(src_affine)))
        if back.shape != _spatial_shape(src)[:3] or not np.allclose(back.affine, src_affine, atol=1e-4):
            raise DataError(f"{source}: the mask's grid {mask.shape} does not map back onto this volume")
        header = src.header.copy()
        header.set_data_dtype(np.uint8)
        header.set_data_shape(back.shape)
        img = nib().Nifti1Image(np.asarray(back.dataobj, dtype=np.uint8), src_affine, header=header)
        img.header["scl_slope"], img.header["scl_inter"] = 1.0, 0.0
    out.parent.mkdir(parents=True, exist_ok=True)
    nib().save(img, str(out))
    return out
