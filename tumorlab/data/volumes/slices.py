"""From a volume in RAS to 2D slices and back: intensity normalisation, slice orientation, slice selection.

Intensity (per volume and modality, over the brain: the non-zero voxels, as skull-stripped BraTS volumes have it):

- ``zscore``: (v − mean) / std of the brain voxels, then the window ±``ZSCORE_WINDOW`` standard deviations is
  stored in 8 bits (0.031 SD per level; background stays 0). This is nnU-Net's MRI scheme.
- ``percentile``: clipped to the [0.5, 99.5] percentiles of the brain voxels, scaled to [0, 1], stored in 8 bits.
- ``none``: values already normalised are taken as they are: ``value_range`` (default [0, 1]) maps linearly to
  the 8 bits, values outside are clipped (and counted).

The 8-bit slices then go through the same cache, augmentations and normalisation as every other data set.

Slices: ``slice_plane(volume, axis, k)`` shows a slice of a RAS volume with anatomical up at the top and the
subject's right on the right of the image (neurological convention): axial slices have anterior at the top,
coronal and sagittal slices superior at the top. ``plane_to_volume`` is its inverse (for stacking predictions).
"""

from __future__ import annotations

import numpy as np

from tumorlab.errors import ConfigError, DataError

__all__ = [
    "AXES",
    "INTENSITY",
    "SELECTIONS",
    "ZSCORE_WINDOW",
    "normalise",
    "slice_plane",
    "plane_to_volume",
    "select_slices",
]

AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
INTENSITY = ("zscore", "percentile", "none")
SELECTIONS = ("all", "brain", "tumour", "tumour_balanced")
ZSCORE_WINDOW = 4.0
PERCENTILES = (0.5, 99.5)


def normalise(
    volume: np.ndarray, method: str, path: str, value_range: tuple[float, float] = (0.0, 1.0)
) -> tuple[np.ndarray, int]:
    """One modality's volume as ``uint8`` by ``method``; returns the array and the number of clipped voxels
    (``none`` only). ``path`` names the file in errors.

    Raises:
        DataError: a volume without any non-zero voxel (``zscore``, ``percentile``).
    """
    if method == "none":
        lo, hi = value_range
        scaled = (volume - lo) / (hi - lo)
        clipped = int(((scaled < 0) | (scaled > 1)).sum())
        return (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8), clipped
    brain = volume != 0
    if not brain.any():
        raise DataError(f"{path}: every voxel is 0; expected a brain volume")
    values = volume[brain]
    if method == "zscore":
        std = float(values.std())
        z = (volume - float(values.mean())) / (std if std > 0 else 1.0)
        scaled = (z + ZSCORE_WINDOW) / (2 * ZSCORE_WINDOW)
    elif method == "percentile":
        lo, hi = (float(v) for v in np.percentile(values, PERCENTILES))
        scaled = (volume - lo) / (hi - lo if hi > lo else 1.0)
    else:
        raise ConfigError(f"data.intensity must be one of {list(INTENSITY)}, got {method!r}")
    out = (np.clip(scaled, 0, 1) * 255).round().astype(np.uint8)
    out[~brain] = 0
    return out, 0


def slice_plane(volume: np.ndarray, axis: int, k: int) -> np.ndarray:
    """Slice ``k`` along ``axis`` of a RAS volume ``(X, Y, Z[, C])`` as an image ``(rows, columns[, C])``."""
    plane = np.take(volume, k, axis=axis)  # the two remaining axes in RAS order
    return np.ascontiguousarray(np.swapaxes(plane[:, ::-1], 0, 1))


def plane_to_volume(image: np.ndarray) -> np.ndarray:
    """The inverse of ``slice_plane`` for one slice: an image ``(rows, columns)`` back to its two RAS axes."""
    return np.swapaxes(image, 0, 1)[:, ::-1]


def select_slices(
    brain: np.ndarray,
    tumour: np.ndarray | None,
    how: str,
    step: int,
    max_per_subject: int | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Indices (sorted) of the slices to use from per-slice brain and tumour voxel counts.

    Args:
        brain: voxels of brain (non-zero intensity) in each slice.
        tumour: tumour voxels of each slice, or ``None`` without a label volume.
        how: ``all``; ``brain`` (slices with at least 1 % of the largest slice's brain area); ``tumour``
            (slices with tumour); ``tumour_balanced`` (every tumour slice and as many brain slices without tumour,
            drawn at random, or all of them where there are fewer).
        step: keep every ``step``-th slice (counted from the first) before anything else.
        max_per_subject: at most this many slices, drawn at random without replacement (as studies
            downsampled per patient); ``None``: no cap.
        rng: the draws' generator (seeded per subject by the caller).
    """
    n = len(brain)
    candidates = np.arange(0, n, step)
    if how != "all":
        has_brain = brain[candidates] >= max(1, 0.01 * float(brain.max()))
        if how == "brain":
            candidates = candidates[has_brain]
        else:
            if tumour is None:
                raise ConfigError(f"data.slices: {how} needs label volumes")
            has_tumour = tumour[candidates] > 0
            positives = candidates[has_tumour]
            if how == "tumour":
                candidates = positives
            else:
                negatives = candidates[has_brain & ~has_tumour]
                if len(negatives) > len(positives):
                    negatives = rng.choice(negatives, size=len(positives), replace=False)
                candidates = np.sort(np.concatenate([positives, negatives]))
    if max_per_subject is not None and len(candidates) > max_per_subject:
        candidates = np.sort(rng.choice(candidates, size=max_per_subject, replace=False))
    return candidates.astype(np.int64)
