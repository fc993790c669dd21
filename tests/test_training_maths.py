"""The maths of a training step, against closed forms: σ laws as distributions, the noise and the loss,
the validation PSNR per σ (fast; no Trainer)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from gdm.analysis.psnr import psnr_curve
from gdm.config import TrainerConfig
from gdm.models.layers import BiasFreeBatchNorm
from gdm.training.denoiser import BlindDenoiser
from gdm.training.lit_module import DenoiserModule, learning_rate
from gdm.training.loss import NonFiniteLossError, add_noise, check_finite, denoising_loss
from gdm.training.loss_weighting import LOSS_WEIGHTINGS, loss_weights, mean_weight
from gdm.training.precise_bn import recompute_statistics
from gdm.training.sigma import SIGMA_LAWS, draw_sigma

# Quantile functions Q(q) of σ on [lo, hi] for u ~ U(0, 1): the closed forms the laws promise.
QUANTILES = {
    "squared_uniform": lambda q, lo, hi: lo + (hi - lo) * q**2,
    "uniform": lambda q, lo, hi: lo + (hi - lo) * q,
    "log_uniform": lambda q, lo, hi: lo * (hi / lo) ** q,
}
CDFS = {
    "squared_uniform": lambda s, lo, hi: np.sqrt(np.clip((s - lo) / (hi - lo), 0, 1)),
    "uniform": lambda s, lo, hi: np.clip((s - lo) / (hi - lo), 0, 1),
    "log_uniform": lambda s, lo, hi: np.clip(np.log(s / lo) / np.log(hi / lo), 0, 1),
}


def _draw(law: str, lo: float, hi: float, count: int = 20000, seed: int = 0) -> np.ndarray:
    sigma = draw_sigma(law, count, lo, hi, torch.Generator().manual_seed(seed))
    assert sigma.shape == (count, 1, 1, 1) and sigma.dtype == torch.float32
    return sigma.flatten().double().numpy()


@pytest.mark.parametrize(("lr", "halve_every"), [(1e-3, 7), (3e-4, 1), (0.1, 50), (1e-3, 0)])
def test_the_closed_form_learning_rate_is_steplrs_running_product_bit_for_bit(lr, halve_every):
    """lr · 0.5^⌊s/k⌋ against torch's StepLR(step_size=k, gamma=0.5) stepped s times (k = 0: constant):
    halving is exact in binary floating point, so the two agree exactly, at every step and every halving."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    gamma = 0.5 if halve_every else 1.0
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=halve_every or 1, gamma=gamma)
    steps = max(3 * halve_every + 5, 60)  # k = 1: 60 halvings
    for step in range(steps):
        assert learning_rate(lr, halve_every, step) == optimizer.param_groups[0]["lr"], step
        optimizer.step()
        scheduler.step()
    assert learning_rate(lr, halve_every, steps) == lr * 2.0 ** -(steps // halve_every if halve_every else 0)


def test_sigma_laws_cover_the_three_documented_laws():
    assert set(SIGMA_LAWS) == set(QUANTILES)


@pytest.mark.parametrize("law", sorted(QUANTILES))
def test_sigma_law_follows_its_distribution(law):
    """Kolmogorov–Smirnov against the closed-form CDF, and five quantiles against Q(q)."""
    lo, hi = 0.2, 1.5
    sigma = _draw(law, lo, hi)
    assert lo <= sigma.min() and sigma.max() <= hi
    assert stats.kstest(sigma, lambda s: CDFS[law](s, lo, hi)).pvalue > 1e-3
    q = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
    np.testing.assert_allclose(np.quantile(sigma, q), QUANTILES[law](q, lo, hi), atol=0.015 * (hi - lo))
    others = [other for other in QUANTILES if other != law]  # the check tells the laws apart
    for other in others:
        assert stats.kstest(sigma, lambda s, o=other: CDFS[o](s, lo, hi)).pvalue < 1e-6


@pytest.mark.parametrize(("law", "lo", "hi", "median"), [
    ("squared_uniform", 0.0, 1.0, 0.25),  # σ = u²: half the draws below ¼
    ("uniform", 0.0, 1.0, 0.5),
    ("log_uniform", 0.01, 1.0, 0.1),  # √(lo·hi): equal weight per octave
])
def test_sigma_law_medians(law, lo, hi, median):
    assert np.median(_draw(law, lo, hi)) == pytest.approx(median, abs=0.01)


def test_sigma_is_the_law_of_the_generators_first_uniform_draw():
    """σ = law(u) with u the generator's next U(0, 1) draws: the step's randomness is the generator's."""
    lo, hi = 0.05, 2.0
    u = torch.rand(7, 1, 1, 1, generator=torch.Generator().manual_seed(4))
    expected = {"squared_uniform": lo + (hi - lo) * u**2, "uniform": lo + (hi - lo) * u,
                "log_uniform": torch.exp(math.log(lo) + math.log(hi / lo) * u)}
    for law, value in expected.items():
        torch.testing.assert_close(draw_sigma(law, 7, lo, hi, torch.Generator().manual_seed(4)), value)


def test_unknown_sigma_law_names_the_allowed_ones():
    with pytest.raises(ValueError, match="allowed values: squared_uniform, uniform, log_uniform"):
        draw_sigma("gamma", 3, 0.1, 1.0, torch.Generator())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_add_noise_adds_sigma_times_the_generators_normal_draws(dtype):
    x = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(0), dtype=dtype)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0], dtype=dtype).view(4, 1, 1, 1)
    y, noise = add_noise(x, sigma, torch.Generator().manual_seed(3))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)  # drawn in x's precision
    assert noise.dtype == y.dtype == dtype
    assert torch.equal(noise, sigma * z) and torch.equal(y, x + sigma * z)


