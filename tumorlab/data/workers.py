"""Loader workers that die name the sample they were loading.

When a DataLoader worker process dies (the kernel's out-of-memory killer, a crash inside a decoder), torch
reports only ``DataLoader worker (pid 1234) exited unexpectedly``: the worker cannot say anything once it is
gone. ``TrackedDataset`` therefore writes, in shared memory, which item each worker is loading before it
loads it; ``NamingDataLoader`` turns torch's error into a ``DataError`` that names that item's file.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_right
from typing import Any

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, get_worker_info

from tumorlab.errors import DataError

__all__ = ["TrackedDataset", "NamingDataLoader", "describe_item"]

_IDLE = -1


class TrackedDataset(Dataset):
    """``dataset`` with, per worker, the process id and the position being loaded (``-1``: idle) in shared memory.

    Attributes other than loading are the wrapped dataset's (``samples``, ``labels`` ...).

    Args:
        dataset: the split's dataset.
        num_workers: the loader's worker processes (one slot each).
    """

    def __init__(self, dataset: Dataset, num_workers: int) -> None:
        self.dataset = dataset
        self.slots = torch.full((max(num_workers, 1), 2), _IDLE, dtype=torch.long).share_memory_()

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: Any) -> Any:
        info = get_worker_info()
        if info is None:  # the main process: an error surfaces with its own traceback
            return self.dataset[item]
        position = item[0] if isinstance(item, tuple) else item  # (position, augmentation seed) from SeededSampler
        slot = self.slots[info.id]
        slot[0], slot[1] = os.getpid(), int(position)
        out = self.dataset[item]
        slot[1] = _IDLE
        return out

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("dataset", "slots"):  # unpickling, before __dict__ is filled
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def loading(self, pids: set[int]) -> list[int]:
        """Positions that the workers with process ids ``pids`` were loading when they stopped (all busy
        workers where ``pids`` is empty)."""
        rows = self.slots.tolist()
        return [pos for pid, pos in rows if pos != _IDLE and (not pids or pid in pids)]


def describe_item(dataset: Dataset, position: int) -> str:
    """The file behind ``dataset[position]`` (a ``SampleDataset`` or a ``ConcatDataset`` of them)."""
    if isinstance(dataset, ConcatDataset):
        part = bisect_right(dataset.cumulative_sizes, position)
        start = dataset.cumulative_sizes[part - 1] if part else 0
        return describe_item(dataset.datasets[part], position - start)
    store, indices = getattr(dataset, "store", None), getattr(dataset, "indices", None)
    if store is None or indices is None:
        return f"item {position}"
    sample = store.samples[int(indices[position])]
    split = getattr(dataset, "split", "")
    return f"{sample.image} (item {position} of the {split or 'data'} split)"


class NamingDataLoader(DataLoader):
    """A ``DataLoader`` over a ``TrackedDataset`` whose worker deaths raise a ``DataError`` naming the file."""

    def __iter__(self):
        return _NamingIterator(super().__iter__(), self.dataset)


class _NamingIterator:
    def __init__(self, iterator, dataset: Dataset) -> None:
        self._iterator, self._dataset = iterator, dataset

    def __iter__(self):
        return self

    def __len__(self) -> int:
        return len(self._iterator)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._iterator, name)

    def __next__(self) -> Any:
        try:
            return next(self._iterator)
        except RuntimeError as err:
            text = str(err)
            if "DataLoader worker" not in text or not isinstance(self._dataset, TrackedDataset):
                raise
            # "DataLoader worker (pid 12) is killed by signal ..." or "... (pid(s) 12, 13) exited unexpectedly"
            named = re.search(r"DataLoader worker \(pid(?:\(s\))? ([\d, ]+)\)", text)
            pids = {int(p) for p in re.findall(r"\d+", named.group(1))} if named else set()
            loading = self._dataset.loading(pids)
            if not loading:
                raise
            inner = self._dataset.dataset
            files = "; ".join(describe_item(inner, p) for p in loading)
            raise DataError(
                f"a data loader worker died while loading {files} ({text.splitlines()[0]}); rerun with "
                "data.num_workers: 0 to see the cause in the main process (out of memory is the usual one)"
            ) from err
