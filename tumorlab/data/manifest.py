"""Any other data set, described by a CSV manifest: ``path,label,patient[,mask][,split]``, one row per image.

Paths are relative to the CSV's folder (or to ``root``), or absolute. ``label`` is a class name (or number);
``patient`` groups the rows that must stay in one split; ``mask`` names a segmentation mask; ``split``
(``train``/``val``/``test``) fixes the split where the study prescribes it. Other columns are kept as
per-row metadata. Every problem is reported as ``<csv>, line <n>, column '<name>': <cause>``.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from tumorlab.data.base import TumorData
from tumorlab.data.cache import Sample
from tumorlab.errors import ConfigError, DataError

__all__ = ["REQUIRED_COLUMNS", "read_manifest", "ManifestData"]

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label", "patient")
_SPLIT_NAMES = {
    **dict.fromkeys(("train", "training"), "train"),
    **dict.fromkeys(("val", "valid", "validation"), "val"),
    **dict.fromkeys(("test", "testing"), "test"),
}


def read_manifest(
    csv_path: str | Path, root: str | Path | None = None, skipped: list[tuple[str, str]] | None = None
) -> list[dict]:
    """Rows of a manifest with resolved ``path``/``mask`` and normalised ``split``, plus ``line`` numbers.

    Args:
        csv_path: the CSV file.
        root: folder that relative paths start from (default: the CSV's folder).
        skipped: where given, a row whose image or mask file is missing is appended here as
            ``(path, message)`` and left out; otherwise it raises.

    Raises:
        DataError: the CSV is missing or empty, lacks a column, or a row has an empty value, a missing
            file or an unknown split; the message names the CSV, the line and the column.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(f"manifest {csv_path} does not exist; expected a CSV with columns path,label,patient")
    base = Path(root) if root is not None else csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise DataError(
                f"{csv_path}: missing column {', '.join(repr(c) for c in missing)} "
                f"(found: {', '.join(columns) or 'none'}); expected path,label,patient[,mask][,split]"
            )
        reader.fieldnames = columns
        rows = []
        for line, row in enumerate(reader, start=2):
            rows.append(_check_row(csv_path, line, row, base, skipped))
    rows = [r for r in rows if r is not None]
    if not rows:
        raise DataError(f"{csv_path}: no usable rows")
    return rows


def _check_row(csv_path: Path, line: int, row: dict, base: Path, skipped: list | None) -> dict | None:
    where = f"{csv_path}, line {line}"
    if None in row:
        raise DataError(f"{where}: more values than columns")
    row = {k: (v or "").strip() for k, v in row.items()}
    for column in REQUIRED_COLUMNS + tuple(c for c in ("mask", "split") if c in row):
        if not row[column]:
            raise DataError(f"{where}, column '{column}': empty value")
    if "split" in row:
        split = _SPLIT_NAMES.get(row["split"].lower())
        if split is None:
            raise DataError(f"{where}, column 'split': unknown split {row['split']!r}; expected train, val or test")
        row["split"] = split
    for column in ("path", "mask"):
        if column not in row:
            continue
        path = Path(row[column]).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            message = f"{where}, column '{column}': file {path} does not exist"
            if skipped is None:
                raise DataError(message)
            skipped.append((str(path), message))
            return None
        row[column] = path
    row["line"] = line
    return row


def _sorted_labels(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)


class ManifestData(TumorData):
    """Images listed in a CSV manifest, for classification (and segmentation where a ``mask`` column exists).

    Args:
        csv: the manifest, with columns ``path,label,patient[,mask][,split]``.
        root: folder that relative paths start from (default: the CSV's folder).
        classes: the labels to use and their order (indices are the class numbers); ``None``: every label
            left after ``min_class_count``, sorted (numerically where all labels are numbers).
        min_class_count: drop classes with fewer rows than this (after ``max_per_patient``), as studies drop
            rare tumour types; the dropped classes are logged and kept in ``dropped_classes``.
        max_per_patient: keep at most this many rows per patient, drawn with ``seed`` (file order kept), so
            that patients with many slices do not dominate.
        use_masks: serve the ``mask`` column as ``mask`` in batches (when the column exists).
        image_size: side in pixels that images are resized to.
        batch_size: images per batch.
        **kwargs: the shared options of ``TumorDataModule`` (``base.TumorData``).

    With a ``split`` column holding train, val and test, the splits are used as given (and still checked
    for leaks); with only train and test, val is drawn from the train rows; with ``num_folds``, the
    non-test rows are cross-validated. Without the column, patients are split by ``split``.
    """

    split_units = ("images", "patients")  # what the split line of fit counts: samples, groups kept whole

    def __init__(
        self,
        csv: str,
        root: str | None = None,
        classes: list[str] | None = None,
        min_class_count: int = 0,
        max_per_patient: int | None = None,
        use_masks: bool = True,
        image_size: int = 224,
        batch_size: int = 32,
        **kwargs,
    ) -> None:
        super().__init__(image_size=image_size, batch_size=batch_size, **kwargs)
        if min_class_count < 0 or (max_per_patient is not None and max_per_patient < 1):
            raise ConfigError(
                f"data.min_class_count must be >= 0 and data.max_per_patient >= 1, got {min_class_count}, "
                f"{max_per_patient}"
            )
        self.csv, self.root = csv, root
        missing: list[tuple[str, str]] | None = [] if self.on_bad_file == "skip" else None
        rows = read_manifest(csv, root, missing)
        if missing:
            self.skipped_files += missing
            log.warning(
                "skipped %d manifest rows with missing files (on_bad_file: skip); first: %s",
                len(missing),
                missing[0][1],
            )
        if max_per_patient is not None:
            rows = self._cap_per_patient(rows, max_per_patient)
        counts = Counter(r["label"] for r in rows)
        self.dropped_classes = {c: n for c, n in counts.items() if n < min_class_count}
        if self.dropped_classes:
            log.info("dropped classes with fewer than %d rows: %s", min_class_count, self.dropped_classes)
        if classes is not None:
            unknown = [c for c in classes if c not in counts]
            if unknown or len(set(classes)) != len(classes):
                raise ConfigError(f"data.classes {classes}: {unknown or 'repeated names'} not labels in {csv}")
            names = [c for c in classes if c not in self.dropped_classes]
        else:
            names = _sorted_labels(set(counts) - set(self.dropped_classes))
        if not names:
            raise DataError(f"{csv}: no class left (min_class_count={min_class_count}, classes={classes})")
        index = {c: i for i, c in enumerate(names)}
        self.rows = [r for r in rows if r["label"] in index]
        self.class_names, self.num_classes = names, len(names)
        self.with_mask = use_masks and all("mask" in r for r in self.rows)
        self.samples = [
            Sample(
                r["path"],
                index[r["label"]],
                r["patient"],
                r.get("mask") if self.with_mask else None,
                fixed_split=r.get("split"),
                source=f"line {r['line']}",
            )
            for r in self.rows
        ]

    def group_values(self, key: str) -> list[str]:
        """Per row: the value of the manifest column ``key`` (``data.test_group_by``); empty values are refused."""
        if key not in self.rows[0]:
            columns = [c for c in self.rows[0] if c != "line"]
            raise DataError(f"{self.csv}: no column {key!r} for data.test_group_by (columns: {', '.join(columns)})")
        for row in self.rows:
            if not str(row[key]):
                raise DataError(f"{self.csv}, line {row['line']}, column '{key}': empty value (data.test_group_by)")
        return [str(row[key]) for row in self.rows]

    def _cap_per_patient(self, rows: list[dict], cap: int) -> list[dict]:
        rng = np.random.default_rng(self.seed)
        by_patient: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_patient.setdefault(r["patient"], []).append(i)
        keep = set()
        for patient in sorted(by_patient):
            idx = by_patient[patient]
            keep.update(idx if len(idx) <= cap else rng.choice(idx, size=cap, replace=False).tolist())
        return [r for i, r in enumerate(rows) if i in keep]
