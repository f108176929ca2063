"""Duplicate images: byte-identical files (a content hash) and near-duplicates (a perceptual hash).

Near-duplicates are images whose 256-bit DCT perceptual hash (``imagehash.phash`` with ``hash_size=16``)
differ in at most ``near_threshold`` bits. On the 4-class Training folder (2,870 JPEGs) the groups are
stable from 4 to 12 bits (80 to 90 groups, none mixing classes): re-encoded or resized copies of one
slice lie within 12 bits, while neighbouring slices of one scan are 14 bits or more apart. Hence the
default of 12. The 64-bit hash is too coarse for MRI: at 8 bits it chains 611 images into one group.

Groups are the connected components of the "same content" graph (``scipy.sparse.csgraph``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["PHASH_SIZE", "DEFAULT_NEAR_THRESHOLD", "phash_bits", "near_pairs", "components", "group_ids"]

PHASH_SIZE = 16  # 16 x 16 = 256 bits
DEFAULT_NEAR_THRESHOLD = 12


def phash_bits(rgb: np.ndarray) -> np.ndarray:
    """The 256-bit perceptual hash of an RGB uint8 image, packed into 32 bytes."""
    import imagehash
    from PIL import Image

    bits = imagehash.phash(Image.fromarray(rgb), hash_size=PHASH_SIZE).hash
    return np.packbits(bits.ravel())


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
        dist = np.bitwise_count(block[:, None, :] ^ words[None, :, :]).sum(axis=2)
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