def _conv(seed: int = 0) -> nn.Module:
    net = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.randn(net.weight.shape, generator=torch.Generator().manual_seed(seed)))
    return net


def test_denoising_loss_is_the_mean_squared_noise_error():
    net = _conv()
    y = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        prediction = net(y).double().numpy()
    expected = np.mean((prediction - noise.double().numpy()) ** 2)
    loss = denoising_loss(net, y, noise)
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_uniform_weighting_is_todays_loss_bit_for_bit():
    """trainer.loss_weighting=uniform (the default) adds no weight: the loss is the expression of earlier
    releases, (net(y) − σz)² averaged over everything, bit for bit."""
    assert loss_weights(TrainerConfig()) is None
    net = _conv()
    y = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(5, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(denoising_loss(net, y, noise), (net(y).float() - noise.float()).square().mean())


def test_inverse_sigma_loss_is_the_hand_computed_weighted_mean():
    """Σ_i λ(σ_i)/E[λ] · mean_pixels((net(y_i) − n_i)²) / B with λ = 1/max(σ, floor)^p, in float64 by hand."""
    cfg = TrainerConfig(loss_weighting="inverse_sigma", loss_weight_floor=0.05, loss_weight_power=1.25,
                        sigma_law="uniform", sigma_min=0.0, sigma_max=1.0)
    sigma = torch.tensor([0.0, 0.02, 0.3, 0.9]).reshape(4, 1, 1, 1)  # two below the floor
    net = _conv()
    y = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    noise = sigma * torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        error = ((net(y).double() - noise.double()) ** 2).numpy()
        loss = denoising_loss(net, y, noise, loss_weights(cfg)(sigma))
    mean = 0.05 * 0.05 ** -1.25 + (1 - 0.05 ** -0.25) / (1 - 1.25)  # E[λ] = ∫₀¹ max(σ, f)^-p dσ, σ ~ U(0, 1)
    weights = [max(s, 0.05) ** -1.25 / mean for s in (0.0, 0.02, 0.3, 0.9)]
    expected = sum(w * error[i].mean() for i, w in enumerate(weights)) / 4
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("law", "power", "closed_form"), [
    ("uniform", 1.0, 1 + math.log(100)),  # ∫₀¹ 1/max(σ, 0.01) dσ = 1 + ln(1/0.01)
    # σ = u²: ∫₀^0.1 0.01^-1.25 du + ∫_0.1^1 u^-2.5 du
    ("squared_uniform", 1.25, 0.1 * 0.01 ** -1.25 + (0.1 ** -1.5 - 1) / 1.5),
])
def test_weight_normaliser_is_the_mean_weight_under_the_sigma_law(law, power, closed_form):
    cfg = TrainerConfig(loss_weighting="inverse_sigma", loss_weight_floor=0.01, loss_weight_power=power,
                        sigma_law=law, sigma_min=0.0, sigma_max=1.0)
    assert mean_weight(cfg) == pytest.approx(closed_form, rel=1e-6)
    sigma = draw_sigma(law, 200_000, 0.0, 1.0, torch.Generator().manual_seed(0))
    assert loss_weights(cfg)(sigma).double().mean().item() == pytest.approx(1.0, rel=0.02)  # weights average 1


