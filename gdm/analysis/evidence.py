"""A pair's verdict evidence as intervals (docs/SCIENCE.md, Statistics of a verdict).

From what one evaluation measured per seed (similarities of the headline measure, divergence) and per image
(PSNR of the models and the references on the same noise draws), every condition of `gdm.analysis.verdict`
gets its statistic and a percentile bootstrap interval: over seeds for the similarity statistics, over images
for the PSNR margins. A seed whose sample diverged is not dropped: it counts against agreement (its A–B
similarity is INVALID_AGREEMENT, the least a similarity can show) and against the usable share of its model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gdm.analysis.uncertainty import (
    DRAWS,
    LEVEL,
    Interval,
    Resampler,
    bootstrap,
    mean,
    one_level,
    percentile_interval,
    wiener_differenced_gap,
)
from gdm.analysis.verdict import IntervalEvidence, band_margin_intervals

INVALID_AGREEMENT = -1.0  # A–B similarity of a seed with a diverged sample: the minimum of cosine and correlation


@dataclass(frozen=True)
class SeedArrays:
    """Per seed, over all K seeds sampled (NaN where the seed is not valid), in the headline measure."""

    valid: np.ndarray  # [K] bool: neither model diverged
    agreement: np.ndarray  # [K] s(a_i, b_i)
    nearest: np.ndarray  # [K, M] each model's sample against its nearest image of its own training set
    cross_seed: np.ndarray  # [K] median over j ≠ i of s(a_i, b_j)
    diverged: np.ndarray  # [K, M] bool: the model's sample diverged (σ_t or pixel bound, gdm.sample)


@dataclass(frozen=True)
class ImageArrays:
    """Per-image PSNR [σ, image] of one model and the references, on the same images and noise draws."""

    sigmas: list[float]
    model_train: np.ndarray
    model_test: np.ndarray
    wiener_train: np.ndarray  # the oracle Wiener filter at the true σ: the gap's paired baseline
    wiener_test: np.ndarray
    blind_test: np.ndarray | None  # the blind Bayes Gaussian denoiser: the verdict's reference (None: not measured)


def pooled_seeds(replicates: list[SeedArrays]) -> SeedArrays:
    """The seeds of several training replicates stacked replicate-major ([G·K] rows), for `uncertainty.TwoLevel`."""
    return SeedArrays(*(np.concatenate([getattr(r, f) for r in replicates]) for f in SeedArrays.__dataclass_fields__))


def pooled_images(replicates: list[ImageArrays]) -> ImageArrays:
    """One model's per-image PSNR of several replicates stacked replicate-major along images ([σ, G·N])."""
    if any(r.sigmas != replicates[0].sigmas for r in replicates):
        raise ValueError("replicates measured at different σ cannot be pooled")

    def stack(name: str) -> np.ndarray | None:
        arrays = [getattr(r, name) for r in replicates]
        return None if any(a is None for a in arrays) else np.concatenate(arrays, axis=1)
    names = [f for f in ImageArrays.__dataclass_fields__ if f != "sigmas"]
    return ImageArrays(replicates[0].sigmas, *(stack(name) for name in names))


def over_seeds(statistic: Callable[[np.ndarray], np.ndarray], count: int, rng: np.random.Generator, *,
               draws: int = DRAWS, level: float = LEVEL, resample: Resampler = one_level) -> Interval:
    """A statistic of the seeds, given as a function of an index matrix [R, K] → [R], and its percentile
    interval over seed resamples: every array of a seed moves with it, so paired statistics stay paired."""
    estimate = statistic(np.arange(count)[None])[0]
    return percentile_interval(estimate, statistic(resample((count,), rng, draws)[0]), level)


