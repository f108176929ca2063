"""A subject's volumes, checked and decoded: the header pass (before anything is decoded) and the decode pass.

``check_subject`` reads headers only: every chosen modality present, 3D where 3D is expected (a 4D file only
where a channel of it is named), one grid for all modalities and the label volume (shape equal, affine within
``AFFINE_TOLERANCE`` mm). ``decode_subject`` then decompresses each file once and returns the RAS arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tumorlab.data.volumes.dicom import read_series
from tumorlab.data.volumes.layouts import Channel, Subject
from tumorlab.data.volumes.nifti import VolumeHeader, read_header, read_nifti
from tumorlab.errors import DataError

__all__ = ["AFFINE_TOLERANCE", "SubjectGrid", "check_subject", "decode_subject"]

AFFINE_TOLERANCE = 1e-3  # mm (and direction cosines): header round-off, not a different grid


@dataclass(frozen=True)
class SubjectGrid:
    """The one grid every volume of a subject shares: RAS shape, affine, spacing (mm), the files' orientation."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    spacing: tuple[float, float, float]
    source_axcodes: tuple[str, str, str]


def _header(channel: Channel) -> VolumeHeader:
    if channel.series is not None:
        return channel.series.header
    header = read_header(channel.path, ndim=3 if channel.index is None else 4)
    if channel.index is not None and channel.index >= header.channels:
        raise DataError(f"{channel.path}: has {header.channels} channels; channel {channel.index} was asked for")
    return header


def check_subject(subject: Subject, modalities: list[str], needs_label: bool) -> SubjectGrid:
    """Check ``subject``'s headers for ``modalities`` (and its label volume where ``needs_label``).

    Raises:
        DataError: a missing modality or label volume, a 4D file where a 3D one is expected or the reverse,
            modalities (or the label) whose shapes or affines disagree; the message names the files.
    """
    missing = [m for m in modalities if m not in subject.images]
    if missing:
        have = ", ".join(subject.images) or "none"
        raise DataError(f"{subject.where}: subject {subject.id} lacks modality {', '.join(missing)} (has: {have})")
    if needs_label and subject.label is None:
        raise DataError(f"{subject.where}: subject {subject.id} has no label volume (segmentation needs one)")
    channels = [subject.images[m] for m in modalities] + ([subject.label] if needs_label else [])
    headers = [_header(c) for c in channels]
    first, ref = channels[0], headers[0]
    for channel, header in zip(channels[1:], headers[1:], strict=True):
        if header.shape[:3] != ref.shape[:3]:
            raise DataError(
                f"{channel.describe()}: shape {header.shape[:3]} differs from {first.describe()} {ref.shape[:3]} "
                f"(subject {subject.id}); every modality and the label must share one grid"
            )
        if not np.allclose(header.affine, ref.affine, atol=AFFINE_TOLERANCE):
            worst = float(np.abs(header.affine - ref.affine).max())
            raise DataError(
                f"{channel.describe()}: affine differs from {first.describe()} by up to {worst:.4g} mm "
                f"(subject {subject.id}); every modality and the label must share one grid (resample first)"
            )
    return SubjectGrid(ref.shape[:3], ref.affine, ref.spacing, ref.source_axcodes)  # type: ignore[arg-type]


def _decode(channel: Channel, cache: dict) -> np.ndarray:
    if channel.series is not None:
        return read_series(channel.series)[0]
    if channel.index is None:
        return read_nifti(channel.path, ndim=3)[0]
    if channel.path not in cache:  # a 4D file is decompressed once for all its channels
        cache[channel.path] = read_nifti(channel.path, ndim=4)[0]
    return cache[channel.path][..., channel.index]


def decode_subject(subject: Subject, modalities: list[str], with_label: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``(images (X, Y, Z, M) float32 in RAS, label (X, Y, Z) or None)``, each file decompressed once."""
    cache: dict = {}
    images = np.stack([_decode(subject.images[m], cache) for m in modalities], axis=-1)
    label = _decode(subject.label, cache) if with_label and subject.label is not None else None
    return images, label
