"""Decoding of image and mask files into the arrays every loader works on.

Images come back as ``(H, W, 3)`` uint8 RGB whatever the file holds: grey-level and RGBA files are
converted, 16-bit files are rescaled to 8 bits. Masks come back as ``(H, W)`` uint8 with values 0/1.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tumorlab.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "read_image", "read_mask"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".bmp")


def _decode(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataError(f"{path}: not a readable image (corrupt, truncated or not an image)")
    return array


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float32)
    hi = float(array.max())
    return (array * (255.0 / hi) if hi > 0 else array).round().clip(0, 255).astype(np.uint8)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB."""
    path = Path(path)
    array = _to_uint8(_decode(path))
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.ndim == 3 and array.shape[2] == 1:
        return cv2.cvtColor(array[..., 0], cv2.COLOR_GRAY2RGB)
    if array.ndim == 3 and array.shape[2] == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if array.ndim == 3 and array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    raise DataError(f"{path}: unsupported image shape {array.shape}; expected grey-level, RGB or RGBA")


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as ``(H, W)`` uint8 with 1 for tumour, 0 elsewhere (any non-zero value is tumour)."""
    path = Path(path)
    array = _decode(path)
    if array.ndim == 3:
        array = array.max(axis=2)
    return (array > 0).astype(np.uint8)
