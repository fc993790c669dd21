"""The Kadkhodaie–Simoncelli sampler: per-seed determinism, divergence flags, convergence to a memorized image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import gdm.sample
from gdm.config import SamplerConfig
from gdm.sample import SeedNoise, sample, step_size
from gdm.seeds import derive_seed


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
    """`inner`, except that its call number `call` (1-based) returns NaN in one pixel of batch row `row`
    (one value is enough to make a sample non-finite); counts its calls."""

    def __init__(self, inner: nn.Module, call: int | None = None, row: int = 0):
        super().__init__()
        self.inner, self.call, self.row, self.calls = inner, call, row, 0

    def forward(self, y):
        self.calls += 1
        out = self.inner(y)
        if self.calls == self.call:
            out = out.clone()
            out[self.row, 0, 0, 0] = float("nan")
        return out


class CountRows(nn.Module):
    """`inner`, counting the images it is asked to denoise."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.rows = inner, 0

    def forward(self, y):
        self.rows += len(y)
        return self.inner(y)


class AddConstant(nn.Module):
    """f(y) = y + c: the residual is c everywhere, so σ_t = |c| exactly (for dyadic c and y)."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def forward(self, y):
        return y + self.c


def _stream(seed: int, shape, draws: int) -> list[torch.Tensor]:
    """The documented noise of a seed: draws 0 … draws−1 (y_0's, then z_1, z_2, …) of one CPU generator
    seeded with derive_seed("sample", seed)."""
    generator = torch.Generator().manual_seed(derive_seed("sample", seed))
    return [torch.randn(tuple(shape), generator=generator) for _ in range(draws)]


def _old_noise(seed: int, step: int, shape) -> torch.Tensor:
    """The noise of gdm's sampler before SeedNoise: a fresh CPU generator per (seed, step), keyed by
    SeedSequence([seed, step]). Kept here only as the reference of the distribution test."""
    key = int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0]) >> 1
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(key))


class OldNoise:
    """SeedNoise's interface over `_old_noise`: the k-th call draws step k of every held seed (× `scale`
    after the first call, to test that a wrong γ_t is detected)."""

    def __init__(self, seeds, shape, device="cpu", scale: float = 1.0):
        self.seeds, self.shape, self.device, self.scale, self.calls = list(seeds), tuple(shape), device, scale, 0

    def draw(self) -> torch.Tensor:
        z = torch.stack([_old_noise(s, self.calls, self.shape) for s in self.seeds]).to(self.device)
        self.calls += 1
        return z if self.calls == 1 else self.scale * z

    def keep(self, rows) -> None:
        self.seeds = [self.seeds[i] for i in rows]


class HalfNoise(SeedNoise):
    """SeedNoise with z_t halved (y_0 untouched): the sampler then injects γ_t / 2."""

    def draw(self) -> torch.Tensor:
        first, self.drawn = not getattr(self, "drawn", False), True
        return super().draw() if first else 0.5 * super().draw()


def _target(seed=0, size=8):
    return torch.rand((1, size, size), generator=torch.Generator().manual_seed(seed))


def test_seed_noise_is_each_seeds_own_stream():
    shape, seeds = (2, 5, 5), [3, 2**40, 0]
    noise = SeedNoise(seeds, shape)
    drawn = [noise.draw() for _ in range(3)]
    for k, seed in enumerate(seeds):
        assert all(torch.equal(d[k], z) for d, z in zip(drawn, _stream(seed, shape, 3), strict=True))
    assert not torch.equal(drawn[0][0], drawn[1][0]) and not torch.equal(drawn[0][0], drawn[0][2])
    noise.keep([2])  # seeds 3 and 2**40 stop: seed 0 draws on from its own generator
    assert torch.equal(noise.draw()[0], _stream(0, shape, 4)[3])
    alone = SeedNoise([0], shape)
    assert torch.equal(torch.stack([alone.draw()[0] for _ in range(3)]), torch.stack([d[2] for d in drawn]))


def test_noise_is_standard_normal_and_independent_across_steps():
    noise = SeedNoise([9], (64, 64))
    z = torch.stack([noise.draw()[0].flatten() for t in range(4)]).double()
    assert z.mean().abs() < 0.02 and (z.std() - 1).abs() < 0.02
    correlation = torch.corrcoef(z)
    assert (correlation - torch.eye(4, dtype=torch.float64)).abs().max() < 0.05


def test_samples_identical_across_batch_sizes_and_orders():
    cfg = SamplerConfig(h0=0.2, beta=0.5, max_steps=60)
    den = ShrinkToward(_target(), c=0.7)
    seeds = [5, 1, 9, 2, 7]
    whole = sample(den, seeds, (1, 8, 8), cfg)
    pieces = sample(den, seeds, (1, 8, 8), cfg, batch_size=2)
    assert torch.equal(whole.images, pieces.images) and torch.equal(whole.steps, pieces.steps)
    reversed_run = sample(den, seeds[::-1], (1, 8, 8), cfg, batch_size=3)
    assert torch.equal(reversed_run.images.flip(0), whole.images)


@pytest.mark.parametrize("schedule", ["constant", "increasing"])
@pytest.mark.parametrize("final_denoise", [False, True])
def test_every_step_equals_the_update_by_hand(schedule, final_denoise):
    """y_0 = mean + σ_0 z_0; y_t = y_{t−1} + h_t d_t + γ_t z_t with d_t = f(y_{t−1}) − y_{t−1},
    σ_t = ‖d_t‖/√D, γ_t = √((1 − βh_t)² − (1 − h_t)²) σ_t and z_t draw t of the seed's generator; then f(y_T)."""
    x, c, shape, steps = _target(2), 0.6, (1, 8, 8), 6
    cfg = SamplerConfig(h0=0.2, beta=0.3, sigma_0=0.8, mean=0.4, sigma_end=1e-6, max_steps=steps,
                        schedule=schedule, final_denoise=final_denoise)
    seeds = [3, 8, 21]
    out = sample(ShrinkToward(x, c), seeds, shape, cfg)
    x = x.double()
    for k, seed in enumerate(seeds):
        z = [draw.double() for draw in _stream(seed, shape, steps + 1)]
        y = 0.4 + 0.8 * z[0]
        for t in range(1, steps + 1):
            h = 0.2 if schedule == "constant" else 0.2 * t / (1 + 0.2 * (t - 1))
            d = (x + c * (y - x)) - y
            gamma = math.sqrt((1 - 0.3 * h) ** 2 - (1 - h) ** 2) * d.pow(2).mean().sqrt()
            y = y + h * d + gamma * z[t]
        sigma = ((x + c * (y - x)) - y).pow(2).mean().sqrt()  # measured on the final y_T
        expected = x + c * (y - x) if final_denoise else y
        torch.testing.assert_close(out.images[k].double(), expected, atol=2e-6, rtol=1e-5)
        assert out.final_sigma[k].item() == pytest.approx(sigma.item(), rel=1e-5)
    assert out.steps.tolist() == [steps] * 3 and not out.diverged.any()
    assert out.steps.dtype == torch.long and out.diverged.dtype == torch.bool
    assert not torch.allclose(out.images[0], out.images[1])  # different seeds, different samples


