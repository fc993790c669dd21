"""Controls that tell generalization from memorization and from shared underfitting (docs/SCIENCE.md, Controls).

A–B agreement and train ≈ test PSNR are necessary but not sufficient: two equally underfit smoothers
also agree with each other and score the same on training and held-out images. Each control below is
a small pure function; `verdict` combines them into one label per pair.

1. Cross-seed baseline: similarity of A's sample from seed i to B's sample from seed j ≠ i. Same-seed
   agreement means something only above it.
2. Gaussian reference: the best linear denoiser of the data, x̂ = μ + C (C + σ²I)⁻¹ (y − μ), from the
   pool's mean μ and covariance C (the Wiener filter; the exact MMSE denoiser when the data are Gaussian).
   A model that generalizes in the paper's sense beats it on held-out images; one below it is underfit.
3. Sample realism: per-image contrast (pixel std), radially averaged power spectrum and pixel histogram
   of the samples against held-out images, each reduced to one distance (0 for identical sets).
4. Novelty reference: similarity of held-out images to their nearest training image, the level a
   genuinely new image reaches; samples are judged against it rather than against 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from gdm.analysis import psnr
from gdm.analysis.nearest import nearest
from gdm.analysis.similarity import SIMILARITIES

# --- 1. cross-seed baseline ------------------------------------------------------------------------


def cross_seed(measure: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """s(a_i, b_j) for every i ≠ j, row by row: [K (K − 1)] (empty below two samples).

    a, b: A's and B's samples [K, C, H, W] in seed order; `measure` names a similarity (SIMILARITIES).
    """
    if len(a) < 2:
        return torch.zeros(0, dtype=torch.float64)
    matrix = SIMILARITIES[measure](a, b)
    return matrix[~torch.eye(len(a), dtype=torch.bool)]


def cross_seed_per_seed(values: torch.Tensor) -> torch.Tensor:
    """Per seed i, the median of s(a_i, b_j) over j ≠ i, from `cross_seed`'s [K (K − 1)] values: [K]."""
    k = (1 + math.isqrt(1 + 4 * len(values))) // 2  # K (K − 1) = len(values)
    return values.view(k, k - 1).median(dim=1).values if len(values) else values


# --- 2. Gaussian (Wiener) reference ----------------------------------------------------------------


@dataclass(frozen=True)
class GaussianModel:
    """Mean and covariance of a set of images, the covariance as its eigendecomposition (float64)."""

    mean: torch.Tensor  # [D] pixel means μ
    eigenvalues: torch.Tensor  # [D] eigenvalues λ_k of the covariance C (clamped at 0)
    eigenvectors: torch.Tensor  # [D, D] orthonormal columns u_k: C = U diag(λ) Uᵀ
    shape: tuple[int, ...]  # image shape [C, H, W]


def fit_gaussian(chunks: Iterable[torch.Tensor]) -> GaussianModel:
    """μ and C = E[(x − μ)(x − μ)ᵀ] of images given in chunks [B, C, H, W] (one pass, float64, memory O(D²))."""
    count, total, outer, shape = 0, 0.0, 0.0, None
    for chunk in chunks:
        flat = chunk.flatten(1).double()
        count, total, outer, shape = count + len(flat), total + flat.sum(0), outer + flat.T @ flat, chunk.shape[1:]
    if count < 1:
        raise ValueError("fit_gaussian needs at least one image")
    mean = total / count
    values, vectors = torch.linalg.eigh(outer / count - torch.outer(mean, mean))
    return GaussianModel(mean, values.clamp_min(0.0), vectors, tuple(shape))


class WienerDenoiser(nn.Module):
    """x̂(y) = μ + U diag(λ / (λ + σ²)) Uᵀ (y − μ): the linear MMSE denoiser at noise σ (knows σ)."""

    def __init__(self, model: GaussianModel, sigma: float):
        super().__init__()
        self.model, self.gain = model, model.eigenvalues / (model.eigenvalues + float(sigma) ** 2)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        m = self.model
        mean, vectors = m.mean.to(y.device), m.eigenvectors.to(y.device)
        coefficients = (y.flatten(1).double() - mean) @ vectors * self.gain.to(y.device)
        return (mean + coefficients @ vectors.T).to(y.dtype).view(-1, *m.shape)


def wiener_psnr(model: GaussianModel, sigma: float) -> float:
    """Closed-form PSNR (dB) of the Wiener denoiser on data drawn from N(μ, C): MSE = (1/D) Σ_k λ_k σ² / (λ_k + σ²)."""
    mse = (model.eigenvalues * sigma**2 / (model.eigenvalues + sigma**2)).mean()
    return float(-10 * torch.log10(mse))


