"""Leak-proof splits: every group (patient) falls into exactly one of train / val / test.

scikit-learn's ``GroupShuffleSplit`` draws the splits; ``check_disjoint`` verifies the result, and a
violation is an error, never a warning.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

from tumorlab.errors import DataError

__all__ = ["SPLITS", "split_by_group", "check_disjoint"]

SPLITS = ("train", "val", "test")


def split_by_group(
    groups: Sequence[str], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, np.ndarray]:
    """Split sample indices into train/val/test so that no group appears in two splits.

    Args:
        groups: the group (patient id) of each sample.
        fractions: shares of groups for train, val and test; must sum to 1.
        seed: the random state of the split; the same seed gives the same split.

    Returns:
        ``{"train": idx, "val": idx, "test": idx}`` with sorted sample indices.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions must be three positive numbers summing to 1, got {list(fractions)}")
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_groups < 3:
        raise DataError(f"a train/val/test split by patient needs at least 3 patients, found {n_groups}")
    index = np.arange(len(groups))
    outer = GroupShuffleSplit(n_splits=1, test_size=fractions[2], random_state=seed)
    trainval, test = next(outer.split(index, groups=groups))
    inner = GroupShuffleSplit(n_splits=1, test_size=fractions[1] / (fractions[0] + fractions[1]), random_state=seed)
    train, val = next(inner.split(trainval, groups=groups[trainval]))
    splits = {"train": np.sort(trainval[train]), "val": np.sort(trainval[val]), "test": np.sort(test)}
    for name, idx in splits.items():
        if len(idx) == 0:
            raise DataError(
                f"split {name!r} is empty with {n_groups} patients and fractions {list(fractions)}; add patients"
            )
    check_disjoint(splits, groups)
    return splits


def check_disjoint(splits: dict[str, np.ndarray], groups: Sequence[str]) -> None:
    """Raise ``DataError`` if any group appears in more than one split, naming the groups and splits."""
    groups = np.asarray(groups)
    seen: dict[str, str] = {}
    leaks = []
    for name, idx in splits.items():
        for g in np.unique(groups[np.asarray(idx, dtype=int)]):
            if g in seen and seen[g] != name:
                leaks.append(f"{g} ({seen[g]} and {name})")
            seen.setdefault(g, name)
    if leaks:
        raise DataError(
            f"patient leakage between splits: {', '.join(leaks[:10])}" + (" ..." if len(leaks) > 10 else "")
        )
