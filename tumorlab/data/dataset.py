"""The one Dataset behind every DataModule: samples served from the decode cache (or decoded), then transformed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from tumorlab.data.cache import DecodeCache, Sample, load_sample
from tumorlab.data.transforms import DecodeSpec

__all__ = ["SampleStore", "SampleDataset"]


class SampleStore:
    """All samples of a data module with their labels, and where their prepared arrays come from.

    Args:
        samples: every sample (all splits).
        labels: the class index of each sample.
        spec: how a file is prepared (size, channels, crop).
        cache: the filled decode cache, or ``None`` to decode in the loader every time.
    """

    def __init__(self, samples: list[Sample], labels: np.ndarray, spec: DecodeSpec, cache: DecodeCache | None):
        self.samples, self.labels, self.spec, self.cache = samples, np.asarray(labels, dtype=np.int64), spec, cache

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Prepared ``(image (S, S, C), mask (S, S) or None)`` of sample ``i``."""
        if self.cache is not None:
            return self.cache.get(i)
        return load_sample(self.samples[i], self.spec)


class SampleDataset(Dataset):
    """One split: a dict per sample with ``image``, ``label``, ``patient``, ``image_path``, ``split`` and, with
    masks, ``mask``.

    ``image`` is float ``(C, H, W)`` normalised, ``mask`` float ``(1, H, W)`` 0/1, ``label`` a long scalar,
    ``split`` the name of the split the sample belongs to (``train``, ``val``, ``test``; the prediction file
    tags its rows with it).

    Args:
        store: every sample of the data module and where its arrays come from.
        indices: the store slots of this split, in order.
        transform: the albumentations pipeline (augmenting for training, normalising only otherwise).
        with_mask: whether items carry ``mask``.
        patients: per store slot, the patient id (or duplicate-group id where there are none).
        split: the split's name, given to every item.
        mask_channels: channels of ``mask``; above 1 the cached mask holds them as bits (bit ``c`` = channel
            ``c``, volumes with a label map of several regions) and items carry ``mask`` ``(mask_channels, H, W)``.
    """

    def __init__(
        self,
        store: SampleStore,
        indices: Sequence[int],
        transform,
        with_mask: bool,
        patients: list[str],
        split: str = "",
        mask_channels: int = 1,
    ):
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.with_mask = with_mask
        self.patients = patients
        self.split = split
        self.mask_channels = mask_channels

    def with_transform(self, transform) -> SampleDataset:
        """The same samples and split name through another ``transform`` (training images without augmentation)."""
        return SampleDataset(
            self.store, self.indices, transform, self.with_mask, self.patients, self.split, self.mask_channels
        )

    @property
    def samples(self) -> list[Sample]:
        """The samples of this split, in order."""
        return [self.store.samples[i] for i in self.indices]

    slices = samples  # the LGG name

    @property
    def labels(self) -> np.ndarray:
        """The class index of each sample of this split."""
        return self.store.labels[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int | tuple[int, int]) -> dict:
        """``item`` is a position in this split, or ``(position, augmentation_seed)`` from ``SeededSampler``."""
        k, seed = item if isinstance(item, tuple) else (item, None)
        if seed is not None:
            self.transform.set_random_seed(seed)
        i = int(self.indices[k])
        image, mask = self.store.load(i)
        if self.with_mask:
            out = self.transform(image=image, mask=mask)
        else:
            out = self.transform(image=image)
        item = {
            "image": out["image"],
            "label": torch.tensor(int(self.store.labels[i]), dtype=torch.long),
            "patient": self.patients[i],
            "image_path": str(self.store.samples[i].image),
            "split": self.split,
        }
        if self.with_mask:
            mask = torch.as_tensor(out["mask"])
            if self.mask_channels > 1:  # bit-packed channels (tumorlab.data.volumes.labels)
                bits = torch.arange(self.mask_channels, dtype=mask.dtype).view(-1, 1, 1)
                item["mask"] = ((mask.unsqueeze(0) >> bits) & 1).float()
            else:
                item["mask"] = mask.float().unsqueeze(0)
        return item
