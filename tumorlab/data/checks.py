"""Checks of a drawn split that no single file can fail: a training split that holds one class only."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from tumorlab.errors import DataError

__all__ = ["check_split_classes"]

log = logging.getLogger(__name__)


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
