"""How well a class-activation map points at the tumour: three scores of one CAM against one mask.

Pure numpy; ``cam`` and ``mask`` are 2-D arrays of the same shape (the CAM upsampled to the image, as
pytorch-grad-cam returns it, and the tumour mask prepared at the same size).

- ``pointing_hit``: the pointing game (Zhang et al., 2016). A hit when the CAM's maximum lies within
  ``tolerance`` pixels (Euclidean) of a tumour pixel, i.e. inside the mask dilated by a disk of that radius.
  The original uses 15 px at 224 px; ``DEFAULT_TOLERANCE`` = 3 px suits the 32-128 px inputs used here.
  The chance level of a map that points at random is the dilated mask's share of the image
  (``pointing_chance``).
- ``top_iou``: IoU with the mask of the CAM thresholded at its top ``top`` share (default 15 %) of pixels.
- ``energy_share``: the share of the CAM's (non-negative) mass that falls inside the mask.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = [
    "DEFAULT_TOLERANCE",
    "DEFAULT_TOP",
    "dilate",
    "energy_share",
    "localisation_scores",
    "mean_scores",
    "pointing_chance",
    "pointing_hit",
    "top_iou",
    "top_region",
]

DEFAULT_TOLERANCE = 3  # pixels at the image's resolution
DEFAULT_TOP = 0.15


def _check(cam: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cam, mask = np.asarray(cam, dtype=np.float64), np.asarray(mask) > 0
    if cam.ndim != 2 or cam.shape != mask.shape:
        raise ValueError(f"cam and mask must be 2-D arrays of one shape, got {cam.shape} and {mask.shape}")
    return cam, mask


def dilate(mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """``mask`` grown by a disk of radius ``tolerance`` pixels: every pixel within that distance of the mask."""
    mask = np.asarray(mask) > 0
    if tolerance <= 0 or not mask.any():
        return mask.copy()
    r = int(math.floor(tolerance))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    out = np.zeros_like(mask)
    h, w = mask.shape
    for oy, ox in zip(dy[dy**2 + dx**2 <= tolerance**2], dx[dy**2 + dx**2 <= tolerance**2], strict=True):
        # shift the mask by (oy, ox) and OR it in: the union of shifts over the disk is the dilation
        out[max(0, oy) : h + min(0, oy), max(0, ox) : w + min(0, ox)] |= mask[
            max(0, -oy) : h + min(0, -oy), max(0, -ox) : w + min(0, -ox)
        ]
    return out


def pointing_hit(cam: np.ndarray, mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """Whether the CAM's maximum (the first one in row-major order on ties) lies within ``tolerance`` px of the mask."""
    cam, mask = _check(cam, mask)
    y, x = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return bool(dilate(mask, tolerance)[y, x])


def pointing_chance(mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> float:
    """The hit rate of a maximum drawn uniformly over the image: the dilated mask's share of the pixels."""
    return float(dilate(mask, tolerance).mean())


def top_region(cam: np.ndarray, top: float = DEFAULT_TOP) -> np.ndarray:
    """Pixels at least as high as the CAM's ``ceil(top * N)``-th largest value.

    Ties at the threshold are all included, so a flat CAM (all zero, say) selects more than ``top`` of the
    image (all of it when constant) rather than an arbitrary subset.
    """
    if not 0 < top <= 1:
        raise ValueError(f"top must lie in (0, 1], got {top}")
    cam = np.asarray(cam, dtype=np.float64)
    k = max(1, math.ceil(top * cam.size))
    threshold = np.partition(cam.ravel(), cam.size - k)[cam.size - k]
    return cam >= threshold


def top_iou(cam: np.ndarray, mask: np.ndarray, top: float = DEFAULT_TOP) -> float:
    """IoU of ``top_region(cam, top)`` with the mask (0 for an empty mask)."""
    cam, mask = _check(cam, mask)
    region = top_region(cam, top)
    union = np.logical_or(region, mask).sum()
    return float(np.logical_and(region, mask).sum() / union) if union else 0.0


def energy_share(cam: np.ndarray, mask: np.ndarray) -> float:
    """Share of the CAM's mass (negative values clipped to 0) inside the mask; ``nan`` for an all-zero CAM."""
    cam, mask = _check(cam, mask)
    cam = np.clip(cam, 0, None)
    total = cam.sum()
    return float(cam[mask].sum() / total) if total > 0 else math.nan


def localisation_scores(
    cam: np.ndarray, mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE, top: float = DEFAULT_TOP
) -> dict[str, float]:
    """All three scores of one CAM, and the pointing game's chance level for this mask."""
    return {
        "pointing_game": float(pointing_hit(cam, mask, tolerance)),
        "pointing_chance": pointing_chance(mask, tolerance),
        "iou_top": top_iou(cam, mask, top),
        "energy_share": energy_share(cam, mask),
        "mask_share": float((np.asarray(mask) > 0).mean()),
    }


def mean_scores(scores: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each score over slices, ``nan`` entries (an all-zero CAM's energy share) left out."""
    rows = list(scores)
    keys = list(rows[0]) if rows else []
    out = {}
    for key in keys:
        values = np.array([r[key] for r in rows], dtype=np.float64)
        values = values[~np.isnan(values)]
        out[key] = float(values.mean()) if len(values) else math.nan
    return out
