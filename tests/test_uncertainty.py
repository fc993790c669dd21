"""Bootstrap intervals: coverage of a known value, exact small cases, pairing, determinism per generator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gdm.analysis.uncertainty import (
    Interval,
    TwoLevel,
    bootstrap,
    fraction_above,
    mean,
    median,
    paired_difference,
    percentile_interval,
    resample_indices,
    unpaired_difference,
    wiener_differenced_gap,
)

REPETITIONS, DRAWS = 200, 1000  # 200 data sets; 1000 resamples keep the ends' Monte Carlo error ≪ the 3 % slack


def _coverage(make_interval, truth: float, seed: int = 0) -> float:
    rng, covered = np.random.default_rng(seed), 0
    for _ in range(REPETITIONS):
        interval = make_interval(rng)
        covered += interval.low <= truth <= interval.high
    return covered / REPETITIONS


@pytest.mark.parametrize("statistic, truth", [(mean, 1.0), (median, 1.0), (fraction_above(1.5), 0.4012936743)])
def test_intervals_cover_the_true_value_95_percent_of_the_time(statistic, truth):
    # N(1, 4) data, 100 values: mean and median are 1, P(x > 1.5) = 1 − Φ(0.25) = 0.4013.
    def make(rng):
        return bootstrap(rng.normal(1.0, 2.0, 100), statistic, rng, draws=DRAWS)

    assert _coverage(make, truth) == pytest.approx(0.95, abs=0.03)


def test_paired_and_unpaired_differences_cover_the_true_difference():
    def paired(rng):  # a shared per-image difficulty (sd 3) and a small model effect of 0.2
        shared = rng.normal(0, 3, 64)
        return paired_difference(shared + 0.2 + rng.normal(0, 0.5, 64), shared, rng, draws=DRAWS)

    def unpaired(rng):
        return unpaired_difference(rng.normal(0.5, 1, 80), rng.normal(0.0, 2, 50), rng, draws=DRAWS)

    assert _coverage(paired, 0.2, seed=1) == pytest.approx(0.95, abs=0.03)
    assert _coverage(unpaired, 0.5, seed=2) == pytest.approx(0.95, abs=0.03)


def test_pairing_cancels_what_the_units_share():
    rng = np.random.default_rng(3)
    shared = rng.normal(0, 5, 64)
    model = shared + 0.3  # every image 0.3 dB better than the reference, whatever its difficulty
    paired = paired_difference(model, shared, np.random.default_rng(0))
    assert (paired.estimate, paired.low, paired.high) == pytest.approx((0.3, 0.3, 0.3))
    unpaired = unpaired_difference(model, shared, np.random.default_rng(0))
    assert unpaired.estimate == pytest.approx(0.3) and unpaired.high - unpaired.low > 1.0  # the spread stays


def test_constant_data_give_a_zero_width_interval():
    for statistic, value in [(mean, 2.5), (median, 2.5), (fraction_above(2.0), 1.0), (fraction_above(3.0), 0.0)]:
        interval = bootstrap(np.full(7, 2.5), statistic, np.random.default_rng(0), draws=50)
        assert interval == Interval(value, value, value, 0.95)
    gap = wiener_differenced_gap([30.0, 31.0], [20.0, 21.0], [25.0, 26.0, 27.0], [15.0, 16.0, 17.0],
                                 np.random.default_rng(0))
    assert (gap.estimate, gap.low, gap.high) == (0.0, 0.0, 0.0)  # both splits 10 dB above the Wiener filter


def test_small_cases_by_hand():
    # Two values 0 and 1: resample means are 0, ½ or 1 with probabilities ¼, ½, ¼; the 95 % interval is [0, 1].
    interval = bootstrap([0.0, 1.0], mean, np.random.default_rng(0), draws=4000)
    assert (interval.estimate, interval.low, interval.high) == (0.5, 0.0, 1.0)
    assert fraction_above(0.5)(np.array([[0.2, 0.6, 0.9], [0.5, 0.5, 0.7]])).tolist() == [2 / 3, 1 / 3]
    gap = wiener_differenced_gap([30.0], [29.0], [25.0], [25.5], np.random.default_rng(0))
    assert gap.estimate == 1.5  # (30 − 29) − (25 − 25.5)


def test_percentile_ends_and_their_json():
    replicates = np.arange(1000, dtype=float)  # quantiles ¼ and ¾ of 0 … 999: the 250th and 750th values
    interval = percentile_interval(500.0, replicates, 0.5)
    assert (interval.low, interval.high) == (249.0, 749.0)
    open_ended = percentile_interval(3.0, np.array([1.0, 2.0, np.inf, np.inf]), 0.5)
    record = json.loads(json.dumps(open_ended.to_json(), allow_nan=False))
    assert record == {"estimate": 3.0, "low": 1.0, "high": None, "level": 0.5}


def test_same_generator_state_same_interval_and_resamples_have_the_right_shape():
    values = np.random.default_rng(5).normal(size=30)
    assert bootstrap(values, median, np.random.default_rng(9)) == bootstrap(values, median, np.random.default_rng(9))
    index = resample_indices(30, np.random.default_rng(0), draws=7)
    assert index.shape == (7, 30) and index.min() >= 0 and index.max() < 30


def test_bad_input_is_refused_with_its_name():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="values must be a non-empty 1-D array"):
        bootstrap([], mean, rng)
    with pytest.raises(ValueError, match="paired values need equal lengths; got 3 and 2"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0], rng)
    with pytest.raises(ValueError, match="test_model and test_wiener are per-image PSNRs of the same images; got 2"):
        wiener_differenced_gap([1.0], [1.0], [1.0, 2.0], [1.0], rng)
    with pytest.raises(ValueError, match="level is 1.5"):
        bootstrap([1.0, 2.0], mean, rng, level=1.5)


# --- two-level bootstrap over training replicates ---------------------------------------------------------

GROUPS, UNITS = 20, 20  # replicates and units (seeds or images) per replicate of the synthetic data sets


def _nested(rng, between: float) -> np.ndarray:
    """x_gi = 1 + a_g + e_gi, a_g ~ N(0, between²), e_gi ~ N(0, 2²): each replicate has units of its own."""
    return (1.0 + rng.normal(0, between, (GROUPS, 1)) + rng.normal(0, 2.0, (GROUPS, UNITS))).ravel()


def _crossed(rng) -> np.ndarray:
    """x_gi = 1 + a_g + b_i + e_gi: the same units (seeds, images) in every replicate, b_i ~ N(0, 1.5²)."""
    return (1.0 + rng.normal(0, 1.0, (GROUPS, 1)) + rng.normal(0, 1.5, (1, UNITS))
            + rng.normal(0, 1.0, (GROUPS, UNITS))).ravel()


def test_two_level_interval_covers_the_mean_when_replicates_differ():
    # Var(pooled mean) = σ_a²/G + σ_e²/(G m) = 1/20 + 4/400: the replicate spread dominates.
    def two_level(rng):
        return bootstrap(_nested(rng, 1.0), mean, rng, draws=DRAWS, resample=TwoLevel(GROUPS))

    def one_level(rng):  # ignores the replicates: its variance (σ_a² + σ_e²)/(G m) is ~ 5× too small
        return bootstrap(_nested(rng, 1.0), mean, rng, draws=DRAWS)

    assert _coverage(two_level, 1.0, seed=4) == pytest.approx(0.95, abs=0.03)
    assert _coverage(one_level, 1.0, seed=4) < 0.75


def test_shared_units_cover_the_mean_when_seeds_are_crossed_with_replicates():
    # Var = σ_a²/G + σ_b²/m + σ_e²/(G m): the unit effect b_i does not shrink with G, so one unit draw for all
    def shared(rng):
        return bootstrap(_crossed(rng), mean, rng, draws=DRAWS, resample=TwoLevel(GROUPS, shared_units=True))

    def nested(rng):  # draws units per replicate independently: b_i's variance shrinks G-fold, too narrow
        return bootstrap(_crossed(rng), mean, rng, draws=DRAWS, resample=TwoLevel(GROUPS))

    assert _coverage(shared, 1.0, seed=5) == pytest.approx(0.95, abs=0.03)
    assert _coverage(nested, 1.0, seed=5) < 0.85


def test_two_level_interval_is_wider_than_one_level_and_far_wider_when_replicates_differ():
    def widths(between: float) -> tuple[float, float]:
        values = _nested(np.random.default_rng(6), between)
        two = bootstrap(values, mean, np.random.default_rng(0), resample=TwoLevel(GROUPS))
        one = bootstrap(values, mean, np.random.default_rng(0))
        return two.high - two.low, one.high - one.low

    two, one = widths(2.0)
    assert two > 2 * one
    two, one = widths(0.0)  # no spread: the unit term is counted at both stages, so ≈ √2 × the plain width
    assert two / one == pytest.approx(np.sqrt(2), rel=0.15)


def test_two_level_indices_draw_whole_replicates_then_units_within():
    rng = np.random.default_rng(7)
    first, second = TwoLevel(3)((12, 6), rng, 50)  # two sets: 4 and 2 units per replicate
    assert first.shape == (50, 12) and second.shape == (50, 6)
    slots = first.reshape(50, 3, 4) // 4  # the replicate each resampled slot came from …
    assert (slots == slots[..., :1]).all()  # … is one replicate per slot
    assert (second.reshape(50, 3, 2) // 2 == slots[..., :1]).all()  # the sets share stage 1 (train and test)
    shared = TwoLevel(3, shared_units=True)((12,), np.random.default_rng(7), 50)[0].reshape(50, 3, 4) % 4
    assert (shared == shared[:, :1]).all()  # shared units: the same unit offsets in every slot
    with pytest.raises(ValueError, match="equal replicates"):
        TwoLevel(3)((10,), rng, 5)
