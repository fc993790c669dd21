"""Intervals on the statistics of a pair: percentile bootstrap over seeds or images (docs/SCIENCE.md, Intervals).

Percentile bootstrap (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13): resample the
N values with replacement `draws` times, recompute the statistic on each resample and take the (1 − level)/2
and (1 + level)/2 quantiles of the replicates. Vectorised: one [draws, N] index matrix, one statistic call.
Every function takes its numpy Generator: the same generator state gives the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

DRAWS = 2000  # bootstrap resamples per interval: the interval's ends move by ≈ 1 % of its width between seeds
LEVEL = 0.95  # nominal coverage of every interval

Statistic = Callable[[np.ndarray], np.ndarray]  # [..., N] → [...]: reduces the last axis


@dataclass(frozen=True)
class Interval:
    """A statistic as measured and its bootstrap interval; an infinite end means "beyond the grid" (see to_json)."""

    estimate: float  # the statistic of the data as measured
    low: float  # lower end of the interval
    high: float  # upper end
    level: float  # nominal coverage, e.g. 0.95

    def to_json(self) -> dict[str, float | None]:
        """Strict-JSON record: a non-finite value (an open end, an unmeasured estimate) becomes None."""
        return {name: value if math.isfinite(value) else None for name, value in vars(self).items()}


def median(values: np.ndarray) -> np.ndarray:
    return np.median(values, axis=-1)


def mean(values: np.ndarray) -> np.ndarray:
    return np.mean(values, axis=-1)


def _share_above(threshold: float, values: np.ndarray) -> np.ndarray:
    return np.mean(values > threshold, axis=-1)


def fraction_above(threshold: float) -> Statistic:
    """The share of values strictly above `threshold` (e.g. the memorized fraction of similarities)."""
    return partial(_share_above, threshold)


def resample_indices(count: int, rng: np.random.Generator, draws: int = DRAWS) -> np.ndarray:
    """[draws, count] indices drawn uniformly with replacement: row r is bootstrap resample r."""
    return rng.integers(0, count, size=(draws, count))


def percentile_interval(estimate: float, replicates: np.ndarray, level: float = LEVEL) -> Interval:
    """Interval from the replicates' (1 − level)/2 and (1 + level)/2 quantiles ("inverted_cdf": always a
    replicate's value, so replicates at ±inf, e.g. a crossing beyond the grid, give an infinite end)."""
    if not 0 < level < 1:
        raise ValueError(f"level is {level}; it must lie in (0, 1), e.g. 0.95")
    tail = (1 - level) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail], method="inverted_cdf")
    return Interval(float(estimate), float(low), float(high), level)


def _values(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or len(array) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array; got shape {array.shape}")
    return array


def bootstrap(values, statistic: Statistic, rng: np.random.Generator, *, draws: int = DRAWS,
              level: float = LEVEL) -> Interval:
    """`statistic` of a 1-D array (e.g. per-seed similarities) and its percentile interval over resamples."""
    values = _values(values, "values")
    replicates = statistic(values[resample_indices(len(values), rng, draws)])
    return percentile_interval(statistic(values), replicates, level)


def paired_difference(first, second, rng: np.random.Generator, *, statistic: Statistic = mean,
                      draws: int = DRAWS, level: float = LEVEL) -> Interval:
    """statistic(first) − statistic(second) where first[i] and second[i] share unit i (an image under the same
    noise, a seed): both are resampled with the same indices, so what the units share cancels. With the mean
    this is the mean of the per-unit differences (model − reference PSNR per image)."""
    first, second = _values(first, "first"), _values(second, "second")
    if len(first) != len(second):
        raise ValueError(f"paired values need equal lengths; got {len(first)} and {len(second)}")
    index = resample_indices(len(first), rng, draws)
    replicates = statistic(first[index]) - statistic(second[index])
    return percentile_interval(statistic(first) - statistic(second), replicates, level)


def unpaired_difference(first, second, rng: np.random.Generator, *, draws: int = DRAWS,
                        level: float = LEVEL) -> Interval:
    """mean(first) − mean(second) of two independent samples, each resampled on its own."""
    first, second = _values(first, "first"), _values(second, "second")
    replicates = (first[resample_indices(len(first), rng, draws)].mean(1)
                  - second[resample_indices(len(second), rng, draws)].mean(1))
    return percentile_interval(first.mean() - second.mean(), replicates, level)


def wiener_differenced_gap(train_model, train_wiener, test_model, test_wiener, rng: np.random.Generator, *,
                           draws: int = DRAWS, level: float = LEVEL) -> Interval:
    """Train–test gap of a model's PSNR (dB, per image) after subtracting the Wiener filter's on the same image
    and noise: mean(train_model − train_wiener) − mean(test_model − test_wiener). The Wiener filter knows no
    training image, so the subtraction removes the difference in difficulty between the two image sets and
    the noise draws' share of the per-image spread; train and test images are independent (unpaired)."""
    train = _per_image_difference(train_model, train_wiener, "train")
    test = _per_image_difference(test_model, test_wiener, "test")
    return unpaired_difference(train, test, rng, draws=draws, level=level)


def _per_image_difference(model, wiener, split: str) -> np.ndarray:
    model, wiener = _values(model, f"{split}_model"), _values(wiener, f"{split}_wiener")
    if len(model) != len(wiener):
        raise ValueError(f"{split}_model and {split}_wiener are per-image PSNRs of the same images; got "
                         f"{len(model)} and {len(wiener)} values")
    return model - wiener
