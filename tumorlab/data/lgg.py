"""The LGG segmentation data set (Buda et al., 2019) in its Kaggle ``kaggle_3m`` layout.

``<root>/.../<case>/<case>_<n>.tif`` slices (RGB: pre-contrast, FLAIR, post-contrast) with
``<case>_<n>_mask.tif`` masks. The case is ``TCGA_<site>_<patient>_<date>`` and the patient id is
``TCGA_<site>_<patient>``. The full download holds a second copy of every case folder under
``lgg-mri-segmentation/kaggle_3m/`` and macOS ``.DS_Store`` files: each case is read once, from the
copy nearest to ``root``, and hidden files are ignored. ``data.csv`` (one row per patient: genomic
clusters, grade, age ...) becomes ``LGGDataModule.metadata``.
"""

from __future__ import annotations

import csv
import itertools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from tumorlab.data.base import TumorData
from tumorlab.data.cache import Sample, SampleInfo
from tumorlab.errors import ConfigError, DataError

__all__ = [
    "LGGSlice",
    "LGGData",
    "holds_lgg_slices",
    "institution_of",
    "patient_of",
    "read_lgg_metadata",
    "scan_kaggle_3m",
]

log = logging.getLogger(__name__)

_SLICE = re.compile(r"^(?P<case>.+)_(?P<n>\d+)\.tiff?$", re.IGNORECASE)
_MASK = re.compile(r"^(?P<case>.+)_(?P<n>\d+)_mask\.tiff?$", re.IGNORECASE)
_EXPECTED = "the kaggle_3m layout: patient folders of <case>_<n>.tif slices, each with <case>_<n>_mask.tif"


@dataclass(frozen=True)
class LGGSlice:
    """One slice of one patient: the image file, its mask file and where it sits in the volume."""

    image: Path
    mask: Path
    case: str
    patient: str
    index: int


def patient_of(case: str) -> str:
    """Patient id of a case folder: ``TCGA_CS_4941_19960909`` -> ``TCGA_CS_4941`` (the date is dropped)."""
    return re.sub(r"_\d{8}$", "", case)


def institution_of(patient: str) -> str:
    """The contributing institution (TCIA site code) of a patient id: ``TCGA_CS_4941`` -> ``CS``.

    Raises:
        DataError: the id is not of the form ``TCGA_<institution>_<patient>``.
    """
    parts = patient.split("_")
    if len(parts) < 3 or parts[0] != "TCGA" or not parts[1]:
        raise DataError(f"patient {patient!r}: expected TCGA_<institution>_<patient> to read the institution from")
    return parts[1]


def holds_lgg_slices(root: str | Path) -> bool:
    """Whether ``root`` (a folder) holds any ``<case>_<n>_mask.tif`` outside hidden folders."""
    for _, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if any(_MASK.match(f) for f in filenames):
            return True
    return False


def _case_folders(root: Path) -> dict[str, Path]:
    """Map each case name to one folder holding its slices, preferring the copy nearest to ``root``."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if not any(_MASK.match(f) or _SLICE.match(f) for f in filenames):
            continue
        folder = Path(dirpath)
        previous = found.get(folder.name)
        if previous is None or len(folder.parts) < len(previous.parts):
            found[folder.name] = folder
    return found


def scan_kaggle_3m(root: str | Path, skipped: list[tuple[str, str]] | None = None) -> list[LGGSlice]:
    """List every slice under ``root`` once, in patient order and numeric slice order.

    Args:
        root: the ``kaggle_3m`` folder or any folder above it.
        skipped: where given, a slice without its mask (or a mask without its slice) is appended to it as
            ``(path, reason)`` and left out instead of raising.

    Raises:
        DataError: ``root`` is missing, holds no slices, or (without ``skipped``) a slice lacks its mask.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder; expected {_EXPECTED}")
    slices: list[LGGSlice] = []
    for case, folder in sorted(_case_folders(root).items()):
        images, masks = {}, {}
        for name in os.listdir(folder):
            if m := _MASK.match(name):
                masks[int(m["n"])] = folder / name
            elif m := _SLICE.match(name):
                images[int(m["n"])] = folder / name
        orphans = [
            (str(images[n]), f"{images[n]}: slice without its mask (expected {images[n].stem}_mask.tif beside it)")
            for n in sorted(images.keys() - masks.keys())
        ] + [(str(masks[n]), f"{masks[n]}: mask without its slice") for n in sorted(masks.keys() - images.keys())]
        if orphans and skipped is None:
            raise DataError(orphans[0][1])
        if skipped is not None:
            skipped += orphans
        slices += [
            LGGSlice(images[n], masks[n], case, patient_of(case), n) for n in sorted(images.keys() & masks.keys())
        ]
    if not slices:
        raise DataError(f"data root {root} holds no LGG slices; expected {_EXPECTED}")
    return slices


