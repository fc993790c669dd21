"""The Kadkhodaie–Simoncelli sampler: stochastic coarse-to-fine gradient ascent (docs/SCIENCE.md, Sampling).

A blind denoiser f gives the residual d_t = f(y) − y, proportional to σ_t² ∇ log p_σ(y) (Miyasawa);
the effective noise σ_t² = ‖d_t‖²/D is read off the residual itself, so the sampler needs no schedule:

    y_t = y_{t−1} + h_t d_t + γ_t z_t,   γ_t² = ((1 − β h_t)² − (1 − h_t)²) σ_t²,

until σ_t ≤ σ_∞. With `authors_loop` (as in the authors' algorithm_inv_prob.py) h_t follows the
increasing schedule and the update of the step whose σ_t fell below σ_∞ is still made before stopping
(the y it gives is not measured again; only the final denoise checks it is finite).

Randomness (gdm.seeds): sample i owns one generator, created on the sampling device and seeded with
noise_key(seed_i), for the whole run (as NVlabs/edm's StackedRandomGenerator). Its draw 0 is y_0's noise
and its draw t is z_t, whether or not the sample is still moving, so a sample is a function of its seed
only, never of the batch, its order or the rank, and A and B models driven by the same seeds share the
noise. Two consequences, stated plainly: these samples differ from those of gdm before this scheme (one
CPU generator per (seed, step), keyed by SeedSequence([seed, step])): same distribution
(tests/test_sample.py compares the two), different values; and a CUDA generator (Philox) draws other
numbers than a CPU one (Mersenne Twister) for the same key, so a seed's sample depends on the device
type it is sampled on (the A and B models of a pair are always sampled on the same one).

Host synchronisation: σ_t, γ_t, the stop and divergence masks live on the device; h_t is a Python float
of t. The host reads the device only every `sync_every` steps, to ask "has every sample stopped?" and to
drop stopped samples from the batch (between checks they ride along unchanged under a mask).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from gdm.config import SamplerConfig
from gdm.seeds import noise_key

# Steps between host checks on an accelerator. A check drains the launch queue (the GPU idles while the
# host launches the next step); skipping it costs stopped samples at most SYNC_EVERY − 1 extra masked
# denoiser rows each, small against the 10²–10³ steps a sample takes. On the CPU a check is free: 1.
SYNC_EVERY = 8


@dataclass
class SampleResult:
    images: torch.Tensor  # [K, C, H, W] final samples (after the optional final denoise)
    steps: torch.Tensor  # [K] iterations taken by each sample
    # [K] bool: some σ_t (the final y's too) exceeded the bound, a value was not finite, or a final pixel lay
    # beyond sampler.diverge_pixel_margin
    diverged: torch.Tensor
    final_sigma: torch.Tensor  # [K] effective noise σ_t when the sample stopped (of the last y at the step cap)


class SeedNoise:
    """N(0, I) draws of shape `shape`, one generator per seed on `device` (StackedRandomGenerator).

    Draw k of seed s is the k-th draw of torch.Generator(device).manual_seed(noise_key(s)): a function of
    (s, k, device type) only. Each seed's generator is its own, so dropping a seed (`keep`) or drawing
    for another changes nothing that a seed draws.
    """

    def __init__(self, seeds: Sequence[int], shape: Sequence[int], device="cpu"):
        self.shape, self.device = tuple(shape), torch.device(device)
        self.generators = [torch.Generator(self.device).manual_seed(noise_key(int(s))) for s in seeds]

    def draw(self) -> torch.Tensor:
        """The next draw of every seed held, stacked in seed order: [len(generators), *shape] on `device`."""
        return torch.stack([torch.randn(self.shape, generator=g, device=self.device) for g in self.generators])

    def keep(self, rows: Sequence[int]) -> None:
        """Hold only the generators at positions `rows` (samples that stopped draw no more)."""
        self.generators = [self.generators[i] for i in rows]


def step_size(cfg: SamplerConfig, t: int) -> float:
    """h_t: constant h_0, or the increasing schedule h_t = h_0 t / (1 + h_0 (t − 1)) (also under authors_loop)."""
    if cfg.schedule == "increasing" or cfg.authors_loop:
        return cfg.h0 * t / (1 + cfg.h0 * (t - 1))
    return cfg.h0


def noise_scale(cfg: SamplerConfig, h: float) -> float:
    """γ_t / σ_t = √((1 − β h_t)² − (1 − h_t)²): the injected noise's share of the effective noise."""
    return math.sqrt(max((1 - cfg.beta * h) ** 2 - (1 - h) ** 2, 0.0))


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
    sync_every: int | None = None,
) -> SampleResult:
    """Samples for `seeds`, drawn `batch_size` at a time (results do not depend on the batching).

    sync_every: steps between the host's "all stopped?" checks (None: 1 on the CPU, SYNC_EVERY elsewhere);
    results do not depend on it, only the number of masked rows the denoiser sees does.
    """
    if sync_every is not None and sync_every < 1:
        raise ValueError(f"sync_every is {sync_every}; it must be ≥ 1 (steps between host checks) or None")
    seeds = [int(s) for s in seeds]
    size = batch_size or len(seeds)
    every = sync_every or (1 if torch.device(device).type == "cpu" else SYNC_EVERY)
    parts = [
        _sample_batch(denoiser, seeds[i : i + size], shape, cfg, device, every)
        for i in _chunks(len(seeds), size, progress)
    ]
    return SampleResult(*(torch.cat(tensors) for tensors in zip(*parts, strict=False)))


