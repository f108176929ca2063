"""Image preparation, done once per file (brain crop, channel choice, resize), and augmentation per sample.

- ``DecodeSpec`` + ``prepare``: what the decode cache stores, i.e. the decoded image cropped to the brain
  (optional), reduced to the chosen channels and resized, with its mask treated identically.
- ``build_transforms``: albumentations pipelines from a YAML-friendly ``augment`` dict, applied jointly to
  image and mask in training; validation, test and prediction only normalise, with the statistics the
  model expects (``check_normalization``; ``imagenet_statistics`` by default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
from albumentations.pytorch import ToTensorV2

from tumorlab.errors import ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DEFAULT_AUGMENT",
    "AUGMENT_DEFAULTS",
    "DecodeSpec",
    "brain_bbox",
    "prepare",
    "build_transforms",
    "check_augment",
    "check_normalization",
    "imagenet_statistics",
]

# What `normalize: null` means: most smp and timm encoders declare ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# What `augment: null` means: a horizontal flip half of the time (brains are near-symmetric left/right).
DEFAULT_AUGMENT: dict = {"hflip": 0.5}

# Every key `augment` accepts, with the parameters of each and their defaults. A number instead of a
# dict sets the probability ``p`` and keeps the other defaults.
AUGMENT_DEFAULTS: dict[str, dict[str, float]] = {
    "hflip": {"p": 0.5},
    "vflip": {"p": 0.5},
    "rotate": {"limit": 15.0, "p": 0.5},  # degrees, either way
    "affine": {"shift": 0.0625, "scale": 0.1, "rotate": 15.0, "p": 0.5},  # shift-scale-rotate (A.Affine)
    "brightness_contrast": {"brightness": 0.2, "contrast": 0.2, "p": 0.5},
    "elastic": {"alpha": 30.0, "sigma": 6.0, "p": 0.25},  # pixels of displacement, smoothing in pixels
}


@dataclass(frozen=True)
class DecodeSpec:
    """How a file becomes the cached array: its key, so a change of any field never serves a stale entry."""

    image_size: int
    channels: tuple[int, ...]
    brain_crop: bool

    def key(self) -> str:
        """A short text naming the spec, part of the on-disk cache's file name."""
        ch = "".join(str(c) for c in self.channels)
        return f"s{self.image_size}_c{ch}_crop{int(self.brain_crop)}"


def brain_bbox(image: np.ndarray, margin: int = 0) -> tuple[int, int, int, int] | None:
    """The brain's bounding box ``(y0, y1, x0, x1)`` from the extreme points of its outline, or ``None``.

    The outline is the largest contour of the image after a Gaussian blur and an Otsu threshold, cleaned by
    an erosion and a dilation; its leftmost, rightmost, top and bottom points give the box (the "extreme
    points" crop common in brain-MRI classification work). A slice with no outline larger than 1 % of the
    image (e.g. an empty edge slice) gives ``None``: such slices are left uncropped.
    """
    grey = image.max(axis=2) if image.ndim == 3 else image
    blur = cv2.GaussianBlur(grey, (5, 5), 0)
    if int(blur.max()) == 0:
        return None
    _, binary = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    binary = cv2.dilate(cv2.erode(binary, None, iterations=2), None, iterations=2)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea)
    if cv2.contourArea(c) < 0.01 * grey.shape[0] * grey.shape[1]:
        return None
    pts = c[:, 0, :]
    x0, x1 = int(pts[:, 0].min()), int(pts[:, 0].max()) + 1
    y0, y1 = int(pts[:, 1].min()), int(pts[:, 1].max()) + 1
    h, w = grey.shape
    return max(0, y0 - margin), min(h, y1 + margin), max(0, x0 - margin), min(w, x1 + margin)


