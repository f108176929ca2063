"""The Lightning DataModules: tumorlab's data classes (``base``, ``lgg``, ``folders``, ``manifest``, ``volumes``)
with ``LightningDataModule`` mixed in.

The data classes themselves import no Lightning, so that ``tumorlab audit``, which reads, inspects and splits
the very files a fit would, starts without it (Lightning's import is most of a second's start-up). Importing
this module registers the DataModules for the short names of the command line (``--data LGGDataModule``).
"""

from __future__ import annotations

from lightning.pytorch import LightningDataModule

from tumorlab.data.base import TumorData
from tumorlab.data.folders import FolderData
from tumorlab.data.lgg import LGGData
from tumorlab.data.manifest import ManifestData
from tumorlab.data.volumes.data import VolumeData

__all__ = ["FolderDataModule", "LGGDataModule", "ManifestDataModule", "TumorDataModule", "VolumeDataModule"]


class TumorDataModule(TumorData, LightningDataModule):
    __doc__ = TumorData.__doc__


class LGGDataModule(LGGData, TumorDataModule):
    __doc__ = LGGData.__doc__


class FolderDataModule(FolderData, TumorDataModule):
    __doc__ = FolderData.__doc__


class ManifestDataModule(ManifestData, TumorDataModule):
    __doc__ = ManifestData.__doc__


class VolumeDataModule(VolumeData, TumorDataModule):
    __doc__ = VolumeData.__doc__
