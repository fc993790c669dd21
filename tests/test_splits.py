"""Split arithmetic (gdm.data.splits) against its definition: test first, then the pool; A_n = pool[:n],
B_n = pool[-n:], n ≤ pool_size // 2, with every boundary and error message checked."""

from __future__ import annotations

import numpy as np
import pytest

from gdm.data.errors import DataError
from gdm.data.splits import SPLITS, max_n, split_indices, split_slice


def test_split_indices_are_the_seeded_permutation_test_first():
    test, pool = split_indices(100, 10, 80, seed=5)
    order = np.random.default_rng(5).permutation(100)
    np.testing.assert_array_equal(test, order[:10])
    np.testing.assert_array_equal(pool, order[10:90])
    assert len(test) == 10 and len(pool) == 80 and not set(test) & set(pool)
    assert not np.array_equal(split_indices(100, 10, 80, seed=6)[0], test)


def test_split_indices_may_use_every_image():
    test, pool = split_indices(30, 10, 20, seed=1)
    assert sorted([*test, *pool]) == list(range(30))


@pytest.mark.parametrize(("available", "test_size", "pool_size", "message"), [
    (100, 10, 91, "= 101 but only 100 images are available.*at most 90"),
    (5, 10, 1, "= 11 but only 5 images.*at most 0"),
])
def test_too_few_images_is_refused_with_the_limit(available, test_size, pool_size, message):
    with pytest.raises(DataError, match=message):
        split_indices(available, test_size, pool_size, seed=0)


def test_max_n_is_half_the_pool_rounded_down():
    assert [max_n(p) for p in (1, 2, 3, 40, 41)] == [0, 1, 1, 20, 20]
    assert isinstance(max_n(41), int)


@pytest.mark.parametrize("pool_size", [2, 3, 7, 40, 41])
def test_a_and_b_are_disjoint_nested_prefix_and_suffix(pool_size):
    pool = list(range(pool_size))
    for n in range(1, max_n(pool_size) + 1):
        a, b = pool[split_slice("A", n, pool_size, 4)], pool[split_slice("B", n, pool_size, 4)]
        assert a == pool[:n] and b == pool[pool_size - n:]
        assert len(a) == len(b) == n and not set(a) & set(b)
    assert split_slice("A", None, pool_size, 4) == slice(0, pool_size // 2)
    assert split_slice("B", None, pool_size, 4) == slice(pool_size - pool_size // 2, pool_size)


def test_test_split_takes_its_first_n_images():
    assert split_slice("test", 3, 40, 6) == slice(0, 3)
    assert split_slice("test", 6, 40, 6) == slice(0, 6)
    assert split_slice("test", None, 40, 6) == slice(0, 6)
    assert split_slice("test", 1, 40, 6) == slice(0, 1)


@pytest.mark.parametrize("n", [0, -1, 7])
def test_test_split_refuses_n_outside_1_to_test_size(n):
    with pytest.raises(DataError, match=f"n = {n} test images requested but the test set holds 6"):
        split_slice("test", n, 40, 6)


@pytest.mark.parametrize("split", ["A", "B"])
def test_training_splits_bounds(split):
    assert split_slice(split, 1, 41, 6).stop - split_slice(split, 1, 41, 6).start == 1
    assert split_slice(split, 20, 41, 6).stop - split_slice(split, 20, 41, 6).start == 20
    with pytest.raises(DataError, match=f"n = 21 is too large for split {split}: .* largest n allowed is 20"):
        split_slice(split, 21, 41, 6)
    with pytest.raises(DataError, match=f"n = 0 images requested from split {split}; n must be at least 1"):
        split_slice(split, 0, 41, 6)


def test_unknown_split_is_refused():
    assert SPLITS == ("A", "B", "test")
    with pytest.raises(DataError, match="split 'C' is unknown; use one of A, B, test"):
        split_slice("C", 1, 40, 6)
