"""Run the near-duplicate and metric code on the lowest numpy and torchmetrics that pyproject.toml declares.

`.ci/run` installs those two versions into a separate folder first and puts it ahead on PYTHONPATH. The
modules are loaded from their files, past the package __init__ files (which import OpenCV and Lightning,
builds of which may need a newer numpy than tumorlab's own code does). Exits non-zero on any mismatch.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
import torchmetrics

REPO = Path(__file__).resolve().parents[1]


def load(name: str, relative: str):
    spec = importlib.util.spec_from_file_location(name, REPO / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def check_duplicates() -> None:
    dup = load("_tl_duplicates", "tumorlab/data/duplicates.py")
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 256, size=(40, 32), dtype=np.uint8)
    hashes[7] = hashes[3]
    hashes[7, 0] ^= 0b111  # 3 bits away from image 3
    pairs = {tuple(p) for p in dup.near_pairs(hashes, threshold=3).tolist()}
    assert (3, 7) in pairs, pairs
    assert (3, 7) not in {tuple(p) for p in dup.near_pairs(hashes, threshold=2).tolist()}
    words = hashes.view(np.uint64)
    assert np.array_equal(dup.bit_count(words), dup.bit_count_by_table(words))


def check_metrics() -> None:
    metrics = load("_tl_metrics", "tumorlab/tasks/metrics.py")
    g = torch.Generator().manual_seed(0)
    probs, labels = torch.rand(64, generator=g), torch.randint(0, 2, (64,), generator=g)
    values = metrics.classification_metrics(2)(probs, labels)
    assert abs(float(values["acc"]) - float(((probs > 0.5).long() == labels).float().mean())) < 1e-6
    pred = (torch.rand(4, 1, 8, 8, generator=g) > 0.5).long()
    target = (torch.rand(4, 1, 8, 8, generator=g) > 0.5).long()
    dice = float(metrics.segmentation_metrics()(pred, target)["dice"])
    expected = 2 * float((pred * target).sum()) / float(pred.sum() + target.sum())
    assert abs(dice - expected) < 1e-6, (dice, expected)
    volume = metrics.VolumeDice()
    volume.update(pred, target, ["a", "a", "b", "b"])
    assert 0.0 <= float(volume.compute()) <= 1.0


if __name__ == "__main__":
    print(f"lowest declared versions: numpy {np.__version__}, torchmetrics {torchmetrics.__version__}")
    check_duplicates()
    check_metrics()
    print("near-duplicate and metric code: ok")
