"""Leak-proof splits: every group (patient, duplicate group) falls into exactly one of train / val / test.

scikit-learn draws the splits: ``ShuffleSplit`` / ``StratifiedShuffleSplit`` over the unique groups for
hold-out fractions (the same draw as ``GroupShuffleSplit``, optionally stratified by a per-group stratum),
and ``StratifiedGroupKFold`` for k-fold cross-validation. ``check_disjoint`` verifies every result: a
patient or duplicate group in two splits is an error, never a warning. ``split_units`` merges patients and
duplicate groups into the units that are drawn; ``drop_test_duplicates`` removes training copies of a given
test set; ``assign_splits`` is all of it for a data module's samples.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut, ShuffleSplit, StratifiedGroupKFold, StratifiedShuffleSplit

from tumorlab.data.duplicates import components, group_ids, pairs_of_equal
from tumorlab.errors import ConfigError, DataError

__all__ = [
    "SPLITS",
    "split_by_group",
    "kfold_by_group",
    "make_splits",
    "check_disjoint",
    "check_group_of_patients",
    "held_out_group",
    "leave_one_group_out",
    "check_fractions",
    "split_units",
    "drop_test_duplicates",
    "apply_test_duplicates",
    "assign_splits",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three positive shares summing to 1, or ``DataError``."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(f"split fractions must be three positive numbers summing to 1, got {list(fractions)}")
    return fractions  # type: ignore[return-value]


def split_units(patients: Sequence[str], duplicate_ids: Sequence[str]) -> list[str]:
    """The split unit of each sample: patients linked by a shared duplicate group become one unit.

    A unit is a connected component of "same patient" and "same duplicate group", named by its smallest
    patient id, so neither a patient nor a duplicate group can straddle two splits.
    """
    patients = list(patients)
    if len(patients) != len(duplicate_ids):
        raise ValueError(f"{len(patients)} patients but {len(duplicate_ids)} duplicate ids")
    pairs = np.concatenate([pairs_of_equal(patients), pairs_of_equal(list(duplicate_ids))])
    return group_ids(components(len(patients), pairs), patients, prefix="")


def drop_test_duplicates(
    duplicate_ids: Sequence[str], fixed: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Leave out of training every kept sample whose duplicate group has a member in the given test set.

    Args:
        duplicate_ids: the duplicate group of each sample.
        fixed: the split the data fixes for each sample (``"test"`` for the given test set, ``""`` if none).
        keep: ``True`` for the samples in use.

    Returns:
        ``(keep, leaked)``: ``keep`` without the training copies, and ``(training index, test index)`` for
        each copy left out (the test index is the group's last test member).
    """
    keep = np.asarray(keep, dtype=bool)
    test = keep & (np.asarray(fixed) == "test")
    if not test.any():
        return keep, []
    test_groups = {duplicate_ids[i]: int(i) for i in np.flatnonzero(test)}
    train = np.flatnonzero(keep & ~test)
    leaked = [(int(i), test_groups[duplicate_ids[i]]) for i in train if duplicate_ids[i] in test_groups]
    keep = keep.copy()
    keep[[i for i, _ in leaked]] = False
    return keep, leaked


