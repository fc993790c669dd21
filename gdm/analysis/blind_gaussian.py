"""The blind Bayes-optimal denoiser of a Gaussian: the reference a blind network should be compared with
(docs/SCIENCE.md, Blind Gaussian reference).

The networks are blind: they see y = x + σz with σ drawn from the training law and never told. The Wiener
filter of `controls` knows σ, so it is a bound no blind denoiser can reach on Gaussian data. The fair
reference is the MMSE denoiser of the same problem: x ~ N(μ, C), σ from the training law, independent of x,

    E[x | y] = ∫ p(σ | y) E[x | y, σ] dσ = ∫ p(σ | y) W_σ(y) dσ,   W_σ(y) = μ + C (C + σ²I)⁻¹ (y − μ),
    p(σ | y) ∝ p(σ) N(y; μ, C + σ²I).

In C's eigenbasis (z = Uᵀ(y − μ)) every W_σ is diagonal with gains λ_k / (λ_k + σ²), and
log N(y; μ, C + σ²I) = −½ Σ_k [log(λ_k + σ²) + z_k² / (λ_k + σ²)] + const. The integral runs over u, σ = law(u),
u ~ U(0, 1) (gdm.training.sigma), by composite Gauss–Legendre quadrature on panels geometric in σ, each one
posterior width wide (`sigma_nodes`); the posterior weights of the nodes come from a
log-sum-exp (softmax), all in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from gdm.analysis import psnr
from gdm.analysis.controls import GaussianModel
from gdm.training.sigma import SIGMA_LAWS

# The posterior over σ has a relative width ≈ 1/√(2D) for D pixels (σ is read off ‖y − μ‖² ≈ Σλ + Dσ², a sum of D
# terms), 4.4 % at 16 × 16 and 0.9 % at 80 × 80: a node grid uniform in u would be coarser than that at small σ.
PANEL_NODES = 3  # Gauss–Legendre nodes per panel; a panel spans one posterior width in log σ
TAIL_NODES = 32  # nodes of the one panel [σ_min, σ_floor] below the geometric grid
PANEL_LOG_WIDTH = 0.05  # the widest panel in log σ, for few pixels, where the posterior is wide but not flat
FLOOR_RATIO = 1e-3  # σ_floor = σ_max · FLOOR_RATIO: a tenth of the smallest σ gdm evaluates (0.01 on [0, 1])


def law_inverse(law: str, sigma: torch.Tensor, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """u with law(u) = σ, by bisection (every law is increasing in u), float64, to 2⁻⁶⁰."""
    low, high = torch.zeros_like(sigma), torch.ones_like(sigma)
    for _ in range(60):
        middle = (low + high) / 2
        below = SIGMA_LAWS[law](middle, sigma_min, sigma_max) < sigma
        low, high = torch.where(below, middle, low), torch.where(below, high, middle)
    return (low + high) / 2


def floor_and_panels(sigma_min: float, sigma_max: float, pixels: int, resolution: int = 1) -> tuple[float, int]:
    """σ_floor and the number of geometric panels from it to σ_max, each one posterior width wide in log σ,
    1/√(2D), or PANEL_LOG_WIDTH if that is narrower, divided by `resolution` (> 1 only to check convergence)."""
    floor = max(sigma_min, sigma_max * FLOOR_RATIO)
    width = min(PANEL_LOG_WIDTH, 1 / math.sqrt(2 * pixels)) / resolution
    return floor, max(1, math.ceil(math.log(sigma_max / floor) / width))


def panels(law: str, sigma_min: float, sigma_max: float, pixels: int,
           resolution: int = 1) -> list[tuple[float, float, int]]:
    """(u_start, u_end, nodes) per panel, ascending over (0, 1): σ geometric from σ_floor to σ_max with
    PANEL_NODES nodes each, below them one panel of TAIL_NODES from σ_min to the floor (when it is above σ_min)."""
    floor, count = floor_and_panels(sigma_min, sigma_max, pixels, resolution)
    sigma = torch.logspace(math.log10(floor), math.log10(sigma_max), count + 1, dtype=torch.float64)
    edges = law_inverse(law, sigma, sigma_min, sigma_max).tolist()
    edges[-1] = 1.0
    tail = [(0.0, edges[0], TAIL_NODES)] if floor > sigma_min else []
    edges[0] = edges[0] if tail else 0.0
    return tail + [(a, b, PANEL_NODES) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def sigma_nodes(law: str, sigma_min: float, sigma_max: float, pixels: int,
                resolution: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(σ_j, log q_j) [J] float64: composite Gauss–Legendre in u ~ U(0, 1) over `panels`, σ_j = law(u_j),
    weights q_j (Σ q_j = 1). Each panel of one posterior width holds PANEL_NODES nodes, so the integral resolves
    the posterior at every σ ≥ σ_floor; the nodes are interior (σ_j > σ_min even at σ_min = 0)."""
    if law not in SIGMA_LAWS:
        raise ValueError(f"sigma law is {law!r}; allowed values: {', '.join(SIGMA_LAWS)}")
    if not 0 <= sigma_min < sigma_max:
        raise ValueError(f"sigma range is [{sigma_min}, {sigma_max}]; it needs 0 ≤ sigma_min < sigma_max")
    rules = [gauss_legendre(a, b, k) for a, b, k in panels(law, sigma_min, sigma_max, pixels, resolution)]
    u, q = torch.cat([u for u, _ in rules]), torch.cat([q for _, q in rules])
    return SIGMA_LAWS[law](u, sigma_min, sigma_max), q.log()


def gauss_legendre(a: float, b: float, nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of the `nodes`-point Gauss–Legendre rule on [a, b] (weights sum to b − a)."""
    x, w = (torch.from_numpy(v) for v in np.polynomial.legendre.leggauss(nodes))
    return a + (b - a) * (x + 1) / 2, w * (b - a) / 2


def node_count(sigma_min: float, sigma_max: float, pixels: int) -> int:
    """How many nodes `sigma_nodes` places (for the cost plan), without building them."""
    floor, count = floor_and_panels(sigma_min, sigma_max, pixels)
    return PANEL_NODES * count + (TAIL_NODES if floor > sigma_min else 0)


class BlindGaussianDenoiser(nn.Module):
    """x̂(y) = μ + U diag(E[λ / (λ + σ²) | y]) Uᵀ (y − μ): the MMSE denoiser of N(μ, C) under unknown σ ~ law."""

    def __init__(self, model: GaussianModel, *, law: str = "squared_uniform", sigma_min: float = 0.0,
                 sigma_max: float = 1.0, resolution: int = 1):
        super().__init__()
        sigma, self.log_prior = sigma_nodes(law, sigma_min, sigma_max, len(model.eigenvalues), resolution)
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
