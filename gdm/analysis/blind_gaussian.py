"""The blind Bayes-optimal denoiser of a Gaussian: the reference a blind network should be compared with
(docs/SCIENCE.md, Blind Gaussian reference).

The networks are blind: they see y = x + σz with σ drawn from the training law and never told. The Wiener
filter of `controls` knows σ, so it is a bound no blind denoiser can reach on Gaussian data. The fair
reference is the MMSE denoiser of the same problem: x ~ N(μ, C), σ from the training law, independent of x,

    E[x | y] = ∫ p(σ | y) E[x | y, σ] dσ = ∫ p(σ | y) W_σ(y) dσ,   W_σ(y) = μ + C (C + σ²I)⁻¹ (y − μ),
    p(σ | y) ∝ p(σ) N(y; μ, C + σ²I).

In C's eigenbasis (z = Uᵀ(y − μ)) every W_σ is diagonal with gains λ_k / (λ_k + σ²), and
log N(y; μ, C + σ²I) = −½ Σ_k [log(λ_k + σ²) + z_k² / (λ_k + σ²)] + const. The integral runs over u, σ = law(u),
u ~ U(0, 1) (gdm.training.sigma), by Gauss–Legendre quadrature; the posterior weights of the nodes come from a
log-sum-exp (softmax), all in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from gdm.analysis import psnr
from gdm.analysis.controls import GaussianModel
from gdm.training.sigma import SIGMA_LAWS

QUADRATURE_NODES = 512  # Gauss–Legendre nodes in u; the posterior over σ narrows as 1/√(2D), see sigma_nodes


def sigma_nodes(law: str, sigma_min: float, sigma_max: float, nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(σ_j, log q_j) [J] float64: Gauss–Legendre nodes u_j on (0, 1), σ_j = law(u_j), weights q_j (Σ q_j = 1).

    The nodes are interior (σ_j > σ_min even at σ_min = 0). For D pixels the posterior over σ has a relative
    width ≈ 1/√(2D) (0.9 % at 80 × 80), narrower than the node spacing at small σ: there the integral is
    effectively the Wiener filter at the best node, within a node's spacing of the true σ."""
    if law not in SIGMA_LAWS:
        raise ValueError(f"sigma law is {law!r}; allowed values: {', '.join(SIGMA_LAWS)}")
    if not 0 <= sigma_min < sigma_max:
        raise ValueError(f"sigma range is [{sigma_min}, {sigma_max}]; it needs 0 ≤ sigma_min < sigma_max")
    u, weights = np.polynomial.legendre.leggauss(nodes)  # on (−1, 1), weights summing to 2
    u = torch.from_numpy((u + 1) / 2)
    return SIGMA_LAWS[law](u, sigma_min, sigma_max).double(), torch.from_numpy(np.log(weights / 2))


class BlindGaussianDenoiser(nn.Module):
    """x̂(y) = μ + U diag(E[λ / (λ + σ²) | y]) Uᵀ (y − μ): the MMSE denoiser of N(μ, C) under unknown σ ~ law."""

    def __init__(self, model: GaussianModel, *, law: str = "squared_uniform", sigma_min: float = 0.0,
                 sigma_max: float = 1.0, nodes: int = QUADRATURE_NODES):
        super().__init__()
        sigma, self.log_prior = sigma_nodes(law, sigma_min, sigma_max, nodes)
        self.model, self.sigma = model, sigma
        self.variance = model.eigenvalues[None, :] + sigma[:, None] ** 2  # [J, D]: λ_k + σ_j²

    def posterior(self, z: torch.Tensor) -> torch.Tensor:
        """p(σ_j | y) [B, J] from the eigen-coordinates z [B, D]: softmax of log q_j + log N(y; μ, C + σ_j² I)."""
        variance, log_prior = self.variance.to(z.device), self.log_prior.to(z.device)
        log_likelihood = -0.5 * (variance.log().sum(1) + z.pow(2) @ variance.reciprocal().T)
        return torch.softmax(log_prior + log_likelihood, dim=1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        m = self.model
        mean, vectors = m.mean.to(y.device), m.eigenvectors.to(y.device)
        z = (y.flatten(1).double() - mean) @ vectors
        gain = self.posterior(z) @ (m.eigenvalues.to(y.device) / self.variance.to(y.device))  # [B, D]
        return (mean + (z * gain) @ vectors.T).to(y.dtype).view(-1, *m.shape)


def blind_gaussian_psnr_curves(model: GaussianModel, train: dict, test: torch.Tensor, sigmas: Sequence[float], *,
                               images: int, seed: int, batch_size: int, device, law: str = "squared_uniform",
                               sigma_min: float = 0.0, sigma_max: float = 1.0) -> dict:
    """split → {"train", "test"} PSNR curves of the blind Gaussian denoiser, on the models' noise draws (same
    seed, same images as `controls.gaussian_psnr_curves`); one denoiser serves every σ, as a network does."""
    denoiser = BlindGaussianDenoiser(model, law=law, sigma_min=sigma_min, sigma_max=sigma_max)
    return psnr.curves_per_split(dict.fromkeys(train, lambda sigma: denoiser), train, test, sigmas,
                                 images=images, seed=seed, batch_size=batch_size, device=device)