def test_stopping_and_divergence_bounds_are_inclusive_of_sigma():
    """Stop once σ_t ≤ σ_∞; diverged only if σ_t > the bound. f(y) = y + ½ from y_0 = 0: σ_t = ½ exactly."""
    base = {"h0": 0.5, "beta": 1.0, "sigma_0": 0.0, "mean": 0.0, "final_denoise": False}
    at_end = sample(AddConstant(0.5), [0, 1], (1, 4, 4), SamplerConfig(**base, sigma_end=0.5, max_steps=5))
    assert at_end.steps.tolist() == [0, 0] and at_end.final_sigma.tolist() == [0.5, 0.5]
    assert (at_end.images == 0).all() and not at_end.diverged.any()
    at_bound = sample(AddConstant(0.5), [0], (1, 4, 4),
                      SamplerConfig(**base, sigma_end=0.25, diverge_sigma=0.5, max_steps=3))
    assert at_bound.steps.tolist() == [3] and not at_bound.diverged.any()
    assert (at_bound.images == 3 * 0.5 * 0.5).all() and at_bound.final_sigma.tolist() == [0.5]


def test_finished_samples_are_not_denoised_again():
    """Rows evaluated: each sample at t = 1 … steps + 1 (the last one measures), then one final denoise."""
    cfg = SamplerConfig(h0=0.1, beta=0.5, sigma_end=0.01, max_steps=500)
    counter = CountRows(ShrinkToward(_target(1)))
    out = sample(counter, range(6), (1, 8, 8), cfg)
    assert len(set(out.steps.tolist())) > 1  # the samples stop at different steps
    assert counter.rows == int((out.steps + 1).sum()) + 6
    for seed in (0, 5):  # a sample does not depend on when the others stopped (they stop drawing then)
        assert torch.equal(sample(counter, [seed], (1, 8, 8), cfg).images[0], out.images[seed])


