"""The blind Gaussian denoiser: equal to a direct integration over σ, close to the oracle Wiener filter where σ
is easy to read off y, never better than it on average; its PSNR curves use the models' noise draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import integrate

from gdm.analysis import psnr
from gdm.analysis.blind_gaussian import (
    TAIL_NODES,
    BlindGaussianDenoiser,
    blind_gaussian_psnr_curves,
    node_count,
    sigma_nodes,
)
from gdm.analysis.controls import GaussianModel, WienerDenoiser, fit_gaussian


def gaussian(dim: int, seed: int, scale: float = 0.2):
    """A random N(μ, C) as a GaussianModel of 1 × 1 × dim images, and a sampler of it."""
    rng = np.random.default_rng(seed)
    factor = rng.normal(0, scale, size=(dim, dim)) / np.sqrt(dim)
    mean = rng.uniform(0.3, 0.7, dim)
    images = torch.from_numpy(rng.normal(size=(4000, dim)) @ factor.T + mean).view(-1, 1, 1, dim)
    return fit_gaussian([images])


def direct_posterior_mean(model, y: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """∫ p(σ) N(y; μ, C + σ²I) W_σ(y) dσ / ∫ p(σ) N(y; μ, C + σ²I) dσ by adaptive quadrature over σ, with C
    rebuilt from the model and solved directly (no eigenbasis). σ = lo + (hi − lo) u², u ~ U(0, 1), has density
    ∝ (σ − lo)^(−½) on (lo, hi): quad's algebraic weight takes the endpoint singularity."""
    u, lam = model.eigenvectors.numpy(), model.eigenvalues.numpy()
    cov, mu = (u * lam) @ u.T, model.mean.numpy()

    def likelihood(sigma):
        total = cov + sigma**2 * np.eye(len(mu))
        _, logdet = np.linalg.slogdet(total)
        return np.exp(-0.5 * (logdet + (y - mu) @ np.linalg.solve(total, y - mu)))

    def wiener(sigma):
        return mu + cov @ np.linalg.solve(cov + sigma**2 * np.eye(len(mu)), y - mu)

    def quad(f):
        return integrate.quad(f, lo, hi, weight="alg", wvar=(-0.5, 0), epsabs=1e-12, epsrel=1e-10, limit=200)[0]

    norm = quad(likelihood)
    return np.array([quad(lambda s, k=k: likelihood(s) * wiener(s)[k]) for k in range(len(mu))]) / norm


@pytest.mark.parametrize("lo, hi", [(0.0, 1.0), (0.1, 0.5)])
def test_equals_direct_integration_over_sigma(lo, hi):
    model = gaussian(3, seed=0)
    rng = np.random.default_rng(1)
    x = model.mean.numpy() + rng.normal(0, 0.1, size=(4, 3))
    y = x + np.array([0.02, 0.15, 0.4, 0.9])[:, None] * rng.normal(size=(4, 3))
    blind = BlindGaussianDenoiser(model, sigma_min=lo, sigma_max=hi)
    ours = blind(torch.from_numpy(y).view(4, 1, 1, 3)).flatten(1).numpy()
    expected = np.stack([direct_posterior_mean(model, row, lo, hi) for row in y])
    np.testing.assert_allclose(ours, expected, atol=1e-6, rtol=0)


def test_resolves_the_narrow_posterior_of_many_pixels_at_small_sigma():
    """At 80 × 80 pixels the posterior over σ is ≈ 0.9 % wide. The panels, one posterior width each, equal a rule
    three times finer to 1e-12; 512 Gauss–Legendre nodes uniform in u (the first rule) missed it by ≳ 1e-5."""
    pixels = 6400
    eigenvalues = 0.05 / torch.arange(1, pixels + 1, dtype=torch.float64)  # a 1/k spectrum, as photographs have
    model = GaussianModel(torch.full((pixels,), 0.4, dtype=torch.float64), eigenvalues,
                          torch.eye(pixels, dtype=torch.float64), (1, 80, 80))  # the eigenbasis does not enter σ's law
    generator = torch.Generator().manual_seed(4)
    x = model.mean + eigenvalues.sqrt() * torch.randn(pixels, generator=generator, dtype=torch.float64)
    sigma = torch.tensor([0.005, 0.01, 0.02, 0.05], dtype=torch.float64)[:, None]
    y = (x + sigma * torch.randn(4, pixels, generator=generator, dtype=torch.float64)).view(4, 1, 80, 80)
    ours, finer = (BlindGaussianDenoiser(model, resolution=r)(y) for r in (1, 3))
    assert (ours - finer).abs().max().item() < 1e-12
    uniform = BlindGaussianDenoiser(model)
    u, weights = np.polynomial.legendre.leggauss(512)
    uniform.sigma, uniform.log_prior = torch.from_numpy((u + 1) / 2) ** 2, torch.from_numpy(np.log(weights / 2))
    uniform.variance = eigenvalues[None, :] + uniform.sigma[:, None] ** 2
    assert (uniform(y) - finer).abs().max().item() > 1e-5


