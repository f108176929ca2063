"""Split invariants: disjoint groups, deterministic per seed, stratified within tolerance, folds partition patients."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tumorlab.data import check_disjoint, kfold_by_group, make_splits, split_by_group
from tumorlab.data.splits import drop_test_duplicates, split_units
from tumorlab.errors import ConfigError, DataError


def _data(n_groups: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Groups of 1-6 samples; each group has one class, classes unbalanced 50/30/20 %."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, n_groups)
    classes = rng.choice(3, size=n_groups, p=[0.5, 0.3, 0.2])
    groups = np.repeat([f"G{i:03d}" for i in range(n_groups)], sizes)
    return groups, np.repeat(classes, sizes)


def _group_sets(splits: dict, groups: np.ndarray) -> dict[str, set]:
    return {k: set(groups[v].tolist()) for k, v in splits.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holdout_is_a_disjoint_partition_and_deterministic(seed):
    groups, labels = _data(seed=seed)
    a = split_by_group(groups, (0.7, 0.15, 0.15), seed=seed, strata=labels)
    b = split_by_group(groups, (0.7, 0.15, 0.15), seed=seed, strata=labels)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert sorted(np.concatenate(list(a.values())).tolist()) == list(range(len(groups)))
    sets = _group_sets(a, groups)
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
    c = split_by_group(groups, (0.7, 0.15, 0.15), seed=seed + 10, strata=labels)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_holdout_is_stratified_within_tolerance():
    # Tolerance: each split's share of each class (counted in groups) is within 5 points of the overall share.
    groups, labels = _data(n_groups=400, seed=5)
    splits = split_by_group(groups, (0.7, 0.15, 0.15), seed=1, strata=labels)
    unique, first = np.unique(groups, return_index=True)
    overall = np.bincount(labels[first], minlength=3) / len(unique)
    for name, idx in splits.items():
        g, f = np.unique(groups[idx], return_index=True)
        share = np.bincount(labels[idx][f], minlength=3) / len(g)
        assert np.abs(share - overall).max() < 0.05, (name, share, overall)
    n = {k: len(set(groups[v])) for k, v in splits.items()}
    # shares round up to whole groups, as in scikit-learn: ceil(0.15 * 400), then ceil(0.15 / 0.85 * 340)
    assert n == {"test": 60, "val": math.ceil(0.15 / 0.85 * 340), "train": 340 - math.ceil(0.15 / 0.85 * 340)}


def test_kfold_partitions_patients_and_stratifies():
    groups, labels = _data(n_groups=100, seed=3)
    folds = kfold_by_group(groups, 5, seed=0, strata=labels)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(groups)))
    fold_groups = [set(groups[f].tolist()) for f in folds]
    assert sum(map(len, fold_groups)) == len(set(groups.tolist()))  # each patient in exactly one fold
    overall = np.bincount(labels, minlength=3) / len(labels)
    for f in folds:
        assert np.abs(np.bincount(labels[f], minlength=3) / len(f) - overall).max() < 0.08
    again = kfold_by_group(groups, 5, seed=0, strata=labels)
    assert all(np.array_equal(x, y) for x, y in zip(folds, again, strict=True))


def test_make_splits_with_folds_keeps_the_test_set_and_rotates_validation():
    groups, labels = _data(n_groups=50, seed=4)
    runs = [make_splits(groups, seed=7, strata=labels, num_folds=4, fold=k) for k in range(4)]
    tests = [r["test"] for r in runs]
    assert all(np.array_equal(tests[0], t) for t in tests)
    vals = np.concatenate([r["val"] for r in runs])
    assert sorted(vals.tolist()) == sorted(np.setdiff1d(np.arange(len(groups)), tests[0]).tolist())
    for r in runs:
        check_disjoint(r, groups)
    with pytest.raises(ConfigError, match="fold"):
        make_splits(groups, num_folds=4, fold=4)
    with pytest.raises(DataError, match="needs at least 9 patients"):
        kfold_by_group(groups[:10], 9)


def test_fixed_test_set_is_used_as_given():
    groups, labels = _data(n_groups=30)
    fixed = np.isin(groups, ["G000", "G001", "G002"])
    splits = make_splits(groups, (0.8, 0.2, 0.0), seed=0, fixed_test=fixed)
    assert np.array_equal(splits["test"], np.flatnonzero(fixed))
    assert len(set(groups[splits["val"]])) == np.ceil(0.2 * 27)


def test_duplicate_groups_are_checked_besides_patients():
    groups = np.array(["A", "B", "C", "D"])
    dup = np.array(["x", "y", "x", "z"])  # A's and C's images are copies of each other
    splits = {"train": np.array([0, 1]), "val": np.array([2]), "test": np.array([3])}
    check_disjoint(splits, groups)
    with pytest.raises(DataError, match=r"duplicate-image leakage between splits: x \(train and val\)"):
        check_disjoint(splits, dup, what="duplicate-image")
    with pytest.raises(DataError, match="duplicate-image leakage"):
        make_splits(groups, (0.5, 0.25, 0.25), seed=0, duplicate_groups=np.array(["x", "x", "x", "x"]))


def test_patients_sharing_a_duplicate_image_become_one_unit():
    patients = ["P2", "P2", "P1", "P3", "P4", "P4"]
    dup = ["a", "b", "c", "b", "d", "e"]  # P2's second image is a copy of P3's
    units = split_units(patients, dup)
    assert units == ["P2", "P2", "P1", "P2", "P4", "P4"]
    assert split_units(["B", "A", "C"], ["x", "x", "y"]) == ["A", "A", "C"]  # named by the smallest patient
    splits = make_splits(np.repeat(split_units(patients, dup), 3), (0.34, 0.33, 0.33), seed=0)
    check_disjoint(splits, np.repeat(patients, 3))
    check_disjoint(splits, np.repeat(dup, 3), what="duplicate-image")


def test_training_copies_of_fixed_test_images_are_dropped_and_reported():
    dup = ["g0", "g1", "g0", "g2", "g1", "g3"]
    fixed = np.array(["", "", "test", "", "", "test"])
    keep = np.array([True, True, True, True, False, True])
    kept, leaked = drop_test_duplicates(dup, fixed, keep)
    assert leaked == [(0, 2)]  # sample 0 is a copy of test sample 2; sample 4 was never kept
    assert kept.tolist() == [False, True, True, True, False, True]
    assert keep.tolist() == [True, True, True, True, False, True]  # the input is not modified
    same, none = drop_test_duplicates(dup, np.array([""] * 6), keep)
    assert none == [] and same.tolist() == keep.tolist()
