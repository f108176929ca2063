"""Checks no single file can fail: a data module's settings (one line naming the ``data.`` key and what it
expects), and a drawn split whose training part holds one class only."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from tumorlab.data.splits import SPLITS
from tumorlab.errors import ConfigError, DataError

__all__ = ["CHOICES", "check_settings", "check_split_classes"]

log = logging.getLogger(__name__)

# data.<key> -> the values it takes
CHOICES = {
    "cache": ("memory", "disk", "none"),
    "on_bad_file": ("raise", "skip"),
    "duplicates": ("exact", "near", "none"),
    "test_duplicates": ("drop", "raise"),
    "predict_split": (*SPLITS, "all"),
}


def check_settings(
    image_size: int,
    batch_size: int,
    channels: Sequence[int],
    num_folds: int | None,
    fold: int,
    near_threshold: int,
    test_group: tuple[str | None, str | None],
    **choices: str,
) -> None:
    """``ConfigError`` for the first ``TumorData`` argument out of range; ``test_group`` is
    ``(data.test_group_by, data.test_group)``, ``choices`` the arguments of ``CHOICES`` by name."""
    if image_size < 8:
        raise ConfigError(f"data.image_size must be at least 8 pixels, got {image_size}")
    if batch_size < 1:
        raise ConfigError(f"data.batch_size must be at least 1, got {batch_size}")
    if not channels or len(set(channels)) != len(channels) or not set(channels) <= {0, 1, 2}:
        raise ConfigError(f"data.channels must be distinct indices among 0, 1, 2, got {list(channels)}")
    if num_folds is not None and (num_folds < 2 or not 0 <= fold < num_folds):
        raise ConfigError(f"data.num_folds must be >= 2 and data.fold in [0, num_folds), got {num_folds}, {fold}")
    if not 0 <= near_threshold <= 256:
        raise ConfigError(f"data.near_threshold must lie in [0, 256] bits, got {near_threshold}")
    for key, value in choices.items():
        if value not in CHOICES[key]:
            raise ConfigError(f"data.{key} must be one of {list(CHOICES[key])}, got {value!r}")
    by, group = test_group
    if (by is None) != (group is None):
        raise ConfigError(
            f"data.test_group_by and data.test_group go together (the key and the held-out value), got "
            f"{by!r} and {group!r}"
        )


def check_split_classes(labels: Mapping[str, np.ndarray], class_names: list[str], where: str) -> None:
    """Stop when the training split holds one class only; warn when validation or test does.

    A classifier trained on one class learns nothing, so that is an error; a validation or test split of one
    class still measures accuracy, but AUROC and the per-class scores of the missing classes are undefined.

    Args:
        labels: class index of every sample, per split (``train``, ``val``, ``test``).
        class_names: the names of the class indices.
        where: the data set, for the message (its root or manifest).
    """
    if len(class_names) < 2:
        return
    for split, values in labels.items():
        present = sorted(set(np.asarray(values).tolist()))
        if len(values) == 0 or len(present) > 1:
            continue
        only, missing = class_names[present[0]], [c for i, c in enumerate(class_names) if i not in present]
        message = (
            f"{where}: the {split} split holds class {only!r} only ({len(values)} samples, none of "
            f"{', '.join(missing)})"
        )
        if split == "train":
            raise DataError(
                message + "; add samples of the other classes, change data.split or data.seed, or fix the "
                "manifest's split column"
            )
        log.warning("%s: AUROC and per-class scores of the missing classes are undefined", message)