def prepare(image: np.ndarray, mask: np.ndarray | None, spec: DecodeSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """Crop (optional), choose channels and resize an RGB image and its mask identically.

    Returns ``(image (S, S, C) uint8, mask (S, S) uint8 or None)`` with ``S = spec.image_size``. Images are
    resized with area interpolation (no aliasing when shrinking), masks with nearest neighbour (they stay 0/1).
    """
    if spec.brain_crop and (box := brain_bbox(image)) is not None:
        y0, y1, x0, x1 = box
        image = image[y0:y1, x0:x1]
        mask = None if mask is None else mask[y0:y1, x0:x1]
    image = np.ascontiguousarray(image[..., list(spec.channels)])
    size = (spec.image_size, spec.image_size)
    shrink = image.shape[0] >= spec.image_size and image.shape[1] >= spec.image_size
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if out.ndim == 2:
        out = out[..., None]
    if mask is not None:
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    return out, mask


def check_augment(augment: Mapping | None) -> dict[str, dict[str, float]]:
    """Validate an ``augment`` mapping and fill in defaults; ``ConfigError`` names a bad key or value."""
    augment = DEFAULT_AUGMENT if augment is None else augment
    if not isinstance(augment, Mapping):
        raise ConfigError(f"data.augment must be a mapping of {sorted(AUGMENT_DEFAULTS)}, got {augment!r}")
    out: dict[str, dict[str, float]] = {}
    for name, value in augment.items():
        if name not in AUGMENT_DEFAULTS:
            raise ConfigError(f"data.augment.{name}: unknown augmentation; expected one of {sorted(AUGMENT_DEFAULTS)}")
        params = dict(AUGMENT_DEFAULTS[name])
        if isinstance(value, bool) or value is None:
            params["p"] = float(bool(value)) * params["p"] if value is not None else 0.0
        elif isinstance(value, (int, float)):
            params["p"] = float(value)
        elif isinstance(value, Mapping):
            for key, v in value.items():
                if key not in params:
                    raise ConfigError(f"data.augment.{name}.{key}: unknown parameter; expected one of {sorted(params)}")
                if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                    raise ConfigError(f"data.augment.{name}.{key} must be a number >= 0, got {v!r}")
                params[key] = float(v)
        else:
            raise ConfigError(f"data.augment.{name}: expected a probability or a mapping of {sorted(params)}")
        if not 0.0 <= params["p"] <= 1.0:
            raise ConfigError(f"data.augment.{name}: probability must lie in [0, 1], got {params['p']}")
        if params["p"] > 0:
            out[name] = params
    return out


def _augmentations(augment: dict[str, dict[str, float]]) -> list:
    steps: list = []
    constant = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": 0}
    for name, q in augment.items():
        if name == "hflip":
            steps.append(A.HorizontalFlip(p=q["p"]))
        elif name == "vflip":
            steps.append(A.VerticalFlip(p=q["p"]))
        elif name == "rotate":
            steps.append(A.Rotate(limit=q["limit"], p=q["p"], **constant))
        elif name == "affine":  # A.ShiftScaleRotate is deprecated in albumentations 2 in favour of A.Affine
            steps.append(
                A.Affine(
                    translate_percent=(-q["shift"], q["shift"]),
                    scale=(1 - q["scale"], 1 + q["scale"]),
                    rotate=(-q["rotate"], q["rotate"]),
                    p=q["p"],
                    **constant,
                )
            )
        elif name == "brightness_contrast":
            steps.append(
                A.RandomBrightnessContrast(brightness_limit=q["brightness"], contrast_limit=q["contrast"], p=q["p"])
            )
        elif name == "elastic":
            steps.append(A.ElasticTransform(alpha=q["alpha"], sigma=q["sigma"], p=q["p"], **constant))
    return steps


def imagenet_statistics(channels: Sequence[int]) -> tuple[list[float], list[float]]:
    """ImageNet ``(mean, std)`` of the fed ``channels`` (indices into RGB), in units of intensity / 255."""
    return [IMAGENET_MEAN[c] for c in channels], [IMAGENET_STD[c] for c in channels]


def check_normalization(
    mean: Sequence[float], std: Sequence[float], channels: Sequence[int], source: str = ""
) -> tuple[list[float], list[float]]:
    """``mean`` and ``std`` as lists of floats, one per fed channel, std positive; else ``ConfigError``.

    ``source`` (where the statistics come from) is named in the error.
    """
    origin = f" (from {source})" if source else ""
    try:
        mean, std = [float(m) for m in mean], [float(s) for s in std]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"data.normalize: mean and std must be lists of numbers{origin}; {err}") from None
    if len(mean) != len(channels) or len(std) != len(channels):
        raise ConfigError(
            f"data.normalize needs one mean and one std per fed channel: data.channels {list(channels)} has "
            f"{len(channels)}, got {len(mean)} means and {len(std)} stds{origin}"
        )
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise ConfigError(f"data.normalize: std must be positive and all values finite, got {mean}, {std}{origin}")
    return mean, std


def build_transforms(train: bool, augment: Mapping | None, mean: Sequence[float], std: Sequence[float]) -> A.Compose:
    """Augment (when ``train``), normalise with ``mean``/``std`` (per fed channel), convert to CHW tensors.

    ``mean`` and ``std`` are in units of intensity / 255: a channel's value ``x`` becomes
    ``(x / 255 - mean) / std``. The input is the prepared (already resized) image and, for segmentation
    data, its mask; every spatial augmentation moves both together, and masks are interpolated with
    nearest neighbour so they stay 0/1.
    """
    steps = _augmentations(check_augment(augment)) if train else []
    steps += [A.Normalize(mean=tuple(mean), std=tuple(std)), ToTensorV2()]
    return A.Compose(steps)
