"""Data sets and DataModules for brain-tumour MRI, with splits that keep each patient and duplicate in one split.

- ``LGGDataModule``: the LGG segmentation download (kaggle_3m), segmentation / classification / multitask.
- ``FolderDataModule``: one folder per class (the 4-class brain-MRI downloads), with ``Training/``/``Testing/``.
- ``ManifestDataModule``: any data set listed in a CSV (``path,label,patient[,mask][,split]``).
"""

from tumorlab.data.base import TumorDataModule
from tumorlab.data.folders import FolderDataModule
from tumorlab.data.lgg import LGGDataModule, LGGSlice, scan_kaggle_3m
from tumorlab.data.manifest import ManifestDataModule
from tumorlab.data.splits import check_disjoint, kfold_by_group, make_splits, split_by_group

__all__ = [
    "TumorDataModule",
    "LGGDataModule",
    "FolderDataModule",
    "ManifestDataModule",
    "LGGSlice",
    "scan_kaggle_3m",
    "check_disjoint",
    "kfold_by_group",
    "make_splits",
    "split_by_group",
]
