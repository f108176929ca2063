"""Duplicate images: byte-identical files (a content hash) and near-duplicates (a perceptual hash).

Near-duplicates are images whose 256-bit DCT perceptual hash (``imagehash.phash`` with ``hash_size=16``)
differ in at most ``near_threshold`` bits. On the 4-class Training folder (2,870 JPEGs) the groups are
stable from 4 to 12 bits (80 to 90 groups, none mixing classes): re-encoded or resized copies of one
slice lie within 12 bits, while neighbouring slices of one scan are 14 bits or more apart. Hence the
default of 12. The 64-bit hash is too coarse for MRI: at 8 bits it chains 611 images into one group.

Groups are the connected components of the "same content" graph (``scipy.sparse.csgraph``);
``duplicate_groups`` turns the hashes of a data set into one group id per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = [
    "PHASH_SIZE",
    "DEFAULT_NEAR_THRESHOLD",
    "phash_bits",
    "bit_count",
    "bit_count_by_table",
    "near_pairs",
    "components",
    "pairs_of_equal",
    "group_ids",
    "duplicate_groups",
]

PHASH_SIZE = 16  # 16 x 16 = 256 bits
DEFAULT_NEAR_THRESHOLD = 12

_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.uint8)


def phash_bits(rgb: np.ndarray) -> np.ndarray:
    """The 256-bit perceptual hash of an RGB uint8 image, packed into 32 bytes."""
    import imagehash
    from PIL import Image

    bits = imagehash.phash(Image.fromarray(rgb), hash_size=PHASH_SIZE).hash
    return np.packbits(bits.ravel())


def bit_count(words: np.ndarray) -> np.ndarray:
    """Set bits of every element of an unsigned integer array, as ``uint8`` of the same shape.

    ``np.bitwise_count`` where numpy has it (numpy >= 2), else ``bit_count_by_table`` (numpy 1.x).
    """
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    return bit_count_by_table(words)


def bit_count_by_table(words: np.ndarray) -> np.ndarray:
    """``bit_count`` without ``np.bitwise_count``: a table of set bits per byte, summed over each element's bytes."""
    words = np.ascontiguousarray(words)
    if words.dtype.kind != "u":
        raise TypeError(f"bit counts need an unsigned integer array, got {words.dtype}")
    per_byte = _BYTE_BITS[words.reshape(-1).view(np.uint8)].reshape(*words.shape, words.itemsize)
    return per_byte.sum(axis=-1, dtype=np.uint8)


def near_pairs(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, whose packed hashes differ in at most ``threshold`` bits.

    Written by hand because imagehash compares one pair at a time in Python (millions of pairs here): this
    XORs blocks of rows as 64-bit words and counts bits with numpy, about a second for 3,000 images.
    """
    n = len(hashes)
    if n < 2:
        return np.zeros((0, 2), dtype=np.int64)
    words = np.ascontiguousarray(hashes, dtype=np.uint8).view(np.uint64)
    chunk = max(1, (1 << 23) // (n * words.shape[1]))  # at most 64 MiB of XORed words at a time
    found = []
    for start in range(0, n, chunk):
        block = words[start : start + chunk]
        dist = bit_count(block[:, None, :] ^ words[None, :, :]).sum(axis=2)
        i, j = np.nonzero(dist <= threshold)
        i = i + start
        keep = i < j
        found.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(found).astype(np.int64)


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes linked by ``pairs`` (singletons get their own)."""
    if len(pairs) == 0:
        return np.arange(n)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def pairs_of_equal(keys: Sequence) -> np.ndarray:
    """Pairs linking every item to the first item with the same key (a chain per key suffices)."""
    first: dict = {}
    pairs = []
    for i, key in enumerate(keys):
        if key is None:
            continue
        j = first.setdefault(key, i)
        if j != i:
            pairs.append((j, i))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def group_ids(labels: np.ndarray, names: Sequence[str], prefix: str = "group-") -> list[str]:
    """Readable, run-independent ids for component ``labels``: ``prefix`` + the smallest member name."""
    smallest: dict[int, str] = {}
    for label, name in zip(labels.tolist(), names, strict=True):
        if label not in smallest or name < smallest[label]:
            smallest[label] = name
    return [prefix + smallest[label] for label in labels.tolist()]


def duplicate_groups(
    sha256: Sequence[str | None],
    keep: np.ndarray,
    mode: str = "exact",
    phashes: Sequence[str | None] | None = None,
    threshold: int = DEFAULT_NEAR_THRESHOLD,
) -> tuple[np.ndarray, list[str]]:
    """The duplicate group of every image: component labels and ids ``group-<smallest SHA-256 prefix>``.

    Args:
        sha256: hex SHA-256 of each file's bytes (``None`` where the file could not be read).
        keep: ``True`` for the images that take part; the others stay singletons.
        mode: ``exact`` links byte-identical files; ``near`` also images whose perceptual hashes differ in
            at most ``threshold`` bits; ``none`` links nothing (every image is its own group).
        phashes: hex of each image's packed perceptual hash (``None`` where not computed); used by ``near``.
        threshold: bits of perceptual-hash difference that still count as the same image.

    Returns:
        ``(labels, ids)``: the connected-component label and the readable group id of each image; an image
        without a copy gets an id of its own (``group-unread<i>`` for files that could not be read).
    """
    if mode not in ("exact", "near", "none"):
        raise ValueError(f"duplicate mode must be exact, near or none, got {mode!r}")
    n = len(sha256)
    keep = np.asarray(keep, dtype=bool)
    linked = [h if keep[i] and mode != "none" else None for i, h in enumerate(sha256)]
    pairs = [pairs_of_equal(linked)]
    if mode == "near" and phashes is not None:
        have = np.array([i for i in range(n) if keep[i] and phashes[i]], dtype=np.int64)
        if len(have) > 1:
            hashes = np.stack([np.frombuffer(bytes.fromhex(phashes[i]), np.uint8) for i in have])
            pairs.append(have[near_pairs(hashes, threshold)])
    labels = components(n, np.concatenate(pairs))
    names = [h[:16] if h else f"unread{i}" for i, h in enumerate(sha256)]
    return labels, group_ids(labels, names)
