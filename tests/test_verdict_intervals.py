"""Three-way conditions and the verdict from intervals: every branch on constructed margins, and its decider."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gdm.analysis.uncertainty import Interval
from gdm.analysis.verdict import (
    IntervalEvidence,
    all_of,
    any_of,
    band_margin_intervals,
    conditions,
    decide,
    decide_within,
    verdict,
)


def iv(low: float, high: float) -> Interval:
    return Interval((low + high) / 2, low, high, 0.95)


@pytest.mark.parametrize("low, high, direction, expected", [
    (0.1, 0.3, "above", "pass"), (-0.3, -0.1, "above", "fail"), (-0.1, 0.1, "above", "inconclusive"),
    (0.0, 0.2, "above", "inconclusive"), (0.0, 0.2, "at_least", "pass"), (-0.2, 0.0, "above", "fail"),
    (-0.2, 0.0, "at_least", "inconclusive"), (-0.3, -0.1, "below", "pass"), (-0.2, 0.0, "at_most", "pass"),
    (-0.2, 0.0, "below", "inconclusive"), (0.0, 0.2, "below", "fail"), (0.1, 0.2, "at_most", "fail"),
])
def test_decide_against_zero(low, high, direction, expected):
    assert decide(iv(low, high), 0.0, direction) == expected


def test_decide_unmeasured_within_and_the_three_valued_logic():
    assert decide(None, 0.0, "above") == "inconclusive"
    assert decide(Interval(float("nan"), float("nan"), float("nan"), 0.95), 0.0, "above") == "inconclusive"
    assert decide(Interval(np.inf, 3.0, np.inf, 0.95), 2.0, "above") == "pass"  # an open end beyond the grid
    assert [decide_within(iv(*ends), 0.5) for ends in [(-0.4, 0.4), (0.6, 0.9), (-0.9, -0.5), (0.3, 0.7)]] == [
        "pass", "fail", "fail", "inconclusive"]
    assert all_of(["pass", "inconclusive", "fail"]) == "fail" and all_of(["pass", "inconclusive"]) == "inconclusive"
    assert all_of([]) == "pass" and any_of([]) == "fail"
    assert any_of(["fail", "inconclusive", "pass"]) == "pass" and any_of(["fail", "inconclusive"]) == "inconclusive"
    with pytest.raises(ValueError, match="direction is 'over'; allowed: above, at_least, below, at_most"):
        decide(iv(0, 1), 0.0, "over")


# A generalizing pair, clear on every count; each test below moves one or two intervals.
GENERALIZING = IntervalEvidence(
    memorized_fraction=iv(0.0, 0.05),
    agreement_minus_nearest=iv(0.1, 0.3),
    agreement_minus_cross_seed=iv(0.5, 0.7),
    gaussian_margins_db=((iv(0.5, 1.0), iv(0.2, 0.6)), (iv(0.4, 0.9), iv(0.1, 0.5))),
    gaussian_band_means_db=(iv(0.4, 0.8), iv(0.3, 0.7)),
    gaps_db=(iv(-0.2, 0.2), iv(-0.1, 0.3)),
    unusable_fractions=(iv(0.0, 0.03), iv(0.0, 0.05)),
)


def label(evidence: IntervalEvidence, **changes) -> tuple[str, str]:
    v = verdict(conditions(dataclasses.replace(evidence, **changes)))
    return v.label, v.decided_by


def test_generalizing_needs_every_condition_and_names_the_last():
    assert label(GENERALIZING) == ("generalizing", "few_unusable")
    assert conditions(GENERALIZING)["below_gaussian"] == "fail"


def test_memorizing_wins_first_and_an_uncertain_majority_is_inconclusive():
    assert label(GENERALIZING, memorized_fraction=iv(0.7, 0.9)) == ("memorizing", "memorized_majority")
    assert label(GENERALIZING, memorized_fraction=iv(0.4, 0.6)) == ("inconclusive", "memorized_majority")
    assert label(GENERALIZING, memorized_fraction=None) == ("inconclusive", "memorized_majority")


def test_underfit_below_the_reference_with_a_small_gap():
    below = {"gaussian_margins_db": ((iv(-2.0, -1.0), iv(-1.5, -0.5)),) * 2,
             "gaussian_band_means_db": (iv(-1.6, -0.9), iv(0.1, 0.4))}
    assert label(GENERALIZING, **below) == ("underfit", "small_gap")
    # below the reference with a large gap: overfitting, transitional (ruled out of generalizing by the PSNR)
    assert label(GENERALIZING, **below, gaps_db=(iv(1.0, 2.0), iv(0.0, 0.2))) == ("transitional",
                                                                                   "at_or_above_gaussian")


def test_transitional_names_the_first_failed_generalizing_condition():
    assert label(GENERALIZING, agreement_minus_nearest=iv(-0.3, -0.1)) == ("transitional", "agreement_above_nearest")
    assert label(GENERALIZING, agreement_minus_cross_seed=iv(-0.1, -0.01)) == ("transitional",
                                                                                 "agreement_above_cross_seed")
    assert label(GENERALIZING, gaps_db=(iv(-0.2, 0.2), iv(0.6, 1.0))) == ("transitional", "small_gap")
    assert label(GENERALIZING, unusable_fractions=(iv(0.0, 0.03), iv(0.15, 0.3))) == ("transitional", "few_unusable")
    # a failure decides even when an earlier condition is only inconclusive
    assert label(GENERALIZING, agreement_minus_nearest=iv(-0.1, 0.1), gaps_db=(iv(0.6, 1.0),)) == (
        "transitional", "small_gap")


def test_inconclusive_names_the_condition_whose_interval_straddles():
    assert label(GENERALIZING, agreement_minus_nearest=iv(-0.05, 0.2)) == ("inconclusive", "agreement_above_nearest")
    margins = ((iv(0.5, 1.0), iv(-0.1, 0.4)), (iv(0.4, 0.9), iv(0.1, 0.5)))
    assert label(GENERALIZING, gaussian_margins_db=margins) == ("inconclusive", "at_or_above_gaussian")
    assert label(GENERALIZING, gaps_db=(iv(0.3, 0.7),)) == ("inconclusive", "small_gap")
    assert label(GENERALIZING, gaps_db=()) == ("inconclusive", "small_gap")  # not measured: cannot tell
    # generalizing ruled out, but whether it is underfit cannot be told (the band mean straddles the reference)
    straddle = {"agreement_minus_nearest": iv(-0.3, -0.1), "gaussian_band_means_db": (iv(-0.5, 0.2), iv(0.1, 0.4))}
    assert label(GENERALIZING, **straddle) == ("inconclusive", "below_gaussian")


def test_no_gaussian_reference_is_not_checked():
    unmeasured = {"gaussian_margins_db": (), "gaussian_band_means_db": ()}
    assert label(GENERALIZING, **unmeasured) == ("generalizing", "few_unusable")
    assert label(GENERALIZING, **unmeasured, gaps_db=(iv(1.0, 2.0),)) == ("transitional", "small_gap")


def test_band_margin_intervals_pick_the_band_and_pair_the_images():
    rng = np.random.default_rng(0)
    reference = rng.normal(25, 3, size=(4, 32))  # PSNR per image at 4 σ; the model 0.5 dB above, 1 dB at σ = 0.2
    model = reference + np.array([0.5, 0.5, 1.0, 0.5])[:, None]
    per_sigma, band_mean = band_margin_intervals(model, reference, [0.01, 0.1, 0.2, 0.8], rng, band=(0.05, 0.4))
    assert [end for m in per_sigma for end in (m.low, m.high)] == pytest.approx([0.5, 0.5, 1.0, 1.0])
    assert (band_mean.estimate, band_mean.low, band_mean.high) == pytest.approx((0.75, 0.75, 0.75))
    assert band_margin_intervals(model, reference, [0.01, 0.02, 0.5, 0.8], rng) == ((), None)
    with pytest.raises(ValueError, match=r"must both be \[len\(sigmas\) = 3, images\]"):
        band_margin_intervals(model, reference, [0.1, 0.2, 0.3], rng)