def _chunks(total: int, size: int, progress: bool):
    starts = range(0, total, size)
    if progress:
        from tqdm.auto import tqdm

        return tqdm(starts, desc="sampling", unit="batch")
    return starts


@dataclass
class _Batch:
    """The samples still held on the device, one row each; `rows` are their positions among the K of the call."""

    y: torch.Tensor  # [W, C, H, W] current y_t
    steps: torch.Tensor  # [W] long: last step that updated the sample
    diverged: torch.Tensor  # [W] bool
    sigma: torch.Tensor  # [W] last measured σ_t
    live: torch.Tensor  # [W] bool: still to be measured and updated
    rows: torch.Tensor  # [W] long: positions among the K samples of the call

    @classmethod
    def start(cls, y0: torch.Tensor) -> _Batch:
        k, device = len(y0), y0.device
        return cls(y0, torch.zeros(k, dtype=torch.long, device=device), torch.zeros(k, dtype=torch.bool, device=device),
                   torch.full((k,), float("inf"), device=device), torch.ones(k, dtype=torch.bool, device=device),
                   torch.arange(k, device=device))

    def store(self, out: _Batch, held: torch.Tensor | slice = slice(None)) -> None:
        """Write rows `held` into `out` (the K-row result) at their positions."""
        for name in ("y", "steps", "diverged", "sigma"):
            getattr(out, name)[self.rows[held]] = getattr(self, name)[held]

    def compact(self, out: _Batch, noise: SeedNoise) -> bool:
        """Store the stopped rows in `out` and drop them (one host sync); False once none is live."""
        held = self.live
        self.store(out, ~held)
        positions = held.nonzero().flatten().tolist()
        for name in ("y", "steps", "diverged", "sigma", "live", "rows"):
            setattr(self, name, getattr(self, name)[held])
        noise.keep(positions)
        return bool(positions)


def _sample_batch(denoiser, seeds, shape, cfg: SamplerConfig, device, sync_every: int):
    noise = SeedNoise(seeds, shape, device)
    b = _Batch.start(cfg.mean + cfg.sigma_0 * noise.draw())  # draw 0: y_0
    out = _Batch.start(b.y.clone())
    # t = max_steps + 1 only measures: the last update's y is checked like every earlier one.
    for t in range(1, cfg.max_steps + 2):
        d = denoiser(b.y) - b.y  # step 1: the residual, ∝ σ² ∇ log p
        s = d.flatten(1).pow(2).mean(1).sqrt()  # step 2: σ_t² = ‖d_t‖² / D
        b.sigma = torch.where(b.live, s, b.sigma)
        bad = ~torch.isfinite(s) | (s > cfg.diverge_sigma) | ~_finite(b.y)
        b.diverged |= b.live & bad
        if t > cfg.max_steps:
            break
        above = s > cfg.sigma_end
        go = b.live & ~bad & (above | cfg.authors_loop)  # samples updated at this step
        h = step_size(cfg, t)
        z = noise.draw()  # draw t of every held seed is its z_t, used or not
        moved = b.y + h * d + (noise_scale(cfg, h) * s).view(-1, 1, 1, 1) * z  # steps 3–4
        b.y = torch.where(go.view(-1, 1, 1, 1), moved, b.y)
        b.steps = torch.where(go, t, b.steps)
        b.live = go & above  # under authors_loop, a sample below σ_∞ has just made its last update
        if t % sync_every == 0 and not b.compact(out, noise):
            break
    b.store(out)
    images = _finish(denoiser, out.y, cfg, out.diverged).cpu()
    diverged = out.diverged.cpu() | ~_finite(images) | _blown_up(images, cfg.diverge_pixel_margin)
    return images, out.steps.cpu(), diverged, out.sigma.cpu()


def _finite(y: torch.Tensor) -> torch.Tensor:
    """[K] bool, on y's device: every value of sample i is finite."""
    return torch.isfinite(y).flatten(1).all(1)


def _blown_up(images: torch.Tensor, margin: float | None) -> torch.Tensor:
    """[K] bool: a pixel of the final image lies more than `margin` outside the data range [0, 1].

    σ_t stops the loop but does not bound the amplitude: a bias-free denoiser is homogeneous (f(λy) = λ f(y)),
    so an image it leaves nearly unchanged stays nearly unchanged at any scale, with a small σ_t. Only the final
    image is checked (y_0's noise itself reaches several σ_0 beyond the range)."""
    if margin is None:
        return torch.zeros(len(images), dtype=torch.bool)
    pixels = images.flatten(1)
    return ((pixels < -margin) | (pixels > 1 + margin)).any(1)


def _finish(denoiser, y, cfg: SamplerConfig, diverged):
    """The optional final denoise x = f(y) (diverged samples are left as they are)."""
    if not cfg.final_denoise:
        return y
    keep = ~diverged
    if keep.any():
        y[keep] = denoiser(y[keep])
    return y
