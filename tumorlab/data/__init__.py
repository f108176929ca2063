"""Data sets and DataModules for brain-tumour MRI, with splits that keep each patient and duplicate in one split.

- ``LGGDataModule``: the LGG segmentation download (kaggle_3m), segmentation / classification / multitask.
- ``FolderDataModule``: one folder per class (the 4-class brain-MRI downloads), with ``Training/``/``Testing/``.
- ``ManifestDataModule``: any data set listed in a CSV (``path,label,patient[,mask][,split]``).
- ``VolumeDataModule``: NIfTI volumes and DICOM series (datalist JSON, BraTS, Decathlon, nnU-Net raw) as slices.

The DataModules (``tumorlab.data.modules``) are imported on first use, with Lightning; the rest of the package
(scanning, inspection, duplicates, splits: what ``tumorlab audit`` needs) imports without Lightning.
"""

from typing import Any

from tumorlab.data.lgg import LGGSlice, scan_kaggle_3m
from tumorlab.data.splits import check_disjoint, kfold_by_group, make_splits, split_by_group

_MODULES = ("TumorDataModule", "LGGDataModule", "FolderDataModule", "ManifestDataModule", "VolumeDataModule")

__all__ = [
    *_MODULES,
    "LGGSlice",
    "scan_kaggle_3m",
    "check_disjoint",
    "kfold_by_group",
    "make_splits",
    "split_by_group",
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        from tumorlab.data import modules

        return getattr(modules, name)
    raise AttributeError(f"module 'tumorlab.data' has no attribute {name!r}")
