"""The verdict from intervals: each condition passes, fails or is inconclusive (docs/SCIENCE.md, Verdict from
intervals).

A condition on a statistic passes only when its whole interval clears the threshold, fails when the whole
interval lies on the wrong side, and is inconclusive otherwise: a pair whose evidence cannot tell is labelled
inconclusive, never generalizing by the luck of one set of seeds. The rule is `controls.verdict`'s, read with
three values; its constants are controls' (MEMORIZED_MAJORITY, GAP_DB, SIGMA_BAND, GAUSSIAN_TOLERANCE_DB).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from gdm.analysis.controls import GAP_DB, GAUSSIAN_TOLERANCE_DB, MEMORIZED_MAJORITY, SIGMA_BAND
from gdm.analysis.uncertainty import DRAWS, LEVEL, Interval, Resampler, one_level, paired_difference

Outcome = Literal["pass", "fail", "inconclusive"]
Direction = Literal["above", "at_least", "below", "at_most"]  # value > t, ≥ t, < t, ≤ t
MAX_UNUSABLE_FRACTION = 0.1  # generalizing: at most this share of a model's samples diverged or is implausible

_HOLDS = {"above": np.greater, "at_least": np.greater_equal, "below": np.less, "at_most": np.less_equal}


def decide(interval: Interval | None, threshold: float, direction: Direction) -> Outcome:
    """pass if "value `direction` threshold" holds on the whole interval, fail if nowhere on it, else
    inconclusive (also when not measured: None, or a NaN end). A half-line condition holds on the whole
    interval exactly when it holds at both ends."""
    if direction not in _HOLDS:
        raise ValueError(f"direction is {direction!r}; allowed: {', '.join(_HOLDS)}")
    if interval is None or np.isnan(interval.low) or np.isnan(interval.high):
        return "inconclusive"
    ends = [bool(_HOLDS[direction](end, threshold)) for end in (interval.low, interval.high)]
    return "pass" if all(ends) else "fail" if not any(ends) else "inconclusive"


def decide_within(interval: Interval | None, bound: float) -> Outcome:
    """|value| < bound: −bound < value and value < bound."""
    return all_of([decide(interval, -bound, "above"), decide(interval, bound, "below")])


def all_of(outcomes: Iterable[Outcome]) -> Outcome:
    """Conjunction in three values (Kleene): any fail fails, all pass passes, else inconclusive; empty: pass."""
    outcomes = list(outcomes)
    return "fail" if "fail" in outcomes else "inconclusive" if "inconclusive" in outcomes else "pass"


def any_of(outcomes: Iterable[Outcome]) -> Outcome:
    """Disjunction in three values: any pass passes, all fail fails, else inconclusive; empty: fail."""
    outcomes = list(outcomes)
    return "pass" if "pass" in outcomes else "inconclusive" if "inconclusive" in outcomes else "fail"


@dataclass(frozen=True)
class IntervalEvidence:
    """What the three-way verdict of a pair looks at: intervals (None: not measured)."""

    memorized_fraction: Interval | None  # share of samples memorized, over seeds
    agreement_minus_nearest: Interval | None  # median A–B agreement − median nearest-training similarity, over seeds
    agreement_minus_cross_seed: Interval | None  # median A–B agreement − median cross-seed baseline, over seeds
    # per model, per σ of the band: test PSNR − blind Gaussian reference, paired over images (dB)
    gaussian_margins_db: tuple[tuple[Interval, ...], ...]
    gaussian_band_means_db: tuple[Interval, ...]  # per model: the same margin averaged over the band's σ (dB)
    gaps_db: tuple[Interval, ...]  # per model: Wiener-differenced train − test PSNR gap (dB)
    unusable_fractions: tuple[Interval, ...]  # per model: share of samples diverged or implausible


def conditions(e: IntervalEvidence, *, tolerance_db: float = GAUSSIAN_TOLERANCE_DB,
               max_unusable: float = MAX_UNUSABLE_FRACTION) -> dict[str, Outcome]:
    """Each condition of the verdict as pass, fail or inconclusive. A per-model list with no entry (the
    reference not computed, no σ in the band) makes its condition pass: it is not checked, as in `controls`."""
    margins = [m for model in e.gaussian_margins_db for m in model]
    return {
        "memorized_majority": decide(e.memorized_fraction, MEMORIZED_MAJORITY, "above"),
        "agreement_above_nearest": decide(e.agreement_minus_nearest, 0.0, "above"),
        "agreement_above_cross_seed": decide(e.agreement_minus_cross_seed, 0.0, "above"),
        "at_or_above_gaussian": all_of(decide(m, -tolerance_db, "at_least") for m in margins),
        "small_gap": all_of(decide_within(g, GAP_DB) for g in e.gaps_db) if e.gaps_db else "inconclusive",
        "few_unusable": all_of(decide(u, max_unusable, "at_most") for u in e.unusable_fractions),
        "below_gaussian": any_of(decide(m, -tolerance_db, "below") for m in e.gaussian_band_means_db),
    }


# The labels in the order they are tried, each with the conditions that must all pass (Verdict, docs/SCIENCE.md).
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("memorizing", ("memorized_majority",)),
    ("generalizing", ("agreement_above_nearest", "agreement_above_cross_seed", "at_or_above_gaussian", "small_gap",
                      "few_unusable")),
    ("underfit", ("below_gaussian", "small_gap")),
)


@dataclass(frozen=True)
class Verdict:
    label: str  # memorizing, generalizing, underfit, transitional or inconclusive
    decided_by: str  # the condition that settled the label (see `verdict`)
    outcomes: dict[str, Outcome]  # every condition's outcome


def _rule(names: Sequence[str], outcomes: dict[str, Outcome]) -> tuple[Outcome, str]:
    """A rule's conjunction and the condition that settles it: its first failure, else its first
    inconclusive condition, else (all passed) its last condition."""
    for wanted in ("fail", "inconclusive"):
        for name in names:
            if outcomes[name] == wanted:
                return wanted, name
    return "pass", names[-1]


def verdict(outcomes: dict[str, Outcome]) -> Verdict:
    """Try RULES in order: the first that passes gives its label; one that is inconclusive gives
    "inconclusive" (a label tried earlier must be excluded before a later one can be given); if every rule
    fails the pair is transitional. decided_by: for a passed rule its last condition (all of them held), for
    an inconclusive rule its first inconclusive condition, for transitional the condition that ruled out
    generalizing (the first that failed)."""
    excluded_generalizing = ""
    for label, names in RULES:
        outcome, name = _rule(names, outcomes)
        if outcome == "pass":
            return Verdict(label, name, outcomes)
        if outcome == "inconclusive":
            return Verdict("inconclusive", name, outcomes)
        excluded_generalizing = excluded_generalizing or (name if label == "generalizing" else "")
    return Verdict("transitional", excluded_generalizing, outcomes)


def band_margin_intervals(model_db, reference_db, sigmas: Sequence[float], rng: np.random.Generator, *,
                          band: tuple[float, float] = SIGMA_BAND, draws: int = DRAWS, level: float = LEVEL,
                          resample: Resampler = one_level) -> tuple[tuple[Interval, ...], Interval | None]:
    """Per σ of `band` (inclusive), the paired interval of test PSNR − reference PSNR over images, and the
    interval of that margin averaged over the band's σ per image. model_db, reference_db: per-image PSNR
    [S, N] at `sigmas` [S], on the same images and noise draws. No σ in the band: ((), None)."""
    model, reference = np.asarray(model_db, dtype=np.float64), np.asarray(reference_db, dtype=np.float64)
    if model.shape != reference.shape or model.shape[0] != len(sigmas):
        raise ValueError(f"model_db {model.shape} and reference_db {reference.shape} must both be [len(sigmas) = "
                         f"{len(sigmas)}, images]")
    rows = [i for i, s in enumerate(sigmas) if band[0] <= s <= band[1]]
    if not rows:
        return (), None
    options = {"draws": draws, "level": level, "resample": resample}
    per_sigma = tuple(paired_difference(model[i], reference[i], rng, **options) for i in rows)
    band_mean = paired_difference(model[rows].mean(0), reference[rows].mean(0), rng, **options)
    return per_sigma, band_mean
