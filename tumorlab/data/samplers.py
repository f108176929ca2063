"""A training sampler whose order and augmentation depend only on (seed, epoch): resumable and DDP-ready.

Lightning does not checkpoint the data order. Shuffling from the global RNG, as ``shuffle=True`` does, makes a
resumed fit see other batches than an uninterrupted one. ``SeededSampler`` shuffles with torch's
``DistributedSampler`` (a generator seeded with ``seed + epoch``; Lightning calls ``set_epoch``) and hands each
sample an augmentation seed derived from (seed, epoch, index), so every worker process and every resumed run
augments a sample identically in a given epoch, while epochs differ.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler

__all__ = ["SeededSampler"]

_PRIME = 1_000_003


class SeededSampler(DistributedSampler):
    """Yield ``(index, augmentation_seed)`` pairs for this process's share of a shuffled epoch.

    Args:
        dataset: the training set (only its length is used).
        seed: the data seed (also the split seed of the DataModules).
        num_replicas: number of processes (1 without DDP).
        rank: this process's rank.
    """

    def __init__(self, dataset: Sized, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in super().__iter__():
            yield index, ((self.seed * _PRIME + self.epoch) * _PRIME + index) % (2**31 - 1)