@pytest.mark.parametrize("sync_every", [3, 7])
def test_checking_for_stopped_samples_less_often_changes_nothing_but_the_rows(sync_every):
    """Between host checks stopped samples ride along under a mask: same samples, a few more rows."""
    cfg = SamplerConfig(h0=0.1, beta=0.5, sigma_end=0.01, max_steps=500)
    every_step = sample(ShrinkToward(_target(1)), range(6), (1, 8, 8), cfg)
    counter = CountRows(ShrinkToward(_target(1)))
    sparse = sample(counter, range(6), (1, 8, 8), cfg, sync_every=sync_every)
    for field in ("images", "steps", "diverged", "final_sigma"):
        assert torch.equal(getattr(sparse, field), getattr(every_step, field)), field
    assert counter.rows > int((every_step.steps + 1).sum()) + 6
    with pytest.raises(ValueError, match="sync_every is 0; it must be ≥ 1"):
        sample(counter, range(2), (1, 8, 8), cfg, sync_every=0)


def test_progress_bar_only_when_asked(capsys):
    cfg = SamplerConfig(h0=0.5, beta=1.0, max_steps=2)
    quiet = sample(ShrinkToward(_target(size=4)), [0, 1], (1, 4, 4), cfg)
    assert capsys.readouterr().err == ""
    shown = sample(ShrinkToward(_target(size=4)), [0, 1], (1, 4, 4), cfg, progress=True)
    bar = capsys.readouterr().err
    assert "sampling" in bar and "batch/s" in bar  # counted in batches
    assert torch.equal(quiet.images, shown.images)


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
    rms = SeedNoise(seeds, shape).draw().flatten(1).pow(2).mean(1).sqrt()
    bound = 2 ** (max_steps + 1) * float(rms.topk(2).values.mean())
    cfg = SamplerConfig(h0=0.5, beta=1.0, mean=0.0, max_steps=max_steps, final_denoise=False, diverge_sigma=bound)
    out = sample(Scale(3.0), seeds, shape, cfg)
    assert torch.equal(out.diverged, rms == rms.max())
    assert (out.steps == max_steps).all()  # every σ_t up to t = max_steps was within the bound
    assert (out.final_sigma[out.diverged] > bound).all() and (out.final_sigma[~out.diverged] <= bound).all()
    assert torch.isfinite(out.images[~out.diverged]).all()