def test_unknown_loss_weighting_names_the_key_and_the_allowed_ones():
    with pytest.raises(ValueError, match=r"trainer.loss_weighting is 'snr'.*uniform, inverse_sigma"):
        loss_weights(TrainerConfig(loss_weighting="snr"))
    assert set(LOSS_WEIGHTINGS) == {"uniform", "inverse_sigma"}


def _bn_net() -> nn.Sequential:
    """conv → BF-BN → ReLU → conv → torch BN: both kinds of statistics, the second fed by the first."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=False), BiasFreeBatchNorm(3), nn.ReLU(),
                         nn.Conv2d(3, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)).eval()


def test_precise_bn_sets_each_statistic_to_its_mean_over_the_batches():
    """After recomputation, BF-BN's running σ is the mean over batches of the batch σ of its own input, torch
    BN's running mean/variance the mean of the batch means/unbiased variances; weights, momenta, mode kept."""
    net = _bn_net()
    before = {k: v.clone() for k, v in net.named_parameters()}
    batches = [k * torch.rand(6, 1, 5, 5, generator=torch.Generator().manual_seed(k)) for k in range(1, 5)]
    with torch.no_grad():  # the activations by hand: train-mode BN normalises by each batch's own σ
        first = [net[0](b) for b in batches]
        second = [net[3](torch.relu(h * net[1].gamma / net[1].batch_sd(h))) for h in first]
    assert recompute_statistics(net, batches) == 4
    sd = torch.stack([torch.sqrt(h.var(dim=(0, 2, 3), unbiased=False) + 1e-5) for h in first]).mean(0)
    torch.testing.assert_close(net[1].running_sd.flatten(), sd)
    torch.testing.assert_close(net[4].running_var, torch.stack([h.var(dim=(0, 2, 3)) for h in second]).mean(0))
    torch.testing.assert_close(net[4].running_mean, torch.stack([h.mean(dim=(0, 2, 3)) for h in second]).mean(0))
    assert not net.training and net[1].momentum == 0.1 and net[4].momentum == 0.1
    assert all(torch.equal(v, before[k]) for k, v in net.named_parameters())


def test_precise_bn_forgets_the_previous_statistics():
    """The first batch overwrites (momentum 1): the result depends on the batches alone, not on the buffers."""
    one, other = _bn_net(), _bn_net()
    other[1].running_sd.fill_(7.0)
    other[4].running_var.fill_(3.0)
    batches = [torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    recompute_statistics(one, batches)
    recompute_statistics(other, batches)
    for a, b in zip(one.buffers(), other.buffers(), strict=True):
        torch.testing.assert_close(a.float(), b.float())


def _rank_batches(rank: int) -> list[torch.Tensor]:
    return [(rank + 1) * torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(10 * rank + k))
            for k in range(3)]


