"""The Kadkhodaie–Simoncelli sampler: per-seed determinism, divergence flags, convergence to a memorized image."""

from __future__ import annotations

import torch
from torch import nn

from gdm.config import SamplerConfig
from gdm.sample import noise, sample, step_size


class ShrinkToward(nn.Module):
    """f(y) = x + c (y − x): a denoiser whose only fixed point is x (the optimal denoiser of one image at c = 0)."""

    def __init__(self, x: torch.Tensor, c: float = 0.0):
        super().__init__()
        self.x, self.c = x, c

    def forward(self, y):
        return self.x + self.c * (y - self.x)


class Scale(nn.Module):
    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, y):
        return self.a * y


class PoisonCall(nn.Module):
    """`inner`, except that its call number `call` (1-based) returns NaN in batch row `row`; counts its calls."""

    def __init__(self, inner: nn.Module, call: int | None = None, row: int = 0):
        super().__init__()
        self.inner, self.call, self.row, self.calls = inner, call, row, 0

    def forward(self, y):
        self.calls += 1
        out = self.inner(y)
        if self.calls == self.call:
            out = out.clone()
            out[self.row] = float("nan")
        return out


def _target(seed=0, size=8):
    return torch.rand((1, size, size), generator=torch.Generator().manual_seed(seed))


def test_noise_depends_on_seed_and_step_only():
    assert torch.equal(noise(3, 7, (1, 4, 4)), noise(3, 7, (1, 4, 4)))
    assert not torch.equal(noise(3, 7, (1, 4, 4)), noise(3, 8, (1, 4, 4)))
    assert not torch.equal(noise(3, 7, (1, 4, 4)), noise(4, 7, (1, 4, 4)))


def test_samples_identical_across_batch_sizes_and_orders():
    cfg = SamplerConfig(h0=0.2, beta=0.5, max_steps=60)
    den = ShrinkToward(_target(), c=0.7)
    seeds = [5, 1, 9, 2, 7]
    whole = sample(den, seeds, (1, 8, 8), cfg)
    pieces = sample(den, seeds, (1, 8, 8), cfg, batch_size=2)
    assert torch.equal(whole.images, pieces.images) and torch.equal(whole.steps, pieces.steps)
    reversed_run = sample(den, seeds[::-1], (1, 8, 8), cfg, batch_size=3)
    assert torch.equal(reversed_run.images.flip(0), whole.images)


def test_different_seeds_give_different_samples():
    cfg = SamplerConfig(h0=0.2, beta=0.5, max_steps=5, final_denoise=False)
    out = sample(ShrinkToward(_target(), 0.9), [0, 1], (1, 8, 8), cfg)
    assert not torch.allclose(out.images[0], out.images[1])


def test_optimal_denoiser_of_one_image_returns_that_image():
    # No final denoise (it would return x exactly): the iterations themselves must reach x. With f(y) = x,
    # σ_t = ‖x − y_{t−1}‖/√D, so stopping at σ_t ≤ σ_∞ = 0.01 leaves an error ≤ 0.01 against rms(x) ≈ 0.58.
    x = _target(1)
    cfg = SamplerConfig(h0=0.1, beta=0.5, sigma_end=0.01, max_steps=500, final_denoise=False)
    out = sample(ShrinkToward(x), range(4), (1, 8, 8), cfg)
    cos = torch.nn.functional.cosine_similarity(out.images.flatten(1), x.flatten()[None])
    assert (cos > 0.999).all() and not out.diverged.any()
    assert (out.final_sigma <= cfg.sigma_end).all()
    assert (out.steps < 500).all()  # stopped because σ_t fell below σ_∞, not at the cap


def test_expanding_denoiser_is_flagged_diverged_and_stats_stay_finite():
    cfg = SamplerConfig(h0=0.5, beta=0.5, max_steps=200, diverge_sigma=10.0)
    out = sample(Scale(2.0), range(3), (1, 8, 8), cfg)
    assert out.diverged.all()
    # Flagged for σ_t above the bound, caught long before overflow: the recorded σ, images and steps stay usable.
    assert torch.isfinite(out.final_sigma).all() and (out.final_sigma > cfg.diverge_sigma).all()
    assert torch.isfinite(out.images).all()
    assert ((out.steps > 0) & (out.steps < 200)).all()


def test_sigma_past_the_bound_after_the_last_step_is_flagged_diverged():
    # Scale(3), h = 1/2, β = 1 (so γ_t = 0), mean 0: y_t = 2^t y_0 and σ_t = 2 rms(y_{t−1}) = 2^t rms(y_0).
    # The bound lies between the two largest σ of the final y_T, above every σ_t for t ≤ T.
    shape, max_steps, seeds = (1, 8, 8), 4, range(4)
    rms = torch.stack([noise(s, 0, shape).pow(2).mean().sqrt() for s in seeds])
    bound = 2 ** (max_steps + 1) * float(rms.topk(2).values.mean())
    cfg = SamplerConfig(h0=0.5, beta=1.0, mean=0.0, max_steps=max_steps, final_denoise=False, diverge_sigma=bound)
    out = sample(Scale(3.0), seeds, shape, cfg)
    assert torch.equal(out.diverged, rms == rms.max())
    assert (out.steps == max_steps).all()  # every σ_t up to t = max_steps was within the bound
    assert (out.final_sigma[out.diverged] > bound).all() and (out.final_sigma[~out.diverged] <= bound).all()
    assert torch.isfinite(out.images[~out.diverged]).all()


def test_non_finite_final_denoise_is_flagged_diverged():
    cfg = SamplerConfig(h0=0.2, beta=0.5, max_steps=60)
    inner, seeds = ShrinkToward(_target(), c=0.7), range(3)
    counter = PoisonCall(inner)
    clean = sample(counter, seeds, (1, 8, 8), cfg)
    assert not clean.diverged.any()
    out = sample(PoisonCall(inner, call=counter.calls, row=1), seeds, (1, 8, 8), cfg)  # the final denoise's call
    assert out.diverged.tolist() == [False, True, False]
    keep = ~out.diverged
    assert torch.equal(out.images[keep], clean.images[keep]) and torch.equal(out.steps, clean.steps)


def test_increasing_schedule():
    cfg = SamplerConfig(h0=0.1, schedule="increasing")
    assert step_size(cfg, 1) == 0.1
    assert 0.1 < step_size(cfg, 10) < step_size(cfg, 100) < 1.0


def test_bias_free_unet_samples_do_not_depend_on_the_batch():
    from gdm.config import ModelConfig
    from gdm.models import build_model

    torch.manual_seed(0)
    net = build_model(ModelConfig(name="bf_unet", channels=4, blocks=1), 8).eval()

    class Denoiser(nn.Module):
        def forward(self, y):
            return y - net(y)

    cfg = SamplerConfig(h0=0.2, beta=0.5, max_steps=20)
    whole = sample(Denoiser(), range(6), (1, 8, 8), cfg)
    pieces = sample(Denoiser(), range(6), (1, 8, 8), cfg, batch_size=1)
    assert torch.allclose(whole.images, pieces.images, atol=1e-5)
    assert torch.equal(whole.steps, pieces.steps)
