"""The empirical optimal (memorizing) denoiser of a training set, and its posterior covariance.

For the empirical distribution of x_1 … x_n and y = x + σz, the MMSE denoiser is the posterior mean
f*(y) = Σ_i w_i(y) x_i with w = softmax(−‖y − x_i‖² / 2σ²) (docs/SCIENCE.md); its Jacobian is the
posterior covariance over σ²: J = (Σ_i w_i x_i x_iᵀ − f* f*ᵀ) / σ².

Training sets reach 10⁵ images, so every sum over i runs in chunks of images (memory O(chunk·D)),
and the logits −‖y − x_i‖²/2σ² = (2⟨y, x_i⟩ − ‖x_i‖²)/2σ² + const(y) come from one matrix product
per chunk, in float64: at σ = 0.01 a float32 rounding of ‖x_i‖² (≈ 10³ for 80×80 images) would move
a logit by O(1).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from gdm.analysis import jacobian, psnr

NEGLIGIBLE = 1e-12  # posterior weights below this fraction of the largest are left out of Cov[x|y]


class EmpiricalDenoiser(nn.Module):
    """f*(y) for a fixed σ; images [N, C, H, W] (kept as given: no copy of a large training set)."""

    def __init__(self, images: torch.Tensor, sigma: float, chunk: int = 8192):
        super().__init__()
        self.images, self.shape = images.flatten(1), images.shape[1:]
        self.sigma, self.chunk = float(sigma), chunk

    def _chunks(self, device) -> list[torch.Tensor]:
        return [
            self.images[i : i + self.chunk].to(device, torch.float64) for i in range(0, len(self.images), self.chunk)
        ]

    def logits(self, y: torch.Tensor) -> torch.Tensor:
        """[B, N] log-weights up to a per-row constant: (2⟨y, x_i⟩ − ‖x_i‖²) / 2σ², in float64."""
        flat = y.flatten(1).double()
        parts = [(2 * flat @ x.T - x.pow(2).sum(1)) for x in self._chunks(y.device)]
        return torch.cat(parts, dim=1) / (2 * self.sigma**2)

    def weights(self, y: torch.Tensor) -> torch.Tensor:
        """Posterior weights w_i(y) [B, N] (softmax over the training set)."""
        return torch.softmax(self.logits(y), dim=1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        w, start, mean = self.weights(y), 0, 0
        for x in self._chunks(y.device):  # f*(y) = Σ_i w_i x_i, a chunk of images at a time
            mean = mean + w[:, start : start + len(x)] @ x
            start += len(x)
        return mean.to(y.dtype).view(-1, *self.shape)


def posterior_covariance(denoiser: EmpiricalDenoiser, y: torch.Tensor) -> torch.Tensor:
    """Cov[x | y] [D, D] under the softmax weights at one image y [C, H, W], in float64.

    Only images of weight ≥ NEGLIGIBLE · max w enter (at small σ a handful of a 10⁵-image set), so the
    cost is O(k·D²) for the k that matter rather than O(N·D²).
    """
    w = denoiser.weights(y[None])[0]
    keep = (w >= NEGLIGIBLE * w.max()).nonzero().squeeze(1)
    w = w[keep] / w[keep].sum()
    x = denoiser.images[keep.to(denoiser.images.device)].to(y.device, torch.float64)
    centred = x - w @ x
    return (centred * w[:, None]).T @ centred


# --- the memorizing reference of a pair --------------------------------------------------------------
# A network that memorizes its n images converges to this denoiser; one that generalizes departs from
# it. Its PSNR curves share the blind model's noise draws (same seed, same images), so at every σ the two
# compare image for image: on the training images it is the best any denoiser can do for that empirical
# distribution, on test images it shows what pure memorization costs. Its Jacobian, Cov[x|y]/σ², is
# exact (no autograd) and has rank < n: the spectrum of a memorizing model.


def optimal_psnr_curves(train: dict, test: torch.Tensor, sigmas, *, images: int, seed: int, batch_size: int,
                        device) -> dict:
    """split → {"train", "test"} PSNR curves of the empirical optimal denoiser of that split's set."""
    denoisers = {split: partial(EmpiricalDenoiser, x) for split, x in train.items()}
    return psnr.curves_per_split(denoisers, train, test, sigmas, images=images, seed=seed, batch_size=batch_size,
                                 device=device)


def optimal_geometry(train_images: torch.Tensor, y: torch.Tensor, sigma: float, model_jacobian: torch.Tensor) -> dict:
    """Spectrum and trace of J* = Cov[x|y]/σ² at y, and ‖J − J*‖_F / ‖J‖_F against the model's J.

    The model's norm is the scale: J* itself vanishes when one training image carries all the weight
    (n = 1, or y close to a training image), where a memorizing model's J vanishes too.
    """
    J = posterior_covariance(EmpiricalDenoiser(train_images, sigma), y) / sigma**2
    g = jacobian.geometry(J, keep=0)
    model = model_jacobian.double().to(J.device)
    difference = torch.linalg.norm(model - J) / torch.linalg.norm(model).clamp_min(1e-12)
    return {"trace": g.trace, "eigenvalues": g.eigenvalues.tolist(), "relative_difference": float(difference)}
