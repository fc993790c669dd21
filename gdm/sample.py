"""The Kadkhodaie–Simoncelli sampler: stochastic coarse-to-fine gradient ascent (docs/SCIENCE.md, Sampling).

A blind denoiser f gives the residual d_t = f(y) − y, proportional to σ_t² ∇ log p_σ(y) (Miyasawa);
the effective noise σ_t² = ‖d_t‖²/D is read off the residual itself, so the sampler needs no schedule:

    y_t = y_{t−1} + h_t d_t + γ_t z_t,   γ_t² = ((1 − β h_t)² − (1 − h_t)²) σ_t²,

until σ_t ≤ σ_∞. With `authors_loop` (as in the authors' algorithm_inv_prob.py) h_t follows the
increasing schedule and the update of the step whose σ_t fell below σ_∞ is still made before stopping
(the y it gives is not measured again; only the final denoise checks it is finite). The randomness of
sample i (its start y_0 and every z_t) is a function of (seed_i, t) only (gdm.seeds.noise_key), so A and B
models driven by the same seeds see the same noise whatever the batch, order or rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gdm.config import SamplerConfig
from gdm.seeds import noise_key


@dataclass
class SampleResult:
    images: torch.Tensor  # [K, C, H, W] final samples (after the optional final denoise)
    steps: torch.Tensor  # [K] iterations taken by each sample
    diverged: torch.Tensor  # [K] bool: some σ_t (the final y's too) exceeded the bound, or a value was not finite
    final_sigma: torch.Tensor  # [K] effective noise σ_t when the sample stopped (of the last y at the step cap)


def noise(seed: int, step: int, shape: Sequence[int]) -> torch.Tensor:
    """z for (seed, step): a generator keyed by both, so it never depends on the batch."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(noise_key(seed, step)))


def noise_batch(seeds: Sequence[int], step: int, shape: Sequence[int], device) -> torch.Tensor:
    return torch.stack([noise(s, step, shape) for s in seeds]).to(device)


def step_size(cfg: SamplerConfig, t: int) -> float:
    """h_t: constant h_0, or the increasing schedule h_t = h_0 t / (1 + h_0 (t − 1)) (also under authors_loop)."""
    if cfg.schedule == "increasing" or cfg.authors_loop:
        return cfg.h0 * t / (1 + cfg.h0 * (t - 1))
    return cfg.h0


@torch.no_grad()
def sample(
    denoiser: nn.Module,
    seeds: Sequence[int],
    shape: tuple[int, int, int],
    cfg: SamplerConfig,
    device="cpu",
    *,
    batch_size: int | None = None,
    progress: bool = False,
) -> SampleResult:
    """Samples for `seeds`, drawn `batch_size` at a time (results do not depend on the batching)."""
    seeds = [int(s) for s in seeds]
    size = batch_size or len(seeds)
    parts = [
        _sample_batch(denoiser, seeds[i : i + size], shape, cfg, device) for i in _chunks(len(seeds), size, progress)
    ]
    return SampleResult(*(torch.cat(tensors) for tensors in zip(*parts, strict=False)))


def _chunks(total: int, size: int, progress: bool):
    starts = range(0, total, size)
    if progress:
        from tqdm.auto import tqdm

        return tqdm(starts, desc="sampling", unit="batch")
    return starts


def _sample_batch(denoiser, seeds, shape, cfg: SamplerConfig, device):
    y = cfg.mean + cfg.sigma_0 * noise_batch(seeds, 0, shape, device)
    k = len(seeds)
    steps = torch.zeros(k, dtype=torch.long)
    diverged = torch.zeros(k, dtype=torch.bool)
    sigma = torch.full((k,), float("inf"))
    active = torch.arange(k)
    # t = max_steps + 1 only measures: the last update's y is checked like every earlier one.
    for t in range(1, cfg.max_steps + 2):
        d = denoiser(y[active]) - y[active]  # step 1: the residual, ∝ σ² ∇ log p
        s = d.flatten(1).pow(2).mean(1).sqrt().cpu()  # step 2: σ_t² = ‖d_t‖² / D
        sigma[active] = s
        bad = _diverging(y[active], s, cfg)
        diverged[active[bad]] = True
        above = s > cfg.sigma_end
        go = ~bad & (above | cfg.authors_loop)  # samples updated at this step
        if t > cfg.max_steps or not go.any():
            break
        idx, d, s, above = active[go], d[go.to(d.device)], s[go], above[go]
        h = step_size(cfg, t)
        gamma = math.sqrt(max((1 - cfg.beta * h) ** 2 - (1 - h) ** 2, 0.0)) * s  # step 3: injected noise
        z = noise_batch([seeds[i] for i in idx.tolist()], t, shape, device)
        y[idx] = y[idx] + h * d + gamma.to(device).view(-1, 1, 1, 1) * z  # step 4
        steps[idx] = t
        active = idx[above]  # under authors_loop, a sample below σ_∞ has just made its last update
        if not len(active):
            break
    images = _finish(denoiser, y, cfg, diverged)
    diverged |= ~_finite(images)  # the final denoise may overflow too
    return images, steps, diverged, sigma


def _finite(y: torch.Tensor) -> torch.Tensor:
    """[K] bool on the CPU: every value of sample i is finite."""
    return torch.isfinite(y).flatten(1).all(1).cpu()


def _diverging(y: torch.Tensor, sigma: torch.Tensor, cfg: SamplerConfig) -> torch.Tensor:
    """[K] bool: σ_t is not finite or exceeds the bound, or y_{t−1} itself is not finite."""
    return ~torch.isfinite(sigma) | (sigma > cfg.diverge_sigma) | ~_finite(y)


def _finish(denoiser, y, cfg: SamplerConfig, diverged):
    """The optional final denoise x = f(y) (diverged samples are left as they are)."""
    if not cfg.final_denoise:
        return y.cpu()
    keep = ~diverged.to(y.device)
    if keep.any():
        y[keep] = denoiser(y[keep])
    return y.cpu()