def gaussian_psnr_curves(model: GaussianModel, train: dict, test: torch.Tensor, sigmas: Sequence[float], *,
                         images: int, seed: int, batch_size: int, device) -> dict:
    """split → {"train", "test"} PSNR curves of the Wiener denoiser, on the models' noise draws (same seed)."""
    return psnr.curves_per_split(dict.fromkeys(train, partial(WienerDenoiser, model)), train, test, sigmas,
                                 images=images, seed=seed, batch_size=batch_size, device=device)


# --- 3. sample realism ------------------------------------------------------------------------------

HISTOGRAM_RANGE = (-0.1, 1.1)  # pixel values binned for the realism figure (outliers land in the end bins)
HISTOGRAM_BINS = 48  # bins across HISTOGRAM_RANGE
QUANTILES = 1001  # quantile levels compared by the histogram distance (1-D Wasserstein)


@dataclass(frozen=True)
class RealismProfile:
    """What the realism control compares between two sets of images."""

    contrast: torch.Tensor  # [N] per-image pixel standard deviation
    spectrum: torch.Tensor  # [F] mean power |FFT|² / D on rings of integer radius 1 … F (F = side // 2)
    histogram: torch.Tensor  # [HISTOGRAM_BINS] pixel-value density over HISTOGRAM_RANGE
    quantiles: torch.Tensor  # [QUANTILES] pixel-value quantiles at levels 0 … 1


def contrast(images: torch.Tensor) -> torch.Tensor:
    """Per-image pixel standard deviation [N] (population std, float64)."""
    return images.flatten(1).double().std(dim=1, correction=0)


def radial_power_spectrum(images: torch.Tensor) -> torch.Tensor:
    """Mean over images and channels of |FFT(x)|² / D on rings r = round(|k|) = 1 … side // 2: [side // 2].

    The ring r = 0 (each image's mean) is left out, as are the grid's corners beyond the last ring.
    """
    x = images.double()
    power = (torch.fft.fft2(x).abs().pow(2).mean(dim=(0, 1)) / x[0, 0].numel()).flatten()
    height, width = x.shape[-2:]
    fy, fx = torch.fft.fftfreq(height) * height, torch.fft.fftfreq(width) * width
    radius = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2).round().long().flatten()
    rings = min(height, width) // 2
    keep = radius <= rings
    sums = torch.zeros(rings + 1, dtype=torch.float64).index_add_(0, radius[keep], power[keep])
    return (sums / torch.bincount(radius[keep], minlength=rings + 1).double())[1:]


def pixel_histogram(images: torch.Tensor) -> torch.Tensor:
    """Density of the pixel values over HISTOGRAM_RANGE in HISTOGRAM_BINS bins (values outside are clipped in)."""
    low, high = HISTOGRAM_RANGE
    values = images.flatten().double().clamp(low, high)
    counts = torch.histc(values, bins=HISTOGRAM_BINS, min=low, max=high)
    return counts / counts.sum().clamp_min(1) / ((high - low) / HISTOGRAM_BINS)


def realism_profile(images: torch.Tensor) -> RealismProfile:
    """Contrast, radial power spectrum, pixel histogram and pixel quantiles of images [N, C, H, W]."""
    levels = torch.linspace(0, 1, QUANTILES, dtype=torch.float64)
    pixels = images.flatten().double()
    if len(pixels) > 2**24:  # torch.quantile's limit: a fixed, evenly spaced subset of the pixels
        pixels = pixels[:: math.ceil(len(pixels) / 2**24)]
    return RealismProfile(contrast(images), radial_power_spectrum(images), pixel_histogram(images),
                          torch.quantile(pixels, levels))


def realism_distances(samples: RealismProfile, reference: RealismProfile) -> dict[str, float]:
    """One distance per comparison, each 0 when the two profiles are the same.

    contrast_distance: |mean sample contrast / mean reference contrast − 1| (0.2 = 20 % off);
    spectrum_distance_db: mean over rings of |10 log10(P_samples / P_reference)| (dB);
    histogram_distance: 1-D Wasserstein distance of the pixel values (mean |quantile difference|, pixel units).
    """
    ratio = samples.contrast.mean() / reference.contrast.mean().clamp_min(1e-12)
    tiny = 1e-20  # keeps log10 finite for a flat set (no power at all)
    spectrum = (10 * torch.log10((samples.spectrum + tiny) / (reference.spectrum + tiny))).abs().mean()
    return {"contrast_distance": float((ratio - 1).abs()), "spectrum_distance_db": float(spectrum),
            "histogram_distance": float((samples.quantiles - reference.quantiles).abs().mean())}