def apply_test_duplicates(
    duplicate_ids: Sequence[str], fixed: np.ndarray, keep: np.ndarray, paths: Sequence[str], policy: str
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """``data.test_duplicates`` on the training copies of test images (``drop_test_duplicates``): ``raise`` stops
    naming them; ``drop`` returns ``(keep without them, [(training file, its copy in the test set)])``, logged."""
    kept, leaked = drop_test_duplicates(duplicate_ids, fixed, keep)
    pairs = [(str(paths[i]), str(paths[j])) for i, j in leaked]
    if pairs and policy == "raise":
        listing = "; ".join(f"{a} = {b}" for a, b in pairs[:5])
        raise DataError(
            f"{len(pairs)} training images have a copy in the test set: {listing}"
            + (" ..." if len(pairs) > 5 else "")
            + " (test_duplicates: drop removes them from training)"
        )
    if pairs:
        log.warning("dropped %d training images that duplicate test images (test_duplicates: drop)", len(pairs))
    return kept, pairs


def _group_strata(groups: np.ndarray, strata: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Unique groups, each sample's position among them, and each group's most common stratum."""
    unique, inverse = np.unique(groups, return_inverse=True)
    if strata is None:
        return unique, inverse, None
    per_group: list[Counter] = [Counter() for _ in unique]
    for g, s in zip(inverse.tolist(), np.asarray(strata).tolist(), strict=True):
        per_group[g][s] += 1
    return unique, inverse, np.array([c.most_common(1)[0][0] for c in per_group])


def _holdout(groups: np.ndarray, share: float, seed: int, strata: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into ``groups``) of the kept part and of a held-out ``share`` of the groups."""
    unique, inverse, group_strata = _group_strata(groups, strata)
    splitter = ShuffleSplit(n_splits=1, test_size=share, random_state=seed)
    if group_strata is not None and len(set(group_strata.tolist())) > 1:
        try:
            keep_g, out_g = next(
                StratifiedShuffleSplit(n_splits=1, test_size=share, random_state=seed).split(unique, group_strata)
            )
        except ValueError as err:  # too few groups per stratum for a stratified draw
            log.info("stratified split not possible (%s); drawing groups without stratification", err)
            keep_g, out_g = next(splitter.split(unique))
    else:
        keep_g, out_g = next(splitter.split(unique))
    out = np.isin(inverse, out_g)
    return np.flatnonzero(~out), np.flatnonzero(out)


def split_by_group(
    groups: Sequence[str],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    strata: Sequence | None = None,
) -> dict[str, np.ndarray]:
    """Split sample indices into train/val/test so that no group appears in two splits.

    Args:
        groups: the group (patient id) of each sample.
        fractions: shares of groups for train, val and test; must sum to 1. Each share is rounded up to
            whole groups, as in scikit-learn.
        seed: the random state of the split; the same seed gives the same split.
        strata: optional stratum of each sample (class, tumour-burden bin); each group counts with its most
            common stratum and every split receives its share of each stratum's groups. When a stratum has
            too few groups for that, the split is drawn unstratified (logged).

    Returns:
        ``{"train": idx, "val": idx, "test": idx}`` with sorted sample indices.
    """
    fractions = check_fractions(fractions)
    return make_splits(groups, fractions, seed, strata=strata)


def kfold_by_group(
    groups: Sequence[str], num_folds: int, seed: int = 0, strata: Sequence | None = None
) -> list[np.ndarray]:
    """The validation indices of each of ``num_folds`` folds (``StratifiedGroupKFold``, shuffled by ``seed``).

    The folds partition the samples and no group is split across folds; with ``strata`` every fold gets a
    similar share of each stratum.
    """
    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if num_folds < 2:
        raise ConfigError(f"data.num_folds must be at least 2, got {num_folds}")
    if n_groups < num_folds:
        raise DataError(f"{num_folds}-fold cross-validation needs at least {num_folds} patients, found {n_groups}")
    y = np.zeros(len(groups), dtype=int) if strata is None else np.unique(np.asarray(strata), return_inverse=True)[1]
    cv = StratifiedGroupKFold(n_splits=num_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        folds = [np.sort(val) for _, val in cv.split(np.zeros(len(groups)), y, groups)]
    for k, val in enumerate(folds):
        if len(val) == 0:
            raise DataError(f"fold {k} of {num_folds} is empty with {n_groups} patients; use fewer folds")
    return folds


def make_splits(
    groups: Sequence[str],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    strata: Sequence | None = None,
    fixed_test: np.ndarray | None = None,
    num_folds: int | None = None,
    fold: int = 0,
    duplicate_groups: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Train/val/test indices: a test set (given or held out), then train/val by fractions or by k-fold.

    Args:
        groups: the split unit of each sample (patients, merged with duplicate groups where both exist).
        fractions: train/val/test shares of groups. With ``fixed_test`` only the train:val ratio is used.
        seed: random state of every draw.
        strata: optional stratum per sample (see ``split_by_group``).
        fixed_test: boolean per sample, ``True`` for samples of a given test set (a ``Testing/`` root, a
            manifest's ``split`` column); ``None`` holds out ``fractions[2]`` of the groups.
        num_folds: k-fold cross-validation of the non-test samples; fold ``fold`` is the validation split.
        fold: which fold validates, in ``[0, num_folds)``.
        duplicate_groups: checked by ``check_disjoint`` besides ``groups``.
    """
    groups = np.asarray(groups)
    strata_arr = None if strata is None else np.asarray(strata)
    f_train, f_val, f_test = check_fractions(fractions) if fixed_test is None else _loose(fractions)
    index = np.arange(len(groups))
    n_groups = len(np.unique(groups))
    if fixed_test is None:
        if n_groups < 3:
            raise DataError(f"a train/val/test split by patient needs at least 3 patients, found {n_groups}")
        rest, test = _holdout(groups, f_test, seed, strata_arr)
    else:
        fixed_test = np.asarray(fixed_test, dtype=bool)
        rest, test = index[~fixed_test], index[fixed_test]
    sub = None if strata_arr is None else strata_arr[rest]
    if num_folds is not None:
        if not 0 <= fold < num_folds:
            raise ConfigError(f"data.fold must lie in [0, {num_folds}) for {num_folds} folds, got {fold}")
        val = rest[kfold_by_group(groups[rest], num_folds, seed, sub)[fold]]
        train = np.setdiff1d(rest, val)
    else:
        if len(np.unique(groups[rest])) < 2:
            raise DataError(f"a train/val split needs at least 2 patients outside the test set, found {len(rest)}")
        keep, out = _holdout(groups[rest], f_val / (f_train + f_val), seed, sub)
        train, val = rest[keep], rest[out]
    splits = {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
    for name, idx in splits.items():
        if len(idx) == 0:
            raise DataError(
                f"split {name!r} is empty with {n_groups} patients and fractions {list(fractions)}; add patients"
            )
    check_disjoint(splits, groups)
    if duplicate_groups is not None:
        check_disjoint(splits, duplicate_groups, what="duplicate-image")
    return splits


def assign_splits(
    patients: Sequence[str],
    duplicate_ids: Sequence[str],
    keep: np.ndarray,
    strata: np.ndarray,
    fixed: np.ndarray,
    fractions: Sequence[float],
    seed: int,
    num_folds: int | None = None,
    fold: int = 0,
) -> dict[str, np.ndarray]:
    """Train/val/test indices into all samples, of the kept ones only, with no patient or duplicate group in two.

    Args:
        patients: the patient of each sample (its duplicate group where the data has no patients).
        duplicate_ids: the duplicate group of each sample.
        keep: boolean per sample; the others (bad files, training copies of test images) are in no split.
        strata: what the split stratifies by, per sample.
        fixed: the split the data gives each sample (``"train"``, ``"val"``, ``"test"``, or ``""``). Where it
            gives all three to every kept sample (a manifest's split column) and no folds are asked for, those
            are the splits; else the given ``test`` samples are the test set and the rest is drawn.
        fractions, seed, num_folds, fold: as ``make_splits``.
    """
    idx = np.flatnonzero(keep)
    units = split_units([patients[i] for i in idx], [duplicate_ids[i] for i in idx])
    fixed = np.asarray(fixed)[idx]
    given = {name: np.flatnonzero(fixed == name) for name in SPLITS}
    if num_folds is None and sum(len(v) for v in given.values()) == len(idx) and all(map(len, given.values())):
        local = given  # the data fixes all three splits
        check_disjoint(local, units)
    else:
        local = make_splits(
            units,
            fractions,
            seed,
            strata=np.asarray(strata)[idx],
            fixed_test=(fixed == "test") if (fixed == "test").any() else None,
            num_folds=num_folds,
            fold=fold,
        )
    check_disjoint(local, [patients[i] for i in idx])
    check_disjoint(local, [duplicate_ids[i] for i in idx], what="duplicate-image")
    return {name: idx[part] for name, part in local.items()}


def leave_one_group_out(values: Sequence[str], key: str = "group") -> dict[str, np.ndarray]:
    """The test indices of each held-out group (``LeaveOneGroupOut``), keyed by the group's value, sorted.

    Args:
        values: the group of each sample (e.g. its institution).
        key: what the groups are, for the message when there is only one.
    """
    values = np.asarray(values, dtype=str)
    if len(np.unique(values)) < 2:
        only = repr(str(values[0])) if len(values) else "none"
        raise DataError(f"{key}: every sample has the same value ({only}); leaving one group out needs at least 2")
    folds = LeaveOneGroupOut().split(np.zeros(len(values)), groups=values)
    return {str(values[test[0]]): test for _, test in folds}


def check_group_of_patients(values: Sequence[str], patients: Sequence[str], key: str = "group") -> None:
    """``DataError`` where a patient's samples carry two values of ``key``: holding out one of them would put
    the patient in two splits."""
    seen: dict[str, str] = {}
    for value, patient in zip(np.asarray(values).tolist(), np.asarray(patients).tolist(), strict=True):
        if seen.setdefault(patient, value) != value:
            raise DataError(
                f"patient {patient} has {key} {seen[patient]!r} and {value!r}; a group must hold whole patients"
            )


def held_out_group(
    values: Sequence[str], patients: Sequence[str], keep: np.ndarray, key: str, value: str
) -> np.ndarray:
    """Boolean per sample: kept and in group ``value`` of ``key`` (``leave_one_group_out`` over the kept samples).

    Raises:
        DataError: a patient in two groups, a single group, or ``value`` not among the groups.
    """
    keep = np.asarray(keep, dtype=bool)
    values = np.asarray(values, dtype=str)
    check_group_of_patients(values[keep], np.asarray(patients)[keep], key)
    groups = leave_one_group_out(values[keep], key)
    if value not in groups:
        raise DataError(f"data.test_group {value!r} is not a value of {key}: {', '.join(groups)}")
    test = np.zeros(len(values), dtype=bool)
    test[np.flatnonzero(keep)[groups[value]]] = True
    return test


def _loose(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Fractions where only train and val matter (the test set is given): those two must be positive."""
    f = tuple(float(x) for x in fractions)
    if len(f) != 3 or f[0] <= 0 or f[1] <= 0:
        raise DataError(f"split fractions need positive train and val shares, got {list(fractions)}")
    return f  # type: ignore[return-value]


def check_disjoint(splits: dict[str, np.ndarray], groups: Sequence[str], what: str = "patient") -> None:
    """Raise ``DataError`` if any group appears in more than one split, naming the groups and splits.

    ``what`` names the kind of group in the message (``patient``, ``duplicate-image``).
    """
    groups = np.asarray(groups)
    seen: dict[str, str] = {}
    leaks = []
    for name, idx in splits.items():
        for g in np.unique(groups[np.asarray(idx, dtype=int)]):
            if g in seen and seen[g] != name:
                leaks.append(f"{g} ({seen[g]} and {name})")
            seen.setdefault(g, name)
    if leaks:
        more = f" ... ({len(leaks)} in all)" if len(leaks) > 10 else ""
        raise DataError(f"{what} leakage between splits: {', '.join(leaks[:10])}{more}")