def test_a_sample_that_blows_up_in_amplitude_is_flagged_only_under_the_pixel_bound():
    # The denoiser's one fixed point is a blown-up image (pixel std ≈ 6, as patches16's up to 70): σ_t
    # falls below σ_∞ as for any converging sample, so only the amplitude bound can flag it.
    target = _target()
    blown_up = 0.5 + 20 * (target - 0.5)
    base = {"h0": 0.2, "beta": 0.5, "max_steps": 200}
    unbounded = sample(ShrinkToward(blown_up, c=0.5), range(3), (1, 8, 8), SamplerConfig(**base))
    assert not unbounded.diverged.any() and (unbounded.final_sigma <= 0.05).all()  # σ_t alone passes it
    bounded = SamplerConfig(**base, diverge_pixel_margin=1.0)
    assert sample(ShrinkToward(blown_up, c=0.5), range(3), (1, 8, 8), bounded).diverged.all()
    assert not sample(ShrinkToward(target, c=0.5), range(3), (1, 8, 8), bounded).diverged.any()


@pytest.mark.parametrize("pixel, flagged", [(2.0, False), (2.01, True), (-1.0, False), (-1.01, True)])
def test_pixel_bound_is_strict_beyond_the_data_range(pixel, flagged):
    x = _target().clone()
    x[0, 0, 0] = pixel  # the final denoise returns x exactly
    cfg = SamplerConfig(h0=0.5, beta=0.5, max_steps=5, diverge_pixel_margin=1.0)
    assert sample(ShrinkToward(x), [0], (1, 8, 8), cfg).diverged.tolist() == [flagged]


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


def test_a_sample_diverging_midway_leaves_the_others_untouched():
    cfg = SamplerConfig(h0=0.2, beta=0.5, max_steps=60)
    inner, seeds, shape = ShrinkToward(_target(), c=0.7), range(3), (1, 8, 8)
    clean = sample(inner, seeds, shape, cfg)
    out = sample(PoisonCall(inner, call=3, row=1), seeds, shape, cfg)  # sample 1's residual is NaN at t = 3
    assert out.diverged.tolist() == [False, True, False]
    assert torch.equal(out.images[[0, 2]], clean.images[[0, 2]])  # the others still get their final denoise
    assert out.steps[1] == 2 and torch.isnan(out.final_sigma[1])
    two_steps = SamplerConfig(h0=0.2, beta=0.5, max_steps=2, final_denoise=False)
    assert torch.equal(out.images[1], sample(inner, [1], shape, two_steps).images[0])  # y_2, left as it was


def test_step_size_schedules():
    cfg = SamplerConfig(h0=0.1, schedule="increasing")
    assert step_size(cfg, 1) == 0.1
    assert step_size(cfg, 10) == pytest.approx(1 / 1.9)  # h_0 t / (1 + h_0 (t − 1)) = 1 / 1.9
    assert step_size(cfg, 100) == pytest.approx(10 / 10.9)
    assert 0.1 < step_size(cfg, 10) < step_size(cfg, 100) < 1.0
    assert [step_size(SamplerConfig(h0=0.1), t) for t in (1, 10, 100)] == [0.1, 0.1, 0.1]


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


def test_authors_loop_makes_one_more_update_after_the_stop_with_the_increasing_schedule():
    x = _target(3)
    den = ShrinkToward(x, c=0.5)  # residual f(y) − y = −(y − x)/2: σ_t halves with y − x
    plain = SamplerConfig(h0=0.3, beta=1.0, sigma_end=0.05, schedule="increasing", final_denoise=False, max_steps=200)
    authors = SamplerConfig(
        **{**plain.__dict__, "schedule": "constant", "authors_loop": True}
    )  # implies increasing h_t
    first, last = sample(den, [0, 1], (1, 8, 8), plain), sample(den, [0, 1], (1, 8, 8), authors)
    assert torch.equal(last.steps, first.steps + 1)
    # β = 1 injects no noise, so the extra step is y + h_t (f(y) − y) with t = steps + 1, from the stopped y
    t = int(first.steps[0]) + 1
    expected = first.images[0] + step_size(authors, t) * (den(first.images[:1])[0] - first.images[0])
    torch.testing.assert_close(last.images[0], expected)
    after = float((den(last.images[:1]) - last.images[:1]).pow(2).mean().sqrt())
    assert after < float(last.final_sigma[0]) <= authors.sigma_end  # the extra update went on below σ_∞
    assert step_size(authors, 5) == step_size(plain, 5) != SamplerConfig(h0=0.3).h0


