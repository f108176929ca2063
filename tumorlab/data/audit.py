"""``tumorlab audit``: what is in a data root before anyone trains on it.

Counts per class, patient and split; byte-identical duplicates (SHA-256) and near-duplicates (256-bit
perceptual hash within a stated number of bits); duplicates shared between the training data and a test
root; unreadable files; files passed over; image sizes and modes. The DataModules' own classes (``LGGData``,
``FolderData``, ``ManifestData``: the DataModules without Lightning) read the data here (with ``on_bad_file:
skip``), so the audit sees exactly what training would see.

What each count counts (``--json`` keys in brackets):

- per class [``classes``]: ``images``, the readable images of the class that were read (ROOT and, where
  there is one, the given test set); ``test_root``, of those, the ones in the given test set (``Testing/``,
  ``--test-root`` or a manifest's ``split=test`` rows; present only where there is one);
- per split [``splits[split]["per_class"]``]: images of each class in the train / val / test split that
  training draws with the same ``--seed`` and the default fractions. Training copies of test images are
  dropped before the split [``dropped_per_class``], so per class ``train + val + test + dropped = images``;
- [``warnings``]: a split without any image of a class; for data with patient ids (LGG, manifests) a split
  of fewer than ``MIN_SPLIT_PATIENTS`` patients; a split that cannot be drawn at all;
- [``masks``] (LGG, manifests with a ``mask`` column): readable slices, those whose mask is empty and their
  share, and per patient ``{slices, tumour_slices}``.

``tumorlab.data.audit_text.format_audit`` prints the report as the terminal table.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from tumorlab.data.base import TumorData
from tumorlab.data.duplicates import DEFAULT_NEAR_THRESHOLD, PHASH_SIZE, duplicate_groups
from tumorlab.errors import DataError

__all__ = ["MIN_SPLIT_PATIENTS", "detect_layout", "audit"]

# Fewer patients than this in a split and its metrics rest on one or two people: worth a warning.
MIN_SPLIT_PATIENTS = 3
_EXPECTED = (
    "class folders (optionally under Training/ and Testing/), an LGG kaggle_3m tree, a CSV manifest, "
    "a volume folder (BraTS, Decathlon, nnU-Net raw, DICOM) or a datalist JSON"
)


def detect_layout(root: str | Path) -> str:
    """``manifest`` for a CSV file, ``lgg`` for a folder holding ``*_mask.tif`` slices, else ``folders``."""
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".csv":
        return "manifest"
    if not root.is_dir():
        raise DataError(f"{root} is neither a data folder nor a CSV manifest")
    for path in root.rglob("*_mask.tif*"):
        if not any(part.startswith(".") for part in path.relative_to(root).parts):
            return "lgg"
    return "folders"


def _datamodule(root: str, layout: str, test_root: str | None, near_threshold: int, seed: int) -> TumorData:
    common = {
        "on_bad_file": "skip",
        "cache": "none",
        "near_threshold": near_threshold,
        "num_workers": 0,
        "image_size": 32,
        "seed": seed,
    }
    if layout == "lgg":
        from tumorlab.data.lgg import LGGData

        dm = LGGData(root, test_root=test_root, **common)
    elif layout == "manifest":
        from tumorlab.data.manifest import ManifestData

        dm = ManifestData(root, **common)
    else:
        from tumorlab.data.folders import FolderData

        dm = FolderData(root, test_root=test_root, **common)
    return dm


def _groups(labels: np.ndarray, members: np.ndarray) -> list[list[int]]:
    by_label: dict[int, list[int]] = defaultdict(list)
    for i in members.tolist():
        by_label[int(labels[i])].append(i)
    return sorted((g for g in by_label.values() if len(g) > 1), key=lambda g: g[0])


def _check_exists(path: str | None, what: str, expected: str) -> None:
    """A missing root stops the audit with one line, worded as the data modules word it."""
    if path is not None and not Path(path).exists():
        raise DataError(f"{what} {path} does not exist; expected {expected}")


def audit(
    root: str, test_root: str | None = None, near_threshold: int = DEFAULT_NEAR_THRESHOLD, seed: int = 42
) -> dict:
    """Audit ``root`` (class folders, an LGG ``kaggle_3m`` tree or a CSV manifest); return a JSON-ready report.

    Raises:
        DataError: ``root`` or ``test_root`` does not exist, or the data module cannot read them.
    """
    _check_exists(root, "data root", _EXPECTED)
    _check_exists(test_root, "test root", "data in the layout of ROOT (class folders or an LGG kaggle_3m tree)")
    if not str(root).lower().endswith(".csv"):
        from tumorlab.data.volumes.layouts import detect_volume_layout

        if detect_volume_layout(root) is not None:  # volumes: a datalist JSON, BraTS, Decathlon, nnU-Net, DICOM
            if test_root is not None:
                raise DataError(f"--test-root applies to class folders and LGG data; {root} holds volumes")
            from tumorlab.data.volumes.audit import audit_volumes

            return audit_volumes(root, seed=seed)
    layout = detect_layout(root)
    if test_root is not None and layout == "manifest":
        raise DataError(
            f"--test-root applies to class folders and LGG data; {root} is a manifest (its split column fixes the "
            "test rows)"
        )
    dm = _datamodule(root, layout, test_root, near_threshold, seed)
    dm.inspect(perceptual_hashes=True)  # near-duplicates are reported whatever the data module groups by
    infos, samples, keep = dm.infos, dm.samples, dm.keep
    ok = np.flatnonzero(keep)
    sha = [x.sha256 if keep[i] else None for i, x in enumerate(infos)]
    exact = duplicate_groups(sha, keep, "exact")[0]
    near = duplicate_groups(sha, keep, "near", [x.phash for x in infos], near_threshold)[0]
    exact_groups = _groups(exact, ok)
    near_groups = [g for g in _groups(near, ok) if len({sha[i] for i in g}) > 1]

    def names(group: list[int]) -> list[str]:
        return [str(samples[i].image) for i in group]

    def cross(groups: list[list[int]]) -> list[list[str]]:
        return [names(g) for g in groups if len({samples[i].fixed_split == "test" for i in g}) > 1]

    report = {
        "root": str(root),
        "test_root": test_root,
        "layout": layout,
        "files": {
            "images": len(samples),
            "readable": int(keep.sum()),
            "unreadable": len(dm.bad_files),
            "skipped": len(dm.skipped_files),
        },
        "classes": _class_counts(dm, ok),
        "patients": _patients(dm, ok) if layout != "folders" else None,
        "masks": _mask_facts(dm, ok),
        "splits": None,
        "split_error": None,
        "exact_duplicates": {"hash": "SHA-256 of the file bytes", "groups": [names(g) for g in exact_groups]},
        "near_duplicates": {
            "hash": f"imagehash.phash, {PHASH_SIZE * PHASH_SIZE} bits",
            "threshold_bits": near_threshold,
            "groups": [names(g) for g in near_groups],
        },
        "cross_root_duplicates": {"exact": cross(exact_groups), "near": cross(_groups(near, ok))},
        "sizes": {f"{w}x{h}": n for (w, h), n in Counter((infos[i].width, infos[i].height) for i in ok).most_common()},
        "modes": dict(Counter(infos[i].mode for i in ok).most_common()),
        "unreadable_files": [{"path": p, "error": e} for p, e in dm.bad_files],
        "skipped_files": [{"path": p, "reason": r} for p, r in dm.skipped_files],
    }
    try:
        dm.setup()
        report["splits"] = _splits(dm)
        report["split_settings"] = {"seed": seed, "fractions": list(dm.split)}
        report["dropped_test_duplicates"] = len(dm.dropped_test_duplicates)
        report["dropped_per_class"] = _dropped_per_class(dm)
    except DataError as err:
        report["split_error"] = str(err)
    report["warnings"] = _warnings(report, with_patients=layout != "folders")
    return report


def _class_counts(dm: TumorData, ok: np.ndarray) -> dict[str, dict[str, int]]:
    """Readable images per class, and of those the ones in the given test set (where there is one)."""
    labels = dm.labels[ok]
    in_test = np.array([dm.samples[i].fixed_split == "test" for i in ok.tolist()], dtype=bool)
    counts = {}
    for c, name in enumerate(dm.class_names):
        counts[name] = {"images": int((labels == c).sum())}
        if in_test.any():
            counts[name]["test_root"] = int(((labels == c) & in_test).sum())
    return counts


def _splits(dm: TumorData) -> dict[str, dict]:
    """``describe_splits`` plus ``per_class``: every class, zeros included, in class order."""
    splits = dm.describe_splits()
    for name, entry in splits.items():
        entry["per_class"] = dict(zip(dm.class_names, map(int, dm.class_counts(name)), strict=True))
    return splits


def _dropped_per_class(dm: TumorData) -> dict[str, int]:
    by_path = {str(s.image): dm.class_names[dm.labels[i]] for i, s in enumerate(dm.samples)}
    dropped = Counter(by_path[train] for train, _ in dm.dropped_test_duplicates)
    return {name: dropped.get(name, 0) for name in dm.class_names}


def _warnings(report: dict, with_patients: bool) -> list[str]:
    """Splits too small to trust: a class missing from a split; fewer than 3 patients where there are ids."""
    if report["splits"] is None:
        return [f"no train/val/test split possible: {report['split_error']}"]
    out = []
    for name, entry in report["splits"].items():
        if with_patients and entry["patients"] < MIN_SPLIT_PATIENTS:
            out.append(
                f"split {name!r} has {entry['patients']} patient{'s' * (entry['patients'] != 1)} "
                f"(fewer than {MIN_SPLIT_PATIENTS}): its metrics rest on too few people"
            )
        missing = [c for c, n in entry["per_class"].items() if n == 0]
        if missing:
            out.append(f"split {name!r} has no image of class {', '.join(missing)}")
    return out


def _mask_facts(dm: TumorData, ok: np.ndarray) -> dict | None:
    """Readable slices with a mask: how many have an empty mask, and per patient slices and tumour slices."""
    with_mask = [i for i in ok.tolist() if dm.samples[i].mask is not None]
    if not with_mask:
        return None
    per: dict[str, dict[str, int]] = defaultdict(lambda: {"slices": 0, "tumour_slices": 0})
    for i in with_mask:
        entry = per[dm.samples[i].patient]
        entry["slices"] += 1
        entry["tumour_slices"] += int((dm.infos[i].mask_pixels or 0) > 0)
    tumour = sum(v["tumour_slices"] for v in per.values())
    return {
        "slices": len(with_mask),
        "empty": len(with_mask) - tumour,
        "empty_share": round((len(with_mask) - tumour) / len(with_mask), 4),
        "per_patient": dict(sorted(per.items())),
    }


def _patients(dm: TumorData, ok: np.ndarray) -> dict:
    """Images per patient and, per patient, images per class."""
    per: dict[str, dict] = defaultdict(lambda: {"images": 0, "classes": Counter()})
    for i in ok.tolist():
        entry = per[dm.samples[i].patient]
        entry["images"] += 1
        entry["classes"][dm.class_names[dm.labels[i]]] += 1
    return {p: {"images": v["images"], "classes": dict(sorted(v["classes"].items()))} for p, v in sorted(per.items())}