def _pooled(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values [K, M] at seeds `index` [R, K], models pooled: [R, K·M]."""
    return values[index].reshape(len(index), -1)


def memorized_share(nearest: np.ndarray, threshold: float) -> Callable[[np.ndarray], np.ndarray]:
    """Share of valid samples (both models pooled) whose nearest-training similarity exceeds `threshold`."""
    def statistic(index: np.ndarray) -> np.ndarray:
        values = _pooled(nearest, index)
        with np.errstate(invalid="ignore"):
            return (values > threshold).sum(1) / (~np.isnan(values)).sum(1)
    return statistic


def agreement_minus(seeds: SeedArrays, baseline: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """median A–B agreement over all seeds (a diverged seed at INVALID_AGREEMENT) − median of `baseline` [K]
    or [K, M] over the valid seeds."""
    agreement = np.where(seeds.valid, seeds.agreement, INVALID_AGREEMENT)
    baseline = baseline.reshape(len(baseline), -1)

    def statistic(index: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():  # a resample with no valid seed has no median: NaN, inconclusive
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.median(agreement[index], axis=1) - np.nanmedian(_pooled(baseline, index), axis=1)
    return statistic


def seed_intervals(seeds: SeedArrays, threshold: float, rng: np.random.Generator,
                   resample: Resampler = one_level) -> dict[str, Interval | None]:
    """memorized fraction, agreement − nearest, agreement − cross-seed, and each model's diverged share."""
    k, any_valid, by = len(seeds.valid), bool(seeds.valid.any()), {"resample": resample}
    out: dict[str, Interval | None] = {
        "memorized": over_seeds(memorized_share(seeds.nearest, threshold), k, rng, **by) if any_valid else None,
        "agreement_minus_nearest": over_seeds(agreement_minus(seeds, seeds.nearest), k, rng, **by)
        if any_valid else None,
        "agreement_minus_cross_seed": over_seeds(agreement_minus(seeds, seeds.cross_seed), k, rng, **by)
        if any_valid and k > 1 else None,
    }
    for m in range(seeds.diverged.shape[1]):
        out[f"unusable_{m}"] = bootstrap(seeds.diverged[:, m].astype(np.float64), mean, rng, **by)
    return out


def image_intervals(images: ImageArrays, rng: np.random.Generator, resample: Resampler = one_level) -> dict:
    """One model: its test PSNR − the blind reference at each σ of the band and over the band (paired over
    images), and its Wiener-differenced train − test gap averaged over σ (unpaired: train and test images)."""
    per_sigma, band = ((), None)
    if images.blind_test is not None:
        per_sigma, band = band_margin_intervals(images.model_test, images.blind_test, images.sigmas, rng,
                                                resample=resample)
    gap = wiener_differenced_gap(images.model_train.mean(0), images.wiener_train.mean(0),
                                 images.model_test.mean(0), images.wiener_test.mean(0), rng, resample=resample)
    return {"margins": per_sigma, "band_mean": band, "gap": gap}


def interval_evidence(seeds: SeedArrays, images: list[ImageArrays], threshold: float, rng: np.random.Generator,
                      resample: Resampler = one_level) -> tuple[IntervalEvidence, dict]:
    """The verdict's evidence, and every interval by name for results.json (`intervals_json`); `resample`:
    one_level for one pair, uncertainty.TwoLevel for replicates pooled by `pooled_arrays`."""
    by_seed = seed_intervals(seeds, threshold, rng, resample)
    by_model = [image_intervals(i, rng, resample) for i in images]
    evidence = IntervalEvidence(
        memorized_fraction=by_seed["memorized"],
        agreement_minus_nearest=by_seed["agreement_minus_nearest"],
        agreement_minus_cross_seed=by_seed["agreement_minus_cross_seed"],
        gaussian_margins_db=tuple(m["margins"] for m in by_model),
        gaussian_band_means_db=tuple(m["band_mean"] for m in by_model if m["band_mean"] is not None),
        gaps_db=tuple(m["gap"] for m in by_model),
        unusable_fractions=tuple(by_seed[f"unusable_{m}"] for m in range(len(images))),
    )
    return evidence, {"seeds": by_seed, "models": by_model}


def intervals_json(named: dict, splits: tuple[str, ...], band_sigmas: list[float]) -> dict:
    """results.json's "intervals": each statistic's {estimate, low, high, level} (null where not measured)."""
    seeds, models = named["seeds"], named["models"]

    def js(interval: Interval | None):
        return None if interval is None else interval.to_json()

    out: dict = {name: js(seeds[name]) for name in
                 ("memorized", "agreement_minus_nearest", "agreement_minus_cross_seed")}
    for m, split in enumerate(splits):
        model = models[m]
        out[split] = {"unusable_fraction": js(seeds[f"unusable_{m}"]), "gap_db": js(model["gap"]),
                      "blind_gaussian_margin_db": {f"{s:g}": js(i) for s, i in zip(band_sigmas, model["margins"],
                                                                                     strict=False)},
                      "blind_gaussian_band_mean_db": js(model["band_mean"])}
    return out
