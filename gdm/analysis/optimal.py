"""The empirical optimal (memorizing) denoiser of a training set, and its posterior covariance.

For the empirical distribution of x_1 … x_n and y = x + σz, the MMSE denoiser is the posterior mean
f*(y) = Σ_i w_i(y) x_i with w = softmax(−‖y − x_i‖² / 2σ²) (docs/SCIENCE.md); its Jacobian is the
posterior covariance over σ²: J = (Σ_i w_i x_i x_iᵀ − f* f*ᵀ) / σ².

Training sets reach 10⁵ images, so every sum over i runs in chunks of images (memory O(chunk·D)), and
the logits −‖y − x_i‖²/2σ² come from one matrix product per chunk. In y's precision:

- float64 y (the reference; Jacobians, posterior covariance): (2⟨y, x_i⟩ − ‖x_i‖²)/2σ² + const(y), the
  expansion, exact enough in float64.
- float32 y (the PSNR curves: K · n · D multiply-adds, ≈ 10¹⁶ for a large pair, too slow in float64 on
  a GPU with a weak fp64 rate): the same expansion would fail. At σ = 0.01 the 1/2σ² = 5000 scales a
  float32 rounding of ⟨y, x_i⟩ or ‖x_i‖² (≈ 10³ for 80×80 images, so ≈ 10⁻⁴) into an O(1) logit error.
  So the product only screens: about the queries' mean (which shrinks the magnitudes it rounds), it
  ranks the images, and the `candidates` best of each query get their logit from ‖y − x_i‖² itself,
  summed over the difference in float64 (elementwise, B · candidates · D: cheap anywhere), less the
  row's largest before rounding to float32 (so a logit near the top carries an error ≈ 2⁻²⁴ · its
  distance from the top, not 2⁻²⁴ · D/2). The others keep the screened logit: they lie at least as far
  below the best as the last candidate, which at small σ makes their weight vanish, and at large σ
  (where weights spread) the 1/2σ² that scales the rounding is small. tests/test_analysis.py holds the
  float32 PSNR curves to the float64 ones within 10⁻³ dB at σ = 0.01, 0.1 and 1.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from gdm.analysis import jacobian, psnr

NEGLIGIBLE = 1e-12  # posterior weights below this fraction of the largest are left out of Cov[x|y]


CANDIDATES = 64  # float32: images per query whose logit is recomputed from ‖y − x_i‖² itself


def _precision(y: torch.Tensor) -> torch.dtype:
    """float64 for float64 y (the reference), float32 otherwise."""
    return torch.float64 if y.dtype == torch.float64 else torch.float32


class EmpiricalDenoiser(nn.Module):
    """f*(y) for a fixed σ; images [N, C, H, W] (kept as given: no copy of a large training set).

    Computes in y's precision (float64, or float32 for any other dtype). Memory: the [B, N] logits, plus
    chunk · D of images at a time.
    """

    def __init__(self, images: torch.Tensor, sigma: float, chunk: int = 8192, candidates: int = CANDIDATES):
        super().__init__()
        self.images, self.shape = images.flatten(1), images.shape[1:]
        self.sigma, self.chunk, self.candidates = float(sigma), chunk, candidates

    def _chunks(self, device, dtype) -> list[torch.Tensor]:
        return [self.images[i : i + self.chunk].to(device, dtype) for i in range(0, len(self.images), self.chunk)]

    def logits(self, y: torch.Tensor) -> torch.Tensor:
        """[B, N] log-weights −‖y − x_i‖²/2σ², up to a per-row constant in float64 (module docstring)."""
        if _precision(y) == torch.float64:
            flat = y.flatten(1).double()
            parts = [(2 * flat @ x.T - x.pow(2).sum(1)) for x in self._chunks(y.device, torch.float64)]
            return torch.cat(parts, dim=1) / (2 * self.sigma**2)
        return self._exact_best(y.flatten(1).float(), self._screen(y.flatten(1).float()))

    def _screen(self, flat: torch.Tensor) -> torch.Tensor:
        """float32 −‖y − x_i‖²/2σ², expanded about the queries' mean c: 2⟨y − c, x_i − c⟩ − ‖x_i − c‖² − ‖y − c‖²."""
        origin = flat.mean(0)
        centred, chunks = flat - origin, self._chunks(flat.device, flat.dtype)
        parts = [2 * centred @ (x - origin).T - (x - origin).pow(2).sum(1) for x in chunks]
        return (torch.cat(parts, dim=1) - centred.pow(2).sum(1, keepdim=True)) / (2 * self.sigma**2)

    def _exact_best(self, flat: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """`logits` with each row's `candidates` largest recomputed from the difference y − x_i (B · D at a time)."""
        best = logits.topk(min(self.candidates, logits.shape[1]), dim=1).indices
        exact = -torch.stack([self._distance(flat, column) for column in best.T], dim=1) / (2 * self.sigma**2)
        top = exact.max(dim=1, keepdim=True).values  # a per-row constant, removed before rounding to float32
        return (logits - top.float()).scatter_(1, best, (exact - top).float())

    def _distance(self, flat: torch.Tensor, column: torch.Tensor) -> torch.Tensor:
        """‖y_b − x_{column_b}‖² for every query b, summed over the difference in float64 (elementwise,
        B · D at a time: cheap even where float64 matrix products are not): [B]."""
        x = self.images[column.to(self.images.device)].to(flat.device, torch.float64)
        return (flat.double() - x).pow(2).sum(1)

    def weights(self, y: torch.Tensor) -> torch.Tensor:
        """Posterior weights w_i(y) [B, N] (softmax over the training set, in y's precision)."""
        return torch.softmax(self.logits(y), dim=1)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        w, start, mean = self.weights(y), 0, 0
        for x in self._chunks(y.device, w.dtype):  # f*(y) = Σ_i w_i x_i, a chunk of images at a time
            mean = mean + w[:, start : start + len(x)] @ x
            start += len(x)
        return mean.to(y.dtype).view(-1, *self.shape)


def posterior_covariance(denoiser: EmpiricalDenoiser, y: torch.Tensor) -> torch.Tensor:
    """Cov[x | y] [D, D] under the softmax weights at one image y [C, H, W], in float64.

    Only images of weight ≥ NEGLIGIBLE · max w enter (at small σ a handful of a 10⁵-image set), so the
    cost is O(k·D²) for the k that matter rather than O(N·D²).
    """
    w = denoiser.weights(y[None].double())[0]  # one image: the float64 reference costs nothing here
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
