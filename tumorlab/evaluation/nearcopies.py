"""Near-copies of the training images in another data set's test images.

Public MRI sets copy each other: the larger 4-class set holds most of the smaller one's images, resized, so a
model tested on the other set has seen part of its test images in training. A fit therefore keeps the
perceptual hashes of its training split in its run folder (``train_hashes.npz``: ``files``, ``hashes`` as
``uint8`` rows of the 256 packed bits of ``tumorlab.data.duplicates.phash_bits``, ``class_names``,
``near_threshold``), and the report of a test on other data (``tumorlab test --ckpt_path RUN --data.root
OTHER``) marks every test image within the threshold of a training image as a near-copy.

The threshold is the ``data.near_threshold`` of the test command (default
``tumorlab.data.duplicates.DEFAULT_NEAR_THRESHOLD``, 12 of 256 bits): the same rule that groups duplicates
inside one data set, where re-encoded or resized copies of one slice lie within 12 bits and neighbouring
slices of one scan 14 or more apart. ``--data.near_threshold 4`` counts only the closest copies (the issue's
4-bit check: 520 of the 1,311 test images of the larger 4-class set among the smaller set's training images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "HASHES_FILE",
    "TrainHashes",
    "hashes_of_files",
    "mark_near_copies",
    "near_copies",
    "read_train_hashes",
    "write_train_hashes",
]

HASHES_FILE = "train_hashes.npz"


class TrainHashes:
    """The perceptual hashes of a fit run's training images.

    Args:
        files: the training image paths, one per row of ``hashes``.
        hashes: ``(N, 32)`` ``uint8``, each row one image's 256-bit perceptual hash, packed.
        class_names: the model's classes, in the order of its outputs.
        near_threshold: the training data module's ``near_threshold`` (for the record).
    """

    def __init__(self, files: list[str], hashes: np.ndarray, class_names: list[str], near_threshold: int) -> None:
        self.files, self.hashes = list(files), np.asarray(hashes, dtype=np.uint8).reshape(len(files), -1)
        self.class_names, self.near_threshold = list(class_names), int(near_threshold)


def hashes_of_files(paths: list[str | Path]) -> tuple[np.ndarray, list[str | None]]:
    """``(hashes (N, 32) uint8, error per file or None)`` of image files, by the data layer's own pass
    (``tumorlab.data.cache.inspect_samples``); a file that cannot be read gets a zero row and its error."""
    from tumorlab.data.cache import Sample, inspect_samples
    from tumorlab.data.duplicates import PHASH_SIZE

    infos = inspect_samples([Sample(Path(p), -1, "") for p in paths], decode=True, phash=True)
    return _stack([x.phash for x in infos], PHASH_SIZE * PHASH_SIZE // 8), [x.error for x in infos]


def _stack(hexes: list[str | None], width: int) -> np.ndarray:
    rows = [np.frombuffer(bytes.fromhex(h), np.uint8) if h else np.zeros(width, np.uint8) for h in hexes]
    return np.stack(rows) if rows else np.zeros((0, width), np.uint8)


def write_train_hashes(datamodule: Any, run_dir: str | Path) -> Path | None:
    """Write ``run_dir/train_hashes.npz`` for the training split of a set-up data module; ``None`` where the
    data module has no training split. Hashes the data module computed already are reused."""
    from tumorlab.data.duplicates import DEFAULT_NEAR_THRESHOLD, PHASH_SIZE

    indices = (getattr(datamodule, "split_indices", None) or {}).get("train")
    if indices is None:
        return None
    samples = [datamodule.samples[i] for i in indices]
    infos = getattr(datamodule, "infos", None)
    known = [infos[i].phash for i in indices] if infos is not None else [None] * len(samples)
    if all(known):
        hashes = _stack(known, PHASH_SIZE * PHASH_SIZE // 8)
    else:  # the data module grouped exact copies only: hash the training images now
        hashes = hashes_of_files([s.image for s in samples])[0]
    path = Path(run_dir) / HASHES_FILE
    np.savez_compressed(
        path,
        files=np.array([str(s.image) for s in samples], dtype=str),
        hashes=hashes,
        class_names=np.array(list(getattr(datamodule, "class_names", None) or []), dtype=str),
        near_threshold=np.array(getattr(datamodule, "near_threshold", DEFAULT_NEAR_THRESHOLD)),
    )
    return path


def read_train_hashes(run_dir: str | Path | None) -> TrainHashes | None:
    """The ``train_hashes.npz`` of a fit run folder, or ``None`` where it has none."""
    path = Path(run_dir) / HASHES_FILE if run_dir is not None else None
    if path is None or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return TrainHashes(
            [str(f) for f in z["files"]], z["hashes"], [str(c) for c in z["class_names"]], int(z["near_threshold"])
        )


def near_copies(test_hashes: np.ndarray, train: TrainHashes, threshold: int) -> list[str | None]:
    """For every test hash, a training file whose hash differs in at most ``threshold`` bits, else ``None``.

    Reuses ``duplicates.near_pairs`` on the training and test hashes together and keeps the pairs that join
    a training image to a test image (the first training match of each test image).
    """
    from tumorlab.data.duplicates import near_pairs

    n = len(train.files)
    found: list[str | None] = [None] * len(test_hashes)
    if n == 0 or len(test_hashes) == 0:
        return found
    pairs = near_pairs(np.concatenate([train.hashes, np.asarray(test_hashes, np.uint8)]), threshold)
    for i, j in pairs[(pairs[:, 0] < n) & (pairs[:, 1] >= n)].tolist():
        if found[j - n] is None:
            found[j - n] = train.files[i]
    return found


def mark_near_copies(run: Any, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Mark the prediction ``rows`` of a test on other data that are near-copies of the fit's training images.

    Applies to an evaluation run whose ``run.json`` says it read other data than its fit (``other_data``)
    and whose fit run kept ``train_hashes.npz``; else returns ``None`` and leaves the rows as they are.
    Every row gains ``near_copy_of_train`` (1 or 0) and ``train_copy`` (the training file it copies, or empty;
    a test file that cannot be read counts as no copy). Returns the count and how it was found.
    """
    from tumorlab.data.duplicates import DEFAULT_NEAR_THRESHOLD

    if run.command == "fit" or not run.record.get("other_data"):
        return None
    train = read_train_hashes(run.fit_dir)
    if train is None:
        return None
    init = (run.config.get("data") or {}).get("init_args") or {}
    threshold = int(init.get("near_threshold", DEFAULT_NEAR_THRESHOLD))
    hashes, errors = hashes_of_files([r["file"] for r in rows])
    matches = near_copies(hashes, train, threshold)
    for row, match, error in zip(rows, matches, errors, strict=True):
        match = None if error else match
        row["near_copy_of_train"] = int(match is not None)
        row["train_copy"] = match or ""
    return {
        "count": sum(int(r["near_copy_of_train"]) for r in rows),
        "test_images": len(rows),
        "unreadable": sum(e is not None for e in errors),
        "threshold_bits": threshold,
        "train_images": len(train.files),
        "train_hashes": str(Path(run.fit_dir) / HASHES_FILE),
        "rule": f"perceptual hash (256 bits) within {threshold} bits of a training image's (data.near_threshold)",
    }
