"""Decoding of image and mask files into the arrays every loader works on.

Images come back as ``(H, W, 3)`` uint8 RGB whatever the file holds: grey-level and RGBA files are
converted, 16-bit files are rescaled to 8 bits. Masks come back as ``(H, W)`` uint8 with values 0/1; a
mask holding more than two values (a label map, an interpolated or JPEG-compressed mask) is refused rather
than guessed at. Every failure is a ``DataError`` that names the file and the cause.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from tumorlab.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "read_image", "read_mask", "decode_image", "image_mode", "to_rgb"]

IMAGE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".bmp")
MIN_SIDE = 8  # = the smallest data.image_size: a smaller file is a thumbnail or a placeholder, not a scan


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path``; ``DataError`` for a missing or empty (0-byte) file."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    data = path.read_bytes()
    if not data:
        raise DataError(f"{path}: empty file (0 bytes)")
    return data


def decode_image(data: bytes, path: str | Path) -> np.ndarray:
    """Decode encoded image bytes as stored (any depth and channel count); ``path`` names the file in errors."""
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise DataError(f"{path}: not a readable image (corrupt, truncated or not an image)")
    if min(array.shape[:2]) < MIN_SIDE:
        height, width = array.shape[:2]
        raise DataError(f"{path}: image is {width}x{height} pixels; expected at least {MIN_SIDE}x{MIN_SIDE}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise DataError(f"{path}: holds NaN or Inf pixel values ({image_mode(array)})")
    return array


def _decode(path: Path) -> np.ndarray:
    return decode_image(read_bytes(path), path)


def image_mode(array: np.ndarray) -> str:
    """A short description of a decoded array as stored: ``grey 8-bit``, ``RGB 8-bit``, ``RGBA 16-bit`` ..."""
    channels = 1 if array.ndim == 2 else array.shape[2]
    kind = {1: "grey", 2: "grey+alpha", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}-channel")
    return f"{kind} {array.dtype.itemsize * 8}-bit" + ("" if array.dtype.kind in "ui" else f" {array.dtype}")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    array = array.astype(np.float32)
    hi = float(array.max())
    return (array * (255.0 / hi) if hi > 0 else array).round().clip(0, 255).astype(np.uint8)


def to_rgb(array: np.ndarray, path: str | Path) -> np.ndarray:
    """Convert a decoded array (OpenCV channel order) to ``(H, W, 3)`` uint8 RGB."""
    array = _to_uint8(array)
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    if array.ndim == 3 and array.shape[2] == 1:
        return cv2.cvtColor(array[..., 0], cv2.COLOR_GRAY2RGB)
    if array.ndim == 3 and array.shape[2] == 2:  # grey + alpha: keep the grey
        return cv2.cvtColor(np.ascontiguousarray(array[..., 0]), cv2.COLOR_GRAY2RGB)
    if array.ndim == 3 and array.shape[2] == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if array.ndim == 3 and array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGB)
    raise DataError(f"{path}: unsupported image shape {array.shape}; expected grey-level, RGB or RGBA")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB."""
    path = Path(path)
    return to_rgb(_decode(path), path)


def mask_from_array(array: np.ndarray, path: str | Path = "mask") -> np.ndarray:
    """A decoded mask as ``(H, W)`` uint8 0/1: 0 is background, the one other value (1, 255 ...) is tumour.

    Raises:
        DataError: the mask holds more than two values (``path`` names it in the message).
    """
    if array.ndim == 3:
        array = array.max(axis=2)
    values = np.unique(array)
    if len(values) > 2 or (len(values) == 2 and values[0] != 0):
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (" ..." if len(values) > 6 else "")
        raise DataError(
            f"{path}: mask holds {len(values)} values ({shown}); expected 0 for background and one value "
            "(1 or 255) for tumour. Save masks losslessly (PNG/TIFF, not JPEG) and without interpolation"
        )
    return (array > 0).astype(np.uint8)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file as ``(H, W)`` uint8 with 1 for tumour, 0 elsewhere (``mask_from_array``)."""
    path = Path(path)
    return mask_from_array(_decode(path), path)
