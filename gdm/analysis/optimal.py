"""The empirical optimal (memorizing) denoiser of a training set, and its posterior covariance.

For the empirical distribution of x_1 … x_n and y = x + σz, the MMSE denoiser is the posterior mean
f*(y) = Σ_i w_i(y) x_i with w = softmax(−‖y − x_i‖² / 2σ²) (SCIENCE.md); its Jacobian is the
posterior covariance over σ²: J = (Σ_i w_i x_i x_iᵀ − f* f*ᵀ) / σ².
"""

from __future__ import annotations

import torch
from torch import nn


class EmpiricalDenoiser(nn.Module):
    """f*(y) for a fixed σ; images [N, C, H, W]."""

    def __init__(self, images: torch.Tensor, sigma: float):
        super().__init__()
        self.register_buffer("images", images.flatten(1).clone())
        self.shape = images.shape[1:]
        self.sigma = float(sigma)

    def weights(self, y: torch.Tensor) -> torch.Tensor:
        sq = (y.flatten(1)[:, None, :] - self.images.to(y.dtype)[None]).pow(2).sum(-1)  # exact, unlike cdist's mm path
        return torch.softmax(-sq / (2 * self.sigma**2), dim=1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return (self.weights(y) @ self.images.to(y.dtype)).view(-1, *self.shape)


def posterior_covariance(denoiser: EmpiricalDenoiser, y: torch.Tensor) -> torch.Tensor:
    """Cov[x | y] [D, D] under the softmax weights at one image y [C, H, W]."""
    w = denoiser.weights(y[None])[0]
    x = denoiser.images.to(y.dtype)
    mean = w @ x
    return (x * w[:, None]).T @ x - torch.outer(mean, mean)
