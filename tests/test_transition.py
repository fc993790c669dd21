"""Transition point n*: known crossings on synthetic grids, None when the grid does not bracket, the fitter."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from gdm.analysis.transition import (
    RIDGE,
    agreement_transition,
    first_crossing,
    logistic_fit,
    memorization_transition,
)

GRID = [10, 30, 100, 300, 1000, 3000, 10000]


def memorized_seeds(n0: float, slope: float, seeds: int, rng) -> list[np.ndarray]:
    """Per-seed booleans with P(memorized | n) = 1 / (1 + (n / n0)^slope): ½ at n0, falling with n."""
    return [rng.random(seeds) < 1 / (1 + (n / n0) ** slope) for n in GRID]


def test_logistic_fit_maximises_the_penalised_binomial_likelihood():
    x = np.log(GRID) - np.log(GRID).mean()
    trials = np.array([20, 25, 30, 20, 20, 40, 10], dtype=float)
    successes = np.array([19, 20, 18, 9, 4, 3, 0], dtype=float)

    def objective(theta):
        eta = theta[0] + theta[1] * x
        return -(successes * eta - trials * np.logaddexp(0, eta)).sum() + 0.5 * RIDGE * (theta**2).sum()

    reference = optimize.minimize(objective, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    a, b = logistic_fit(x, successes, trials)
    assert (float(a), float(b)) == pytest.approx(tuple(reference), abs=1e-5)
    batched_a, _ = logistic_fit(x, np.stack([successes, trials - successes]), trials)  # vectorised over draws
    assert batched_a[0] == pytest.approx(float(a))


def test_memorization_transition_finds_a_known_crossing():
    rng = np.random.default_rng(0)
    result = memorization_transition(GRID, memorized_seeds(300.0, 2.0, 400, rng), rng, draws=500)
    assert result.estimate == pytest.approx(300.0, rel=0.1)
    assert result.low < 300.0 < result.high and GRID[0] < result.low and result.high < GRID[-1]
    many = memorization_transition(GRID, memorized_seeds(300.0, 2.0, 20000, rng), rng, draws=200)
    assert many.estimate == pytest.approx(300.0, rel=0.02) and many.high - many.low < result.high - result.low


def test_perfect_separation_crosses_between_the_two_sizes():
    memorized = [np.ones(16, bool)] * 3 + [np.zeros(16, bool)] * 4  # all copy up to n = 100, none from 300 on
    result = memorization_transition(GRID, memorized, np.random.default_rng(0), draws=100)
    assert 100 < result.estimate < 300
    assert result.low == result.high == result.estimate  # every seed agrees: every resample is the same


def test_a_grid_that_does_not_bracket_gives_none():
    rng = np.random.default_rng(1)
    assert memorization_transition(GRID, memorized_seeds(1e6, 2.0, 200, rng), rng, draws=100) is None  # all copy
    assert memorization_transition(GRID, memorized_seeds(0.1, 2.0, 200, rng), rng, draws=100) is None  # none does
    constant = [np.full(5, 0.9)] * 3
    assert agreement_transition(GRID[:3], constant, [np.full(5, 0.5)] * 3, rng) is None  # above at the first n
    assert agreement_transition(GRID[:3], [np.full(5, 0.2)] * 3, constant, rng) is None  # never above


def test_agreement_transition_by_hand_and_constant_seeds_give_zero_width():
    # margins −0.2, −0.1, 0.3 at n = 10, 100, 1000: zero a quarter of the way from log 100 to log 1000
    agreement = [np.full(6, 0.5), np.full(6, 0.6), np.full(6, 0.9)]
    nearest = [np.full(6, 0.7), np.full(6, 0.7), np.full(6, 0.6)]
    result = agreement_transition([10, 100, 1000], agreement, nearest, np.random.default_rng(0), draws=50)
    assert result.estimate == pytest.approx(100 * 10**0.25)
    assert result.low == pytest.approx(result.estimate) and result.high == pytest.approx(result.estimate)


def test_first_crossing_takes_the_first_sign_change_and_marks_the_grid_ends():
    log_n = np.log([10.0, 100.0, 1000.0, 10000.0])
    margins = np.array([[-0.2, 0.2, -0.1, 0.3], [0.1, 0.2, 0.3, 0.4], [-0.1, -0.2, -0.3, -0.1],
                        [-0.3, 0.0, 0.0, 0.1]])
    crossing = first_crossing(log_n, margins)
    assert crossing[0] == pytest.approx(math.log(10) + 0.5 * math.log(10))  # half-way from 10 to 100
    assert crossing[1] == -np.inf and crossing[2] == np.inf
    assert crossing[3] == pytest.approx(math.log(1000))  # 0 is not above 0: the margin turns positive after 1000


def test_agreement_transition_covers_a_noisy_crossing():
    rng = np.random.default_rng(2)
    # median margin 0.3 · log10(n / 300): crosses 0 at n = 300; per-seed noise of sd 0.2 around it
    agreement = [0.5 + 0.3 * math.log10(n / 300) + rng.normal(0, 0.2, 300) for n in GRID]
    nearest = [0.5 + rng.normal(0, 0.05, 300) for _ in GRID]
    result = agreement_transition(GRID, agreement, nearest, rng, draws=500)
    assert result.low < 300 < result.high and result.estimate == pytest.approx(300, rel=0.25)


def test_bad_grids_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least two increasing training-set sizes; got \\[10, 10\\]"):
        memorization_transition([10, 10], [np.ones(2, bool)] * 2, rng)
    with pytest.raises(ValueError, match="one non-empty array of per-seed booleans per n \\(2 values\\)"):
        memorization_transition([10, 20], [np.ones(2, bool)], rng)
    with pytest.raises(ValueError, match="paired by seed: got 3 and 2 values"):
        agreement_transition([10, 20], [np.ones(3)] * 2, [np.ones(2)] * 2, rng)
