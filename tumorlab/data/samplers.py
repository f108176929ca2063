"""A training sampler whose order and augmentation depend only on (seed, epoch): resumable and DDP-ready.

Lightning does not checkpoint the data order. Shuffling from the global RNG, as ``shuffle=True`` does, makes a
resumed fit see other batches than an uninterrupted one. ``SeededSampler`` draws each epoch from a generator
seeded with ``seed + epoch`` (Lightning calls ``set_epoch`` on it), shards the draw across DDP processes like
torch's ``DistributedSampler``, and hands each sample an augmentation seed derived from (seed, epoch, index),
so every worker process and every resumed run augments a sample identically in a given epoch, while epochs
differ. Written by hand because torch's samplers either draw from the global RNG or yield bare indices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence, Sized

import torch
from torch.utils.data import DistributedSampler

__all__ = ["SeededSampler"]

_PRIME = 1_000_003


class SeededSampler(DistributedSampler):
    """Yield ``(index, augmentation_seed)`` pairs for this process's share of one training epoch.

    Args:
        dataset: the training set (only its length is used).
        seed: the data seed (also the split seed of the DataModules).
        num_replicas: number of processes (1 without DDP).
        rank: this process's rank.
        weights: per-sample draw weights; given, an epoch is ``len(dataset)`` draws with replacement
            (a class-balancing sampler); ``None``, a permutation.
    """

    def __init__(
        self, dataset: Sized, seed: int, num_replicas: int = 1, rank: int = 0, weights: Sequence[float] | None = None
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def _indices(self) -> list[int]:
        if self.weights is None:
            return list(super().__iter__())
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        drawn = torch.multinomial(self.weights, len(self.dataset), replacement=True, generator=g).tolist()
        drawn += drawn[: self.total_size - len(drawn)]  # pad to a multiple of the process count, as torch does
        return drawn[self.rank : self.total_size : self.num_replicas]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self._indices():
            yield index, ((self.seed * _PRIME + self.epoch) * _PRIME + index) % (2**31 - 1)