def mse_per_sample(denoiser, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (denoiser(y) - x).flatten(1).pow(2).mean(1)


def test_close_to_the_oracle_where_sigma_is_easy_to_tell_and_never_better_on_average():
    model = gaussian(64, seed=2, scale=0.1)  # eigenvalues ≲ 0.01: the noise dominates from σ ≈ 0.1 on
    generator = torch.Generator().manual_seed(0)
    factor = model.eigenvectors * model.eigenvalues.sqrt()
    x = (model.mean + torch.randn(2000, 64, generator=generator, dtype=torch.float64) @ factor.T).view(-1, 1, 1, 64)
    blind, excess = BlindGaussianDenoiser(model), {}
    for sigma in (0.02, 0.1, 0.3, 0.6, 0.9):
        y = x + sigma * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        difference = mse_per_sample(blind, x, y) - mse_per_sample(WienerDenoiser(model, sigma), x, y)
        standard_error = difference.std() / len(difference) ** 0.5
        assert difference.mean() > -3 * standard_error, sigma  # the oracle is the MMSE at known σ
        excess[sigma] = float(difference.mean() / mse_per_sample(WienerDenoiser(model, sigma), x, y).mean())
    # Large σ: σ is read off ‖y − μ‖² ≈ Σλ + Dσ² almost exactly, and the excess MSE over the oracle vanishes.
    assert excess[0.9] < 0.002 and excess[0.9] < excess[0.6] < excess[0.3] < excess[0.1]


def test_quadrature_nodes_follow_the_law():
    sigma, log_q = sigma_nodes("squared_uniform", 0.0, 1.0, pixels=64)
    assert torch.exp(log_q).sum().item() == pytest.approx(1.0)
    assert (sigma > 0).all() and (sigma < 1).all() and (sigma.diff() > 0).all()
    assert (torch.exp(log_q) * sigma).sum().item() == pytest.approx(1 / 3, abs=1e-12)  # E[u²] = 1/3, exact per panel
    assert len(sigma) == node_count(0.0, 1.0, 64)
    ratio = sigma[TAIL_NODES:].log().diff().max().item()  # node spacing in log σ above the floor
    assert sigma[TAIL_NODES] < 1e-3 * 1.2 and ratio < 1 / (2 * 64) ** 0.5  # finer than the posterior's width
    with pytest.raises(ValueError, match="sigma law is 'cubic'; allowed values: squared_uniform"):
        sigma_nodes("cubic", 0.0, 1.0, 8)
    with pytest.raises(ValueError, match=r"sigma range is \[0.5, 0.2\]"):
        sigma_nodes("uniform", 0.5, 0.2, 8)


def test_psnr_curves_use_the_models_noise_draws():
    images = torch.rand(40, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    train, test = {"A": images[:10], "B": images[10:20]}, images[20:]
    model = fit_gaussian([images])
    sigmas, run = [0.05, 0.2, 0.5], {"images": 8, "seed": 3, "batch_size": 5, "device": "cpu"}
    curves = blind_gaussian_psnr_curves(model, train, test, sigmas, **run)
    direct = psnr.psnr_curve(BlindGaussianDenoiser(model), train["B"][:8], sigmas, seed=3, batch_size=5)
    assert curves["B"]["train"] == direct
    oracle = psnr.curves_per_split({"A": lambda s: WienerDenoiser(model, s)}, train, test, sigmas, **run)
    assert curves["A"]["test"]["input_psnr"] == oracle["A"]["test"]["input_psnr"]  # the same noise
