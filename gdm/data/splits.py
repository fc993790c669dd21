"""Held-out test set and the nested, disjoint training halves (docs/SCIENCE.md, Data: Splits).

A seeded permutation of all available images: its first test_size entries are the test set, the next
pool_size the pool. A_n = pool[0:n] and B_n = pool[-n:] with n <= pool_size // 2, so A_n and B_n never
overlap, and A_n is a prefix of A_10n (nesting holds by construction), likewise B_n a suffix of B_10n.
"""

from __future__ import annotations

import numpy as np

from gdm.config import max_n  # the largest n a split may take: one home, checked by the config too
from gdm.data.errors import DataError

SPLITS = ("A", "B", "test")


def split_indices(available: int, test_size: int, pool_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(test, pool) indices into the `available` images; DataError if there are too few."""
    if test_size + pool_size > available:
        raise DataError(
            f"test_size + pool_size = {test_size + pool_size} but only {available} images are available "
            f"(after deduplication); lower datasets.<name>.pool_size to at most {max(available - test_size, 0)}"
        )
    order = np.random.default_rng(seed).permutation(available)
    return order[:test_size], order[test_size : test_size + pool_size]


def split_slice(split: str, n: int | None, pool_size: int, test_size: int) -> slice:
    """Slice of the pool (A, B) or of the test set selecting the split's first/last n images."""
    if split not in SPLITS:
        raise DataError(f"split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    if split == "test":
        n = test_size if n is None else n
        if not 0 < n <= test_size:
            raise DataError(f"n = {n} test images requested but the test set holds {test_size}")
        return slice(0, n)
    n = max_n(pool_size) if n is None else n
    if n < 1:
        raise DataError(f"n = {n} images requested from split {split}; n must be at least 1")
    if n > max_n(pool_size):
        raise DataError(
            f"n = {n} is too large for split {split}: the pool holds {pool_size} images, so the largest n "
            f"allowed is {max_n(pool_size)} (A_n and B_n must not overlap); raise pool_size or lower n"
        )
    return slice(0, n) if split == "A" else slice(pool_size - n, pool_size)
