"""Duplicate grouping as pure functions: bit counts (numpy 2 and the numpy 1 fallback), near pairs, groups."""

from __future__ import annotations

import numpy as np
import pytest

from tumorlab.data import duplicates
from tumorlab.data.duplicates import bit_count, bit_count_by_table, duplicate_groups, near_pairs


def _flip(packed: np.ndarray, bits: list[int]) -> np.ndarray:
    """A copy of a packed 256-bit hash with the given bit positions inverted."""
    unpacked = np.unpackbits(packed)
    unpacked[bits] ^= 1
    return np.packbits(unpacked)


def test_table_bit_count_matches_python_and_numpy():
    rng = np.random.default_rng(0)
    words = rng.integers(0, 2**64, size=(7, 5), dtype=np.uint64)
    words[0, :3] = [0, 2**64 - 1, 1 << 63]  # the edges: no bit, every bit, the top bit
    by_python = np.array([[int(w).bit_count() for w in row] for row in words.tolist()])
    table = bit_count_by_table(words)
    assert table.shape == words.shape and table.dtype == np.uint8
    assert np.array_equal(table, by_python)
    assert table[0, :3].tolist() == [0, 64, 1]
    if hasattr(np, "bitwise_count"):  # numpy >= 2: the fast path agrees with the fallback
        assert np.array_equal(np.bitwise_count(words), table)
    small = rng.integers(0, 256, size=50, dtype=np.uint8)
    assert np.array_equal(bit_count_by_table(small), [int(v).bit_count() for v in small.tolist()])
    with pytest.raises(TypeError, match="unsigned"):
        bit_count_by_table(np.arange(3))


def test_near_pairs_cut_at_the_threshold_on_both_bit_count_paths(monkeypatch):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, size=32, dtype=np.uint8)
    within = _flip(base, list(range(0, 12)))  # 12 bits from base
    beyond = _flip(base, list(range(100, 113)))  # 13 bits from base, 25 from `within`
    other = rng.integers(0, 256, size=32, dtype=np.uint8)  # unrelated: ~128 bits from all
    hashes = np.stack([base, within, beyond, other])
    assert near_pairs(hashes, 12).tolist() == [[0, 1]]
    assert near_pairs(hashes, 13).tolist() == [[0, 1], [0, 2]]
    assert near_pairs(hashes, 11).tolist() == []
    many = rng.integers(0, 256, size=(40, 32), dtype=np.uint8)
    many[7], many[30] = many[3], _flip(many[3], [5, 77])
    fast = near_pairs(many, 12)
    assert fast.tolist() == [[3, 7], [3, 30], [7, 30]]
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # as on numpy 1.26
    assert not hasattr(np, "bitwise_count")
    assert np.array_equal(bit_count(np.array([3, 255], np.uint64)), [2, 8])
    assert np.array_equal(near_pairs(many, 12), fast) and near_pairs(hashes, 12).tolist() == [[0, 1]]
    assert duplicates.bit_count is bit_count


def test_duplicate_groups_exact_near_none_and_kept_only():
    rng = np.random.default_rng(2)
    base = rng.integers(0, 256, size=32, dtype=np.uint8)
    phashes = [
        base.tobytes().hex(),  # 0
        base.tobytes().hex(),  # 1: byte copy of 0 (same SHA)
        _flip(base, list(range(10))).tobytes().hex(),  # 2: re-encoded copy of 0, 10 bits apart
        _flip(base, list(range(50, 70))).tobytes().hex(),  # 3: 20 bits from 0: another image
        base.tobytes().hex(),  # 4: same content as 0, but left out (unreadable / skipped)
        None,  # 5: unread
    ]
    sha = ["aa" * 32, "aa" * 32, "bb" * 32, "cc" * 32, "dd" * 32, None]
    keep = np.array([True, True, True, True, False, False])
    labels, ids = duplicate_groups(sha, keep, "exact")
    named = ["group-" + h * 8 for h in ("aa", "aa", "bb", "cc", "dd")]
    assert ids == named + ["group-unread5"]  # byte copies share a group; the rest are singletons
    assert len(set(labels.tolist())) == 5
    _, near = duplicate_groups(sha, keep, "near", phashes, threshold=12)
    assert near[:3] == ["group-" + "aa" * 8] * 3  # the near copy joins, named by the smallest member
    assert len(set(near)) == 4 and near[5] == "group-unread5"
    _, strict = duplicate_groups(sha, keep, "near", phashes, threshold=9)
    assert strict == ids  # 10 bits apart is beyond a 9-bit threshold
    unlinked, _ = duplicate_groups(sha, keep, "none", phashes)
    assert len(set(unlinked.tolist())) == 6  # nothing linked, not even byte copies
    with pytest.raises(ValueError, match="duplicate mode"):
        duplicate_groups(sha, keep, "fuzzy")