# --- 4. novelty reference ----------------------------------------------------------------------------


def novelty(held_out: torch.Tensor, train: torch.Tensor, measure: str, *, device="cpu") -> torch.Tensor:
    """Similarity of each held-out image to its nearest training image [T]: what a new image scores."""
    return nearest(held_out, train, measure, device=device)[0]


# --- 5. verdict ---------------------------------------------------------------------------------------

MEMORIZED_MAJORITY = 0.5  # memorizing: more than this share of the samples copies a training image
GAP_DB = 0.5  # generalizing: every model's train − test PSNR gap (mean over σ) is below this, dB
SIGMA_BAND = (0.05, 0.4)  # noise levels (inclusive) over which test PSNR is compared with the Gaussian reference
GAUSSIAN_TOLERANCE_DB = 0.0  # slack of that comparison, dB: at or above means ≥ reference − this


def band_sigmas(sigmas) -> list[float]:
    """The σ of `sigmas` inside SIGMA_BAND (inclusive), in their order."""
    return [s for s in sigmas if SIGMA_BAND[0] <= s <= SIGMA_BAND[1]]


# the labels of a pair; "inconclusive" comes from deciding on intervals (gdm.analysis.verdict)
VERDICTS = ("memorizing", "generalizing", "underfit", "transitional", "inconclusive")


@dataclass(frozen=True)
class PairEvidence:
    """What the verdict of a pair looks at (None: not measured, e.g. every sample diverged)."""

    memorized_fraction: float | None  # share of samples above the memorization threshold
    agreement: float | None  # median A–B similarity, same seed
    nearest: float | None  # median similarity of a sample to its nearest image in its own training set
    cross_seed: float | None  # median A–B similarity across different seeds
    # per model: test PSNR − Gaussian reference at each σ of the band
    gaussian_margins_db: tuple[tuple[float, ...], ...]
    gaps_db: tuple[float, ...]  # per model: train − test PSNR, mean over σ


def band_margins(model: dict, reference: dict, band: tuple[float, float] = SIGMA_BAND) -> tuple[float, ...]:
    """Output PSNR of `model` minus `reference` (two PSNR curves on the same σ) at every σ inside `band`."""
    return tuple(m - r for s, m, r in zip(model["sigma"], model["output_psnr"], reference["output_psnr"], strict=True)
                 if band[0] <= s <= band[1])


def verdict_checks(e: PairEvidence) -> dict[str, bool | None]:
    """Each condition of the verdict: True, False, or None where the evidence cannot decide it."""
    margins = [m for model in e.gaussian_margins_db for m in model]
    means = [sum(model) / len(model) for model in e.gaussian_margins_db if model]
    return {
        "memorized_majority": None if e.memorized_fraction is None else e.memorized_fraction > MEMORIZED_MAJORITY,
        "agreement_above_nearest": _above(e.agreement, e.nearest),
        "agreement_above_cross_seed": _above(e.agreement, e.cross_seed),
        "at_or_above_gaussian": None if not margins else min(margins) >= -GAUSSIAN_TOLERANCE_DB,
        "below_gaussian": None if not means else min(means) < -GAUSSIAN_TOLERANCE_DB,
        "small_gap": None if not e.gaps_db else max(abs(g) for g in e.gaps_db) < GAP_DB,
    }


def _above(value: float | None, baseline: float | None) -> bool | None:
    return None if value is None or baseline is None else value > baseline


def verdict(e: PairEvidence) -> str:
    """memorizing, generalizing, underfit or transitional, tested in that order (docs/SCIENCE.md, Verdict).

    memorizing: most samples copy a training image (memorized_majority).
    generalizing: same-seed agreement above both the nearest-training similarity and the cross-seed
    baseline, every model's test PSNR at or above the Gaussian reference at every σ of the band (when
    measured), and a train–test gap below GAP_DB for every model.
    underfit: a model's test PSNR is below the Gaussian reference on average over the band while the
    gap is small: the models fit their training images no better than new ones, and worse than a
    linear filter (shared underfitting). Below the reference with a large gap is overfitting: transitional.
    transitional: anything else.
    """
    c = verdict_checks(e)
    if c["memorized_majority"]:
        return "memorizing"
    if (
        c["agreement_above_nearest"]
        and c["agreement_above_cross_seed"]
        and c["small_gap"]
        and c["at_or_above_gaussian"] is not False
    ):
        return "generalizing"
    if c["below_gaussian"] and c["small_gap"]:
        return "underfit"
    return "transitional"