def read_lgg_metadata(root: str | Path, slices: list[LGGSlice]) -> dict[str, dict[str, str]]:
    """The rows of ``data.csv`` (beside the case folders actually read) keyed by patient id; ``{}`` if absent."""
    folders = sorted({s.image.parent.parent for s in slices}, key=lambda p: len(p.parts))
    for folder in folders:
        path = folder / "data.csv"
        if path.is_file():
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames or "Patient" not in reader.fieldnames:
                    raise DataError(f"{path}: expected a 'Patient' column, found {reader.fieldnames}")
                return {row["Patient"]: row for row in reader}
    return {}


class LGGData(TumorData):
    """The LGG kaggle_3m data for segmentation, tumour classification or both, split by patient.

    Args:
        root: the ``kaggle_3m`` folder of the download, or any folder above it (e.g. ``lgg-mri-segmentation``).
        task: ``segmentation`` and ``multitask`` batches carry ``mask``; ``classification`` batches do not.
            Every batch carries ``label``: 1 when the slice's full-size mask has any tumour pixel.
        image_size: side in pixels that slices and masks are resized to.
        batch_size: slices per batch.
        drop_edge_slices: leave out the first and last slice of each volume (``true`` or ``1``), or the
            first and last ``n`` slices (an integer), which are mostly empty skull caps.
        test_root: a second download in the same layout (other patients, e.g. another site) that forms the
            whole test split, for external validation; ``root`` then gives train and validation only. A patient
            in both roots stops here (a leak), and so does a ``test_root`` that holds no LGG slices.
        **kwargs: the shared options of ``TumorDataModule`` (split, num_folds, fold, seed, channels, augment,
            brain_crop, cache, weighted_sampler, on_bad_file, duplicates, normalize, ...).

    Splits are stratified by tumour burden: each patient's share of slices with tumour, binned into tertiles
    (halves below 30 patients, no bins below 8).
    """

    split_units = ("slices", "patients")  # what the split line of fit counts: samples, groups kept whole

    def __init__(
        self,
        root: str,
        task: Literal["segmentation", "classification", "multitask"] = "multitask",
        image_size: int = 128,
        batch_size: int = 16,
        drop_edge_slices: bool | int = False,
        test_root: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(image_size=image_size, batch_size=batch_size, **kwargs)
        if task not in ("segmentation", "classification", "multitask"):
            raise ConfigError(f"data.task must be segmentation, classification or multitask, got {task!r}")
        drop = int(drop_edge_slices)
        if drop < 0:
            raise ConfigError(f"data.drop_edge_slices must be >= 0, got {drop_edge_slices}")
        self.root, self.task, self.drop_edge_slices, self.test_root = root, task, drop, test_root
        # plain instance attributes, set before any file is read: the CLI links them into the model
        self.num_classes, self.class_names = 2, ["no_tumour", "tumour"]
        self.with_mask = task != "classification"
        # Scan now: a wrong root stops the run before anything is written.
        orphans: list[tuple[str, str]] | None = [] if self.on_bad_file == "skip" else None
        scanned = scan_kaggle_3m(root, skipped=orphans)
        patients = {s.patient for s in scanned}
        test = [] if test_root is None else _drop_edges(_scan_test_root(root, test_root, patients, orphans), drop)
        slices = _drop_edges(scanned, drop)
        self.skipped_files = orphans or []
        if self.skipped_files:
            log.warning("skipped %d unpaired LGG files (on_bad_file: skip); first: %s", *self._first(orphans))
        if not slices or (test_root is not None and not test):
            where = root if not slices else test_root
            raise DataError(f"data root {where}: no slices left after dropping {drop} edge slices per volume")
        self.slices = slices + test
        self.metadata = read_lgg_metadata(root, slices) | (read_lgg_metadata(test_root, test) if test else {})
        self.samples = [Sample(s.image, -1, s.patient, s.mask, index=s.index, source="root") for s in slices]
        self.samples += [
            Sample(s.image, -1, s.patient, s.mask, fixed_split="test", index=s.index, source="test_root") for s in test
        ]

    @staticmethod
    def _first(items: list[tuple[str, str]]) -> tuple[int, str]:
        return len(items), items[0][1]

    @property
    def patients(self) -> list[str]:
        """Sorted patient ids of all slices."""
        return sorted({s.patient for s in self.slices})

    def group_values(self, key: str) -> list[str]:
        """Per slice: its patient's ``institution`` (``institution_of``) or its patient's data.csv column ``key``."""
        if key == "institution":
            return [institution_of(s.patient) for s in self.samples]
        columns = sorted({c for row in self.metadata.values() for c in row} - {"Patient"})
        if key not in columns:
            raise DataError(
                f"data.test_group_by {key!r}: LGG data groups by 'institution' or a data.csv column "
                f"({', '.join(columns) or f'no data.csv under {self.root}'})"
            )
        missing = sorted({s.patient for s in self.samples if not (self.metadata.get(s.patient) or {}).get(key)})
        if missing:
            raise DataError(f"data.test_group_by {key!r}: data.csv has no value for patient {missing[0]}")
        return [self.metadata[s.patient][key] for s in self.samples]

    def sample_labels(self, infos: list[SampleInfo]) -> np.ndarray:
        """1 where the full-size mask has any tumour pixel, else 0."""
        return np.array([int((x.mask_pixels or 0) > 0) for x in infos], dtype=np.int64)

    def strata(self, labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Tumour-burden bin of each slice's patient (share of the patient's slices with tumour)."""
        patients = np.array([s.patient for s in self.samples])
        names = sorted(set(patients[keep].tolist()))
        burden = {p: float(labels[keep & (patients == p)].mean()) for p in names}
        n_bins = 3 if len(names) >= 30 else 2 if len(names) >= 8 else 1
        if n_bins == 1:
            return np.zeros(len(patients), dtype=np.int64)
        edges = np.quantile(list(burden.values()), np.linspace(0, 1, n_bins + 1)[1:-1])
        bins = {p: int(np.searchsorted(edges, b, side="right")) for p, b in burden.items()}
        return np.array([bins.get(p, 0) for p in patients], dtype=np.int64)


def _scan_test_root(root: str, test_root: str, patients: set[str], skipped: list | None) -> list[LGGSlice]:
    """The slices of ``test_root``, refused where it is not LGG data or shares a patient with ``root``."""
    path = Path(test_root)
    if not path.is_dir():
        raise DataError(f"data.test_root {test_root} does not exist or is not a folder; expected {_EXPECTED}")
    if not holds_lgg_slices(path):
        raise DataError(
            f"data.test_root {test_root} holds no LGG slices but data.root {root} is LGG data; a test root must "
            f"have the root's layout ({_EXPECTED})"
        )
    test = scan_kaggle_3m(path, skipped=skipped)
    shared = sorted(patients & {s.patient for s in test})
    if shared:
        more = f" (and {len(shared) - 1} more)" if len(shared) > 1 else ""
        raise DataError(
            f"patient {shared[0]}{more} is in both data.root {root} and data.test_root {test_root}: a test "
            "patient must not be trained on (a leak); remove it from one of them"
        )
    return test


def _drop_edges(slices: list[LGGSlice], n: int) -> list[LGGSlice]:
    if n == 0:
        return slices
    out: list[LGGSlice] = []
    for _, volume in itertools.groupby(slices, key=lambda s: s.case):  # slices come sorted by case
        volume = list(volume)
        out += volume[n : len(volume) - n]
    return out
