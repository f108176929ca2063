"""How a split becomes batches: the loader of every tumorlab data module (``TumorData``'s ``*_dataloader``).

Training draws with a ``SeededSampler`` (order and augmentation follow (seed, epoch) only: reproducible,
resumable, sharded under DDP; class-balanced with ``weighted_sampler``); evaluation under DDP gives every
sample to exactly one process; with workers, a worker that dies names the file it was loading.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from tumorlab.data.samplers import SeededSampler
from tumorlab.data.splits import SPLITS
from tumorlab.data.workers import NamingDataLoader, TrackedDataset

__all__ = ["default_workers", "make_loader", "predict_dataset"]


def default_workers() -> int:
    """Loader processes for this machine: none on 1-2 cores (the main process keeps up with a cached data
    set and worker start-up costs more than it saves), else up to 4, leaving a core to the model."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cpus <= 2 else min(4, cpus - 1)


def make_loader(
    ds: Dataset,
    train: bool,
    *,
    batch_size: int,
    seed: int,
    num_workers: int,
    persistent_workers: bool,
    pin_memory: bool,
    weighted_classes: int | None = None,
    trainer: Any = None,
) -> DataLoader:
    """The loader of ``ds`` (a split's dataset, with ``labels``).

    Args:
        ds: the dataset.
        train: draw with a ``SeededSampler`` (else in order).
        batch_size: samples per batch.
        seed: the sampler's and the worker seeds' random state.
        num_workers: loader processes.
        persistent_workers: keep workers between epochs (only where there are workers).
        pin_memory: pin batches for fast transfer.
        weighted_classes: for training, the number of classes to balance: each sample is drawn with probability
            inversely proportional to its class frequency (``None``: uniform).
        trainer: the Lightning Trainer of the data module (``None`` outside Lightning): its world size and rank
            shard the draw.
    """
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    sampler = None
    if train:
        weights = None
        if weighted_classes is not None:
            counts = np.bincount(ds.labels, minlength=weighted_classes).astype(np.float64)
            weights = (1.0 / counts[ds.labels]).tolist()
        sampler = SeededSampler(ds, seed=seed, num_replicas=world, rank=rank, weights=weights)
    elif world > 1:
        # Lightning's default DistributedSampler pads evaluation sets with repeated samples; this one gives
        # every sample to exactly one process, so metrics synced across processes are exact.
        from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

        sampler = UnrepeatedDistributedSampler(ds, num_replicas=world, rank=rank, shuffle=False)
    # with workers, one that dies names the file it was loading (tumorlab.data.workers)
    tracked = TrackedDataset(ds, num_workers) if num_workers > 0 else ds
    return (NamingDataLoader if num_workers > 0 else DataLoader)(
        tracked,
        batch_size=batch_size,
        sampler=sampler,
        # worker seeds come from this generator, not from the global RNG that dropout draws from
        generator=torch.Generator().manual_seed(seed),
        num_workers=num_workers,
        persistent_workers=persistent_workers and num_workers > 0,
        pin_memory=pin_memory,
        drop_last=False,
    )


def predict_dataset(datasets: Mapping[str, Any], predict_split: str) -> Dataset:
    """The samples ``predict_dataloader`` serves: ``datasets[predict_split]``, or train, val and test in turn
    (``all``), every one normalised only (training images too), each item tagged with its ``split``."""
    names: Sequence[str] = SPLITS if predict_split == "all" else (predict_split,)
    unaugmented = datasets["val"].transform  # built with train=False: normalisation only
    parts = [datasets[n] if n != "train" else datasets[n].with_transform(unaugmented) for n in names]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)
