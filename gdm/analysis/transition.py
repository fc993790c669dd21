"""The transition point n* across a grid of training-set sizes, with a bootstrap interval (docs/SCIENCE.md,
Transition point).

Two definitions, each from per-seed values at every n of the grid:
1. memorization: n* where the memorized fraction crosses 50 %, from a logistic fit of P(memorized) against
   log n (binomial likelihood over every seed, a few Newton steps);
2. agreement: the n where median A–B agreement first exceeds median nearest-training similarity, the margin
   interpolated linearly in log n between the two grid points around its first sign change.
Intervals resample the seeds within each n (percentile bootstrap, gdm.analysis.uncertainty). A crossing the
grid does not bracket is reported as None, never extrapolated; a bootstrap replicate beyond the grid counts
as ±inf (below / above it), so an interval end can be open (infinite, null in JSON).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gdm.analysis.uncertainty import DRAWS, LEVEL, Interval, median, percentile_interval, resample_indices

NEWTON_STEPS = 50  # Newton iterations of the logistic fit (quadratic convergence: ~10 suffice unseparated)
RIDGE = 1e-3  # penalty ½ RIDGE (a² + b²) on the logit's intercept and slope: finite under perfect separation
MAX_STEP = 5.0  # largest change of a or b per Newton step (logit units): keeps early steps from overshooting


def _log_grid(n_values: Sequence[float]) -> np.ndarray:
    log_n = np.log(np.asarray(n_values, dtype=np.float64))
    if log_n.ndim != 1 or len(log_n) < 2 or not (np.diff(log_n) > 0).all():
        raise ValueError(f"n_values must be at least two increasing training-set sizes; got {list(n_values)}")
    return log_n


def logistic_fit(x: np.ndarray, successes: np.ndarray, trials: np.ndarray, *, steps: int = NEWTON_STEPS,
                 ridge: float = RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) maximising Σ_i [k_i (a + b x_i) − m_i log(1 + e^(a + b x_i))] − ½ ridge (a² + b²), vectorised over
    the leading axes of successes [..., N] (trials m [N], x [N]). Newton's method on the concave objective."""
    a = np.zeros(successes.shape[:-1])
    b = np.zeros_like(a)
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(a[..., None] + b[..., None] * x)))
        residual, weight = successes - trials * p, trials * p * (1 - p)
        grad_a, grad_b = residual.sum(-1) - ridge * a, (residual * x).sum(-1) - ridge * b
        h_aa, h_ab, h_bb = weight.sum(-1) + ridge, (weight * x).sum(-1), (weight * x * x).sum(-1) + ridge
        det = h_aa * h_bb - h_ab**2  # the negative Hessian is positive definite: det > 0
        step_a, step_b = (h_bb * grad_a - h_ab * grad_b) / det, (h_aa * grad_b - h_ab * grad_a) / det
        shrink = np.minimum(1.0, MAX_STEP / np.maximum(np.abs(step_a), np.abs(step_b)).clip(min=1e-300))
        a, b = a + shrink * step_a, b + shrink * step_b
    return a, b


def _logistic_crossing(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """x where a + b x = 0 (P = ½), if the fit crosses ½ on [x_0, x_N−1]; else +inf when P > ½ on the whole grid
    (memorizing throughout: the crossing lies beyond the largest n), −inf when P < ½ throughout."""
    first, last = a + b * x[0], a + b * x[-1]
    bracketed = (first >= 0) != (last >= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = -a / b
    return np.where(bracketed, inside, np.where(first >= 0, np.inf, -np.inf))


def _interval_in_n(estimate_log_n: float, replicates_log_n: np.ndarray, level: float) -> Interval | None:
    """None when the estimate is beyond the grid; else the interval mapped from log n to n (±inf kept)."""
    if not np.isfinite(estimate_log_n):
        return None
    interval = percentile_interval(estimate_log_n, replicates_log_n, level)
    return Interval(*(float(np.exp(v)) if np.isfinite(v) else v for v in (interval.estimate, interval.low,
                                                                        interval.high)), level)


def memorization_transition(n_values: Sequence[float], memorized: Sequence, rng: np.random.Generator, *,
                            draws: int = DRAWS, level: float = LEVEL) -> Interval | None:
    """n* where the memorized fraction crosses 50 %, from memorized[i] (per-seed booleans at n_values[i]).

    Resampling the m_i seeds of n_i with replacement leaves Binomial(m_i, k_i / m_i) memorized ones, so the
    replicates draw those counts directly. The fit runs on log n centred on the grid's mean (conditioning)."""
    log_n = _log_grid(n_values)
    if len(memorized) != len(log_n) or any(len(m) == 0 for m in memorized):
        raise ValueError(f"memorized needs one non-empty array of per-seed booleans per n ({len(log_n)} values)")
    x = log_n - log_n.mean()
    trials = np.array([len(m) for m in memorized], dtype=np.float64)
    successes = np.array([np.count_nonzero(m) for m in memorized], dtype=np.float64)
    replicates = rng.binomial(trials.astype(np.int64), successes / trials, size=(draws, len(x))).astype(np.float64)
    estimate = _logistic_crossing(*logistic_fit(x, successes, trials), x)
    return _interval_in_n(float(estimate) + log_n.mean(),
                          _logistic_crossing(*logistic_fit(x, replicates, trials), x) + log_n.mean(), level)


def first_crossing(log_n: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """log n where `margin` [..., N] first turns positive, linear between grid points j − 1 (margin ≤ 0) and j
    (> 0); −inf when it is positive at the first n already, +inf when it never is."""
    positive = margin > 0
    first = positive.argmax(-1)
    j = np.clip(first, 1, len(log_n) - 1)
    before, after = np.take_along_axis(margin, (j - 1)[..., None], -1)[..., 0], np.take_along_axis(
        margin, j[..., None], -1)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = log_n[j - 1] - before * (log_n[j] - log_n[j - 1]) / (after - before)
    return np.where(~positive.any(-1), np.inf, np.where(first == 0, -np.inf, inside))


def agreement_transition(n_values: Sequence[float], agreement: Sequence, nearest: Sequence,
                         rng: np.random.Generator, *, draws: int = DRAWS, level: float = LEVEL) -> Interval | None:
    """The n where median(agreement) − median(nearest) first exceeds 0; agreement[i], nearest[i]: per-seed
    values at n_values[i], paired by seed (a seed's A–B agreement and its sample's nearest-training
    similarity), so both are resampled with the same indices."""
    log_n = _log_grid(n_values)
    if not len(agreement) == len(nearest) == len(log_n):
        raise ValueError(f"agreement and nearest need one per-seed array per n ({len(log_n)} values)")
    margins, replicates = [], []
    for a, b in zip(agreement, nearest, strict=True):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if len(a) != len(b) or len(a) == 0:
            raise ValueError(f"agreement and nearest are paired by seed: got {len(a)} and {len(b)} values at one n")
        index = resample_indices(len(a), rng, draws)
        margins.append(median(a) - median(b))
        replicates.append(median(a[index]) - median(b[index]))
    estimate = first_crossing(log_n, np.array(margins))
    return _interval_in_n(float(estimate), first_crossing(log_n, np.stack(replicates, axis=1)), level)
