"""Data sets and DataModules for brain-tumour MRI, with splits that keep each patient in one split."""

from tumorlab.data.lgg import LGGDataModule, LGGDataset, LGGSlice, scan_kaggle_3m
from tumorlab.data.splits import check_disjoint, split_by_group

__all__ = ["LGGDataModule", "LGGDataset", "LGGSlice", "scan_kaggle_3m", "check_disjoint", "split_by_group"]
