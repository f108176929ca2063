"""The LGG segmentation data set (Buda et al., 2019) in its Kaggle ``kaggle_3m`` layout.

``<root>/.../<case>/<case>_<n>.tif`` slices (RGB: pre-contrast, FLAIR, post-contrast) with
``<case>_<n>_mask.tif`` masks. The case is ``TCGA_<site>_<patient>_<date>`` and the patient id is
``TCGA_<site>_<patient>``. The full download holds a second copy of every case folder under
``lgg-mri-segmentation/kaggle_3m/`` and macOS ``.DS_Store`` files: each case is read once, from the
copy nearest to ``root``, and hidden files are ignored.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from tumorlab.data.io import read_image, read_mask
from tumorlab.data.samplers import SeededSampler
from tumorlab.data.splits import SPLITS, split_by_group
from tumorlab.data.transforms import build_transforms
from tumorlab.errors import DataError

__all__ = ["LGGSlice", "scan_kaggle_3m", "LGGDataset", "LGGDataModule"]

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


def _case_folders(root: Path) -> dict[str, Path]:
    """Map each case name to one folder holding its slices, preferring the copy nearest to ``root``."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if not any(_MASK.match(f) for f in filenames):
            continue
        folder = Path(dirpath)
        previous = found.get(folder.name)
        if previous is None or len(folder.parts) < len(previous.parts):
            found[folder.name] = folder
    return found


def scan_kaggle_3m(root: str | Path) -> list[LGGSlice]:
    """List every slice under ``root`` once, in patient order and numeric slice order.

    Raises:
        DataError: ``root`` is missing, holds no slices, or a slice lacks its mask (or a mask its slice).
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
        for n in sorted(images.keys() - masks.keys()):
            raise DataError(f"{images[n]}: slice without its mask (expected {images[n].stem}_mask.tif beside it)")
        for n in sorted(masks.keys() - images.keys()):
            raise DataError(f"{masks[n]}: mask without its slice")
        slices += [LGGSlice(images[n], masks[n], case, patient_of(case), n) for n in sorted(images)]
    if not slices:
        raise DataError(f"data root {root} holds no LGG slices; expected {_EXPECTED}")
    return slices


class LGGDataset(Dataset):
    """Slices as dictionaries: ``image`` (3, H, W) float, ``mask`` (1, H, W) float 0/1, ``label`` 0/1, ``patient``."""

    def __init__(self, slices: list[LGGSlice], transform) -> None:
        self.slices = slices
        self.transform = transform

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        """``item`` is an index, or ``(index, augmentation_seed)`` from ``SeededSampler``."""
        i, seed = item if isinstance(item, tuple) else (item, None)
        if seed is not None:
            self.transform.set_random_seed(seed)
        s = self.slices[i]
        image, mask = read_image(s.image), read_mask(s.mask)
        if image.shape[:2] != mask.shape:
            raise DataError(f"{s.mask}: mask size {mask.shape} differs from its slice {image.shape[:2]}")
        out = self.transform(image=image, mask=mask)
        mask_t = out["mask"].float().unsqueeze(0)
        return {
            "image": out["image"],
            "mask": mask_t,
            "label": torch.tensor(int(mask.any()), dtype=torch.long),
            "patient": s.patient,
            "image_path": str(s.image),
        }


def _default_workers() -> int:
    # On small machines the main process decodes fast enough; worker start-up would cost more than it saves.
    cpus = os.cpu_count() or 1
    return 0 if cpus <= 2 else min(4, cpus - 1)


class LGGDataModule(LightningDataModule):
    """The LGG kaggle_3m data: split by patient into train/val/test, resized, flipped for training.

    Args:
        root: the ``kaggle_3m`` folder of the download, or any folder above it (e.g. ``lgg-mri-segmentation``).
        image_size: side in pixels that slices and masks are resized to.
        batch_size: slices per batch.
        num_workers: data-loading processes; ``None`` picks a default for this machine.
        split: fractions of patients for train, val and test.
        seed: seed of the patient split.
        hflip: probability of a horizontal flip in training.
        vflip: probability of a vertical flip in training.
    """

    num_classes = 2
    class_names = ("no_tumour", "tumour")

    def __init__(
        self,
        root: str,
        image_size: int = 128,
        batch_size: int = 16,
        num_workers: int | None = None,
        split: tuple[float, float, float] = (0.7, 0.15, 0.15),
        seed: int = 42,
        hflip: float = 0.5,
        vflip: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Scan now: a wrong root stops the run before anything is written.
        self.slices = scan_kaggle_3m(root)
        self.num_workers = _default_workers() if num_workers is None else num_workers
        self.datasets: dict[str, LGGDataset] = {}

    @property
    def patients(self) -> list[str]:
        return sorted({s.patient for s in self.slices})

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        hp = self.hparams
        groups = [s.patient for s in self.slices]
        self.split_indices = split_by_group(groups, hp.split, hp.seed)
        for name in SPLITS:
            transform = build_transforms(hp.image_size, train=name == "train", hflip=hp.hflip, vflip=hp.vflip)
            self.datasets[name] = LGGDataset([self.slices[i] for i in self.split_indices[name]], transform)
        counts = {k: (len(v), len({s.patient for s in v.slices})) for k, v in self.datasets.items()}
        log.info("LGG split (slices, patients): %s", counts)

    def split_patients(self, name: str) -> list[str]:
        """Sorted patient ids of split ``name`` (after ``setup``)."""
        return sorted({s.patient for s in self.datasets[name].slices})

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = None
        if shuffle:
            sampler = SeededSampler(self.datasets[name], seed=self.hparams.seed, num_replicas=world, rank=rank)
        elif world > 1:
            # Lightning's default DistributedSampler pads evaluation sets with repeated samples; this one
            # gives every sample to exactly one process, so metrics synced across processes are exact.
            sampler = UnrepeatedDistributedSampler(self.datasets[name], num_replicas=world, rank=rank, shuffle=False)
        return DataLoader(
            self.datasets[name],
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            # worker seeds come from this generator, not from the global RNG that dropout draws from
            generator=torch.Generator().manual_seed(self.hparams.seed),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
