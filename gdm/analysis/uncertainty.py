"""Intervals on the statistics of a pair: percentile bootstrap over seeds or images (docs/SCIENCE.md, Intervals).

Percentile bootstrap (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13): resample the
N values with replacement `draws` times, recompute the statistic on each resample and take the (1 − level)/2
and (1 + level)/2 quantiles of the replicates. Vectorised: one [draws, N] index matrix, one statistic call.
Every function takes its numpy Generator: the same generator state gives the same interval.

Pooled training replicates (trainer.replicates = G > 1) resample at two levels (`TwoLevel`): the replicates,
then the units (seeds, images) within each, so the spread between training seeds enters the interval.
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
# (counts of each independent set of units, generator, draws) → one [draws, count] index matrix per set
Resampler = Callable[[tuple[int, ...], np.random.Generator, int], tuple[np.ndarray, ...]]


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


def one_level(counts: tuple[int, ...], rng: np.random.Generator, draws: int = DRAWS) -> tuple[np.ndarray, ...]:
    """The plain bootstrap: each set of units (e.g. train and test images) resampled on its own."""
    return tuple(resample_indices(count, rng, draws) for count in counts)


@dataclass(frozen=True)
class TwoLevel:
    """Two-level (hierarchical) bootstrap of values from `groups` training replicates, stacked group-major: each
    set holds groups · m values, unit i of replicate g at g·m + i (Davison & Hinkley, *Bootstrap Methods and their
    Application*, 1997, §3.8). A resample draws G replicates with replacement (stage 1, the same for every set,
    so a replicate's train and test images move together), then m units with replacement within each drawn
    replicate (stage 2). For x_gi = μ + a_g + e_gi the pooled mean has variance σ_a²/G + σ_e²/(Gm); stage 1 alone
    gives ((G−1)/G)(σ_a² + σ_e²/m)/G, stage 2 adds ≈ σ_e²/(Gm): the replicate spread σ_a² enters, the unit
    term is counted twice (conservative: with no spread between replicates the interval is ≈ √2 × the
    one-level one), and with few replicates the between term is short by (G−1)/G. shared_units: one stage-2
    draw for all replicates of a resample, for units crossed with the replicates (the same sample seeds and test
    images in every replicate): a unit effect b_i shared by the replicates then keeps its variance σ_b²/m
    instead of shrinking to σ_b²/(Gm)."""

    groups: int  # G, the training replicates pooled
    shared_units: bool = False  # units crossed with replicates (same seeds, same images): one unit draw for all

    def __call__(self, counts: tuple[int, ...], rng: np.random.Generator, draws: int = DRAWS) -> tuple[np.ndarray, ...]:
        chosen = rng.integers(0, self.groups, size=(draws, self.groups, 1))  # stage 1, shared by every set
        return tuple(self._within(chosen, self._units(count), rng, draws) for count in counts)

    def _units(self, count: int) -> int:
        if count % self.groups:
            raise ValueError(f"{count} values do not split into {self.groups} equal replicates")
        return count // self.groups

    def _within(self, chosen: np.ndarray, units: int, rng: np.random.Generator, draws: int) -> np.ndarray:
        """Stage 2: unit index g·m + i for each drawn replicate g and resampled unit i: [draws, G·m]."""
        within = rng.integers(0, units, size=(draws, 1 if self.shared_units else self.groups, units))
        return (chosen * units + within).reshape(draws, self.groups * units)


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
              level: float = LEVEL, resample: Resampler = one_level) -> Interval:
    """`statistic` of a 1-D array (e.g. per-seed similarities) and its percentile interval over resamples."""
    values = _values(values, "values")
    replicates = statistic(values[resample((len(values),), rng, draws)[0]])
    return percentile_interval(statistic(values), replicates, level)


def paired_difference(first, second, rng: np.random.Generator, *, statistic: Statistic = mean,
                      draws: int = DRAWS, level: float = LEVEL, resample: Resampler = one_level) -> Interval:
    """statistic(first) − statistic(second) where first[i] and second[i] share unit i (an image under the same
    noise, a seed): both are resampled with the same indices, so what the units share cancels. With the mean
    this is the mean of the per-unit differences (model − reference PSNR per image)."""
    first, second = _values(first, "first"), _values(second, "second")
    if len(first) != len(second):
        raise ValueError(f"paired values need equal lengths; got {len(first)} and {len(second)}")
    index = resample((len(first),), rng, draws)[0]
    replicates = statistic(first[index]) - statistic(second[index])
    return percentile_interval(statistic(first) - statistic(second), replicates, level)


def unpaired_difference(first, second, rng: np.random.Generator, *, draws: int = DRAWS,
                        level: float = LEVEL, resample: Resampler = one_level) -> Interval:
    """mean(first) − mean(second) of two independent samples, each resampled on its own."""
    first, second = _values(first, "first"), _values(second, "second")
    first_index, second_index = resample((len(first), len(second)), rng, draws)
    replicates = first[first_index].mean(1) - second[second_index].mean(1)
    return percentile_interval(first.mean() - second.mean(), replicates, level)


def wiener_differenced_gap(train_model, train_wiener, test_model, test_wiener, rng: np.random.Generator, *,
                           draws: int = DRAWS, level: float = LEVEL, resample: Resampler = one_level) -> Interval:
    """Train–test gap of a model's PSNR (dB, per image) after subtracting the Wiener filter's on the same image
    and noise: mean(train_model − train_wiener) − mean(test_model − test_wiener). The Wiener filter knows no
    training image, so the subtraction removes the difference in difficulty between the two image sets and
    the noise draws' share of the per-image spread; train and test images are independent (unpaired)."""
    train = _per_image_difference(train_model, train_wiener, "train")
    test = _per_image_difference(test_model, test_wiener, "test")
    return unpaired_difference(train, test, rng, draws=draws, level=level, resample=resample)


def _per_image_difference(model, wiener, split: str) -> np.ndarray:
    model, wiener = _values(model, f"{split}_model"), _values(wiener, f"{split}_wiener")
    if len(model) != len(wiener):
        raise ValueError(f"{split}_model and {split}_wiener are per-image PSNRs of the same images; got "
                         f"{len(model)} and {len(wiener)} values")
    return model - wiener