def _precise_bn_rank(rank: int, world_size: int, tmp: str) -> None:
    """One gloo rank: precise BN of the same net on this rank's own batches; its statistics saved."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world_size)
    try:
        net = _bn_net()
        recompute_statistics(net, _rank_batches(rank))
        torch.save(dict(net.named_buffers()), f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_precise_bn_under_ddp_saves_the_mean_of_the_ranks_statistics(tmp_path):
    """Two real gloo ranks with different batches end with identical statistics: the mean of what each rank
    computes alone (one process, no group: the all-reduce is a no-op there)."""
    import torch.multiprocessing as mp

    mp.spawn(_precise_bn_rank, args=(2, str(tmp_path)), nprocs=2, join=True)
    saved = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    alone = []
    for rank in (0, 1):
        net = _bn_net()
        recompute_statistics(net, _rank_batches(rank))
        alone.append(dict(net.named_buffers()))
    for key in ("1.running_sd", "4.running_mean", "4.running_var"):
        assert torch.equal(saved[0][key], saved[1][key]), key
        torch.testing.assert_close(saved[0][key], (alone[0][key] + alone[1][key]) / 2)
        assert not torch.allclose(alone[0][key], alone[1][key])  # the ranks' own statistics differ


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_stops_on_nan_and_inf(bad):
    with pytest.raises(NonFiniteLossError, match="at step 7"):
        check_finite(torch.tensor(bad), step=7)


def test_check_finite_lets_finite_losses_through():
    for value in (0.0, 1e-30, 3.5, 1e30):
        check_finite(torch.tensor(value), step=1)


def test_validation_psnr_is_evaluations_psnr_curve_in_numpy():
    """10 log10(1 / MSE) per image of f(x + σz) = y − net(y), averaged; z drawn σ after σ from one generator
    seeded by psnr_seed (evaluation's scheme, gdm.analysis.psnr), in eval mode; the caller's mode is kept."""
    net = nn.Sequential(_conv(5), nn.Dropout(0.5))  # dropout: only eval mode gives the numpy value
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(6))
    sigmas, seed = [0.05, 0.2, 0.5], 11
    generator, expected = torch.Generator().manual_seed(seed), {}
    for sigma in sigmas:
        noisy = images + sigma * torch.randn(images.shape, generator=generator)
        with torch.no_grad():
            denoised = (noisy - net[0](noisy)).double().numpy()
        mse = ((denoised - images.double().numpy()) ** 2).mean(axis=(1, 2, 3))
        expected[f"val/psnr_train_sigma{sigma:g}"] = float(np.mean(10 * np.log10(1 / mse)))
    assert len(set(expected.values())) == 3
    module = DenoiserModule(net, TrainerConfig(), seed=99, psnr_sigmas=sigmas, psnr_seed=seed, psnr_batch=2,
                            val_batches={"train": images})
    net.train()
    result = module.validation_psnr()
    assert net.training  # the caller's mode is restored
    assert list(result) == list(expected)
    assert list(result.values()) == pytest.approx(list(expected.values()), abs=1e-4)
    net.eval()
    assert module.validation_psnr() == result and not net.training
    # the same noise and formula as evaluation's curve; equal to float rounding (batches of 2 here, one batch there:
    # the float32 sums may differ in the last bit, 1e-7 relative)
    assert result == pytest.approx({f"val/psnr_train_sigma{s:g}": v for s, v in zip(sigmas, psnr_curve(
        BlindDenoiser(net), images, sigmas, seed=seed)["output_psnr"], strict=True)}, rel=1e-6)


def test_does_not_denoise_has_one_definition_for_a_cells_flag_and_a_pairs_warning():
    """Output PSNR above input PSNR at one σ at least (strictly): the cell's validation curve {σ: PSNR} and the
    pair's curve (input and output PSNR lists) are judged by the same rule, gdm.results.beats_input."""
    from gdm.results import denoises as denoises_curve
    from gdm.training.health import beats_input, denoises, input_psnr

    sigmas = [0.05, 0.1, 0.2]
    inputs = [input_psnr(s) for s in sigmas]
    assert inputs == pytest.approx([26.0206, 20.0, 13.9794], abs=1e-4)  # −20·log10 σ
    outputs = {"worse": [p - 1 for p in inputs], "equal": inputs, "one σ better": [inputs[0] - 3, inputs[1] + 0.5,
                                                                                     inputs[2] - 1]}
    verdicts = {name: beats_input(inputs, out) for name, out in outputs.items()}
    assert verdicts == {"worse": False, "equal": False, "one σ better": True}
    for name, out in outputs.items():
        assert denoises(dict(zip(sigmas, out, strict=True))) == verdicts[name]
        assert denoises_curve({"sigma": sigmas, "input_psnr": inputs, "output_psnr": out}) == verdicts[name]
    with pytest.raises(ValueError):
        beats_input(inputs, inputs[:2])  # a curve whose lists disagree is an error, not a verdict
