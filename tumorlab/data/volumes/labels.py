"""Label maps: which voxel values of a label volume make up each output channel (a region or a class).

A label map is ``{channel name: [voxel values]}``; a voxel belongs to a channel when its value is listed there,
so channels may overlap (BraTS regions, trained as independent sigmoid outputs) or not (classes). Each layout
ships its own map, because the releases number their labels differently:

- ``brats2021`` (BraTS 2017-2021): 1 necrotic / non-enhancing core, 2 oedema, 4 enhancing tumour;
  whole tumour {1, 2, 4}, tumour core {1, 4}, enhancing {4}.
- ``brats2023`` (BraTS 2023 adult glioma): as 2021, but enhancing tumour is label 3: {1, 2, 3}, {1, 3}, {3}.
- ``decathlon`` (Medical Segmentation Decathlon, Task01_BrainTumour): 1 oedema, 2 non-enhancing tumour,
  3 enhancing tumour; whole tumour {1, 2, 3}, tumour core {2, 3}, enhancing {3}.
- ``binary``: every non-zero voxel is tumour (one channel, as in the LGG data).

The cache keeps a voxel's channels as bits of one ``uint8`` (bit ``c`` = channel ``c``), so up to 8 channels.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from tumorlab.errors import ConfigError, DataError

__all__ = ["LABEL_MAPS", "BRATS_REGIONS", "resolve_label_map", "apply_label_map", "unpack_channels"]

BRATS_REGIONS = ("whole_tumour", "tumour_core", "enhancing")

LABEL_MAPS: dict[str, dict[str, list[int]] | None] = {
    "brats2021": dict(zip(BRATS_REGIONS, ([1, 2, 4], [1, 4], [4]), strict=True)),
    "brats2023": dict(zip(BRATS_REGIONS, ([1, 2, 3], [1, 3], [3]), strict=True)),
    "decathlon": dict(zip(BRATS_REGIONS, ([1, 2, 3], [2, 3], [3]), strict=True)),
    "binary": None,  # every non-zero voxel
}
MAX_CHANNELS = 8


def resolve_label_map(label_map: str | Mapping | None, layout_default: str) -> dict[str, list[int]] | None:
    """The map to use: a preset name, ``{name: [values]}``, ``"auto"`` (the layout's own) or ``None`` (binary).

    Returns ``None`` for the binary map (every non-zero voxel is tumour).

    Raises:
        ConfigError: an unknown preset, an empty channel, a non-integer value or more than 8 channels.
    """
    if label_map == "auto":
        label_map = layout_default
    if label_map is None:
        return None
    if isinstance(label_map, str):
        if label_map not in LABEL_MAPS:
            raise ConfigError(f"data.label_map: unknown map {label_map!r}; expected one of {sorted(LABEL_MAPS)}")
        preset = LABEL_MAPS[label_map]
        return None if preset is None else {k: list(v) for k, v in preset.items()}
    if not isinstance(label_map, Mapping) or not label_map:
        raise ConfigError(f"data.label_map must be a preset name or {{channel: [voxel values]}}, got {label_map!r}")
    out: dict[str, list[int]] = {}
    for name, values in label_map.items():
        values = [values] if isinstance(values, int) else list(values)
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
            raise ConfigError(f"data.label_map.{name}: expected a list of positive integer voxel values, got {values}")
        out[str(name)] = values
    if len(out) > MAX_CHANNELS:
        raise ConfigError(f"data.label_map has {len(out)} channels; at most {MAX_CHANNELS} are supported")
    return out


def apply_label_map(labels: np.ndarray, label_map: dict[str, list[int]] | None, path: str | Path) -> np.ndarray:
    """Turn a label volume into bit-packed channels (``uint8``, bit ``c`` set where channel ``c`` holds).

    Raises:
        DataError: non-integer label values, or values that are neither 0 nor in the map (naming ``path``).
    """
    values = np.unique(labels)
    if not np.all(values == np.round(values)):
        shown = ", ".join(f"{v:g}" for v in values[values != np.round(values)][:5])
        raise DataError(f"{path}: label volume holds non-integer values ({shown}); expected integer labels")
    if label_map is None:
        return (labels != 0).astype(np.uint8)
    known = {0, *(v for vs in label_map.values() for v in vs)}
    unknown = sorted(int(v) for v in values if int(v) not in known)
    if unknown:
        raise DataError(
            f"{path}: label values {unknown} are not in the label map {dict(label_map)} (known: {sorted(known)})"
        )
    ints = labels.astype(np.int64)
    packed = np.zeros(labels.shape, np.uint8)
    for bit, vs in enumerate(label_map.values()):
        packed |= np.isin(ints, vs).astype(np.uint8) << bit
    return packed


def unpack_channels(packed: np.ndarray, channels: int) -> np.ndarray:
    """``(..., H, W)`` bit-packed masks -> ``(..., channels, H, W)`` 0/1 ``uint8``."""
    bits = np.arange(channels, dtype=np.uint8).reshape((channels,) + (1,) * 2)
    return (packed[..., None, :, :] >> bits) & 1
