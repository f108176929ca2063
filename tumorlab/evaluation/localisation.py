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

Each takes an optional ``region``: the pixels the map may point at (the brain, with ``tumorlab cam --restrict
brain``); ``None`` is the whole image. The map is judged on those pixels only, and the chance levels are those of
a map that points at random inside them: the pointing game's is the dilated mask's share of the region, the IoU's
that of a random ``top`` share of the region (``iou_chance``), the energy share's the mask's share of the region
(``mask_share``). ``peak_diagnostics`` says where the maximum fell (its distance to the tumour, the image border,
inside or outside the brain), to see why a map misses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from scipy import ndimage

__all__ = [
    "DEFAULT_TOLERANCE",
    "DEFAULT_TOP",
    "BORDER_SHARE",
    "dilate",
    "energy_share",
    "iou_chance",
    "localisation_scores",
    "mean_scores",
    "peak",
    "peak_diagnostics",
    "pointing_chance",
    "pointing_hit",
    "top_iou",
    "top_region",
]

DEFAULT_TOLERANCE = 3  # pixels at the image's resolution
DEFAULT_TOP = 0.15
BORDER_SHARE = 1 / 8  # peak_diagnostics: "at the border" is within this share of the side from an edge


def _region(region: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """The pixels judged: ``region`` as booleans (the whole image where ``None``); an empty region is an error."""
    if region is None:
        return np.ones(shape, dtype=bool)
    region = np.asarray(region) > 0
    if region.shape != tuple(shape):
        raise ValueError(f"region must have the CAM's shape {tuple(shape)}, got {region.shape}")
    if not region.any():
        raise ValueError("region is empty: no pixel to point at")
    return region


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


def peak(cam: np.ndarray, region: np.ndarray | None = None) -> tuple[int, int]:
    """``(y, x)`` of the CAM's maximum inside ``region`` (the first one in row-major order on ties)."""
    cam = np.asarray(cam, dtype=np.float64)
    inside = np.where(_region(region, cam.shape), cam, -np.inf)
    y, x = np.unravel_index(int(np.argmax(inside)), cam.shape)
    return int(y), int(x)


def pointing_hit(
    cam: np.ndarray, mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE, region: np.ndarray | None = None
) -> bool:
    """Whether the CAM's maximum (inside ``region``; first in row-major order on ties) lies within ``tolerance``
    px of the mask."""
    cam, mask = _check(cam, mask)
    return bool(dilate(mask, tolerance)[peak(cam, region)])


def pointing_chance(mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE, region: np.ndarray | None = None) -> float:
    """The hit rate of a maximum drawn uniformly over ``region`` (the image): the dilated mask's share of it."""
    mask = np.asarray(mask) > 0
    return float(dilate(mask, tolerance)[_region(region, mask.shape)].mean())


def top_region(cam: np.ndarray, top: float = DEFAULT_TOP, region: np.ndarray | None = None) -> np.ndarray:
    """Pixels of ``region`` (the image) at least as high as the CAM's ``ceil(top * N)``-th largest value there,
    ``N`` the region's pixel count.

    Ties at the threshold are all included, so a flat CAM (all zero, say) selects more than ``top`` of the
    region (all of it when constant) rather than an arbitrary subset.
    """
    if not 0 < top <= 1:
        raise ValueError(f"top must lie in (0, 1], got {top}")
    cam = np.asarray(cam, dtype=np.float64)
    inside = _region(region, cam.shape)
    values = cam[inside]
    k = max(1, math.ceil(top * values.size))
    threshold = np.partition(values, values.size - k)[values.size - k]
    return (cam >= threshold) & inside


def top_iou(cam: np.ndarray, mask: np.ndarray, top: float = DEFAULT_TOP, region: np.ndarray | None = None) -> float:
    """IoU of ``top_region(cam, top, region)`` with the mask (0 for an empty mask)."""
    cam, mask = _check(cam, mask)
    selected = top_region(cam, top, region)
    union = np.logical_or(selected, mask).sum()
    return float(np.logical_and(selected, mask).sum() / union) if union else 0.0


def iou_chance(mask: np.ndarray, top: float = DEFAULT_TOP, region: np.ndarray | None = None) -> float:
    """The IoU with the mask of ``k = ceil(top * N)`` pixels drawn at random from ``region`` (``N`` pixels), as
    expected overlap over expected union: ``E = k·m_in/N`` tumour pixels drawn (``m_in`` of the mask inside the
    region), IoU ``E / (k + m − E)`` (``m`` the whole mask). Written out by hand: no library has it; it is the
    ratio of the expectations, which the mean IoU of random draws matches to within a few % for these sizes."""
    mask = np.asarray(mask) > 0
    inside = _region(region, mask.shape)
    n, m, m_in = int(inside.sum()), int(mask.sum()), int((mask & inside).sum())
    k = max(1, math.ceil(top * n))
    expected = k * m_in / n
    return float(expected / (k + m - expected)) if k + m - expected > 0 else 0.0


def energy_share(cam: np.ndarray, mask: np.ndarray, region: np.ndarray | None = None) -> float:
    """Share of the CAM's mass inside ``region`` (negative values clipped to 0) that lies inside the mask;
    ``nan`` for an all-zero CAM."""
    cam, mask = _check(cam, mask)
    cam = np.where(_region(region, cam.shape), np.clip(cam, 0, None), 0.0)
    total = cam.sum()
    return float(cam[mask].sum() / total) if total > 0 else math.nan


def localisation_scores(
    cam: np.ndarray, mask: np.ndarray, tolerance: float = DEFAULT_TOLERANCE, top: float = DEFAULT_TOP,
    region: np.ndarray | None = None,
) -> dict[str, float]:  # fmt: skip
    """All three scores of one CAM judged on ``region`` (the image), and their chance levels for this mask:
    ``pointing_chance``, ``iou_chance`` and ``mask_share`` (the mask's share of the region: a flat map's energy
    share)."""
    mask_in = (np.asarray(mask) > 0) & _region(region, np.shape(mask))
    return {
        "pointing_game": float(pointing_hit(cam, mask, tolerance, region)),
        "pointing_chance": pointing_chance(mask, tolerance, region),
        "iou_top": top_iou(cam, mask, top, region),
        "iou_chance": iou_chance(mask, top, region),
        "energy_share": energy_share(cam, mask, region),
        "mask_share": float(mask_in.sum() / _region(region, np.shape(mask)).sum()),
    }


def peak_diagnostics(
    cam: np.ndarray, mask: np.ndarray, brain: np.ndarray | None = None, region: np.ndarray | None = None,
    border: float = BORDER_SHARE,
) -> dict[str, float]:  # fmt: skip
    """Where the CAM's maximum (inside ``region``) fell: ``peak_y``, ``peak_x``, ``peak_distance_px`` (Euclidean
    distance to the nearest tumour pixel, scipy's distance transform), ``peak_at_border`` (1 within ``border`` of
    the side from an image edge, else 0), ``peak_at_bottom`` (the same for the lower edge only) and, where a
    ``brain`` mask is given, ``peak_in_brain``."""
    cam, mask = _check(cam, mask)
    y, x = peak(cam, region)
    h, w = cam.shape
    band_y, band_x = max(1, round(border * h)), max(1, round(border * w))
    distance = ndimage.distance_transform_edt(~mask)[y, x] if mask.any() else math.nan
    out = {
        "peak_y": float(y),
        "peak_x": float(x),
        "peak_distance_px": float(distance),
        "peak_at_border": float(y < band_y or y >= h - band_y or x < band_x or x >= w - band_x),
        "peak_at_bottom": float(y >= h - band_y),
    }
    if brain is not None:
        out["peak_in_brain"] = float(np.asarray(brain, dtype=bool)[y, x])
    return out


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