class ShrinkToMean(nn.Module):
    """f(y) = μ + a (y − μ): the blind denoiser of a linear-Gaussian case whose sampler law is known. With
    e = y − μ, d_t = −(1 − a) e and γ_t² = c (1 − a)² ‖e‖²/D, c = (1 − βh)² − (1 − h)², so each pixel has
    E[e_t²] = ρ E[e_{t−1}²] exactly (z_t is independent of e_{t−1}), ρ = (1 − h (1 − a))² + c (1 − a)²."""

    def __init__(self, mean: float, a: float):
        super().__init__()
        self.mean, self.a = mean, a

    def forward(self, y):
        return self.mean + self.a * (y - self.mean)


def _linear_gaussian_samples(noise_class, monkeypatch) -> torch.Tensor:
    """[2000, 64]: 10 steps of the sampler for seeds 0 … 1999 with `noise_class` as its randomness."""
    monkeypatch.setattr(gdm.sample, "SeedNoise", noise_class)
    cfg = SamplerConfig(h0=0.2, beta=0.2, sigma_0=1.0, mean=0.5, sigma_end=1e-3, max_steps=10, final_denoise=False)
    out = sample(ShrinkToMean(0.5, 0.5), range(2000), (1, 8, 8), cfg)
    assert (out.steps == 10).all() and not out.diverged.any()  # no sample stopped early: all run T = 10 steps
    return out.images.flatten(1).double()


def _same_law(new: torch.Tensor, old: torch.Tensor) -> dict[str, bool]:
    """The checks of the distribution test, each with the tolerance it is held to (2000 samples, 64 pixels)."""
    rho = (1 - 0.2 * 0.5) ** 2 + ((1 - 0.2 * 0.2) ** 2 - (1 - 0.2) ** 2) * 0.5**2  # 0.8804
    variance = new.var(0)  # per pixel, over samples
    return {
        "mean": abs(float(new.mean() - old.mean())) < 0.01,  # ≈ 5 standard errors (σ ≈ 0.53, 128 000 values)
        "std": abs(float(new.std() / old.std()) - 1) < 0.03,
        "per-pixel variance": float((variance / old.var(0) - 1).abs().mean()) < 0.06,  # 3% error per pixel
        "known variance ρ^T": abs(float(variance.mean()) / rho**10 - 1) < 0.05,
        "KS, pixel 0": stats.ks_2samp(new[:, 0].numpy(), old[:, 0].numpy()).pvalue > 0.01,
        "KS, pixel 37": stats.ks_2samp(new[:, 37].numpy(), old[:, 37].numpy()).pvalue > 0.01,
    }


def test_per_seed_generators_sample_the_same_law_as_per_step_generators(monkeypatch):
    """Changing how the noise is keyed changes samples, not their distribution: against the old per-(seed, step)
    generators (kept here as reference) every statistic agrees, and the known per-pixel variance ρ^T holds;
    z_t halved (γ_t / 2) fails the same checks, so they can see a wrong noise."""
    old = _linear_gaussian_samples(OldNoise, monkeypatch)
    new = _linear_gaussian_samples(SeedNoise, monkeypatch)
    assert not torch.equal(new, old)  # different keying, different values
    assert all(_same_law(new, old).values()), _same_law(new, old)
    assert all(_same_law(old, new).values()), _same_law(old, new)
    half = _same_law(_linear_gaussian_samples(HalfNoise, monkeypatch), old)
    assert not any(half[check] for check in ("std", "per-pixel variance", "known variance ρ^T", "KS, pixel 0"))
