"""L2 ratio criterion and reproducibility score on tiny vectors worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from gdm.analysis.memorization import (
    L2_RATIO,
    l2_ratio,
    l2_ratio_memorized,
    reproducibility_score,
    reproducible,
    two_nearest_l2,
)


def images(*points) -> torch.Tensor:
    """Two-pixel images [N, 1, 1, 2] from (x, y) points."""
    return torch.tensor(points, dtype=torch.float32).view(-1, 1, 1, 2)


TRAIN = images((0, 0), (3, 0), (0, 4), (10, 10))


def test_two_nearest_by_hand_across_chunks():
    # (1, 0): distances 1 to (0, 0), 2 to (3, 0), √17 to (0, 4); RMS = L2 / √2.
    distance, index = two_nearest_l2(images((1, 0), (0, 3.5)), TRAIN, chunk=2, candidates=2)
    assert index.tolist() == [[0, 1], [2, 0]]
    expected = torch.tensor([[1.0, 2.0], [0.5, 3.5]], dtype=torch.float64) / math.sqrt(2)
    torch.testing.assert_close(distance, expected)


def test_l2_ratio_by_hand():
    samples = images((1, 0), (0.5, 0), (0, 0), (1.5, 0), (0.8, 0))
    # 1/2, 0.5/2.5, 0 (a copy), 1.5/1.5 (half-way between two images), 0.8/2.2 (just above 1/3)
    ratios = l2_ratio(samples, TRAIN, chunk=3)
    torch.testing.assert_close(ratios, torch.tensor([0.5, 0.2, 0.0, 1.0, 0.8 / 2.2], dtype=torch.float64))
    assert l2_ratio_memorized(ratios).tolist() == [False, True, True, False, False]
    assert l2_ratio_memorized(ratios, threshold=0.6).tolist() == [True, True, True, False, True]
    assert L2_RATIO == pytest.approx(1 / 3)


def test_ties_and_duplicates():
    # Half-way between (0, 0) and (3, 0): the lower index is the nearest. A copy of a duplicated image: 0 / 0 → 0.
    _, index = two_nearest_l2(images((1.5, 0)), TRAIN)
    assert index.tolist() == [[0, 1]]
    duplicated = images((0, 0), (0, 0), (5, 5))
    assert l2_ratio(images((0, 0)), duplicated).tolist() == [0.0]
    with pytest.raises(ValueError, match="needs at least two training images; got 1"):
        l2_ratio(images((0, 0)), images((1, 1)))


def test_reproducibility_by_hand():
    a, b = images((1, 0), (0, 1), (1, 1)), images((1, 0), (1, 0), (2, 2))
    # cosine: 1, 0, 1; negative RMS distance: 0, −1, −1
    assert reproducible(a, b, "cosine", 0.5).tolist() == [True, False, True]
    assert reproducibility_score(a, b, "cosine", 0.5) == pytest.approx(2 / 3)
    assert reproducibility_score(a, b, "l2", -0.5) == pytest.approx(1 / 3)
    assert reproducibility_score(a, b, "cosine", 1.0) == 0.0  # strictly above the threshold
    with pytest.raises(ValueError, match="A has 3 samples, B 2"):
        reproducible(a, b[:2], "cosine", 0.5)
