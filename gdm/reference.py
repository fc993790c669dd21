"""The memorizing reference of a pair: the empirical optimal denoiser of each training set.

A network that memorizes its n images converges to this denoiser (docs/SCIENCE.md); one that generalizes
departs from it. Its PSNR curves share the blind model's noise draws (same seed, same images), so at
every σ the two compare image for image: on the training images it is the best any denoiser can do
for that empirical distribution, on test images it shows what pure memorization costs. Its Jacobian,
Cov[x|y]/σ², is exact (no autograd) and has rank < n: the spectrum of a memorizing model.
"""

from __future__ import annotations

from functools import partial

import torch

from gdm.analysis import jacobian, psnr
from gdm.analysis.optimal import EmpiricalDenoiser, posterior_covariance


def optimal_psnr_curves(train: dict, test: torch.Tensor, sigmas, *, images: int, seed: int, batch_size: int,
                        device) -> dict:
    """split → {"train", "test"} PSNR curves of the empirical optimal denoiser of that split's set."""
    run = {"images": images, "seed": seed, "batch_size": batch_size, "device": device}
    return {split: psnr.train_test_curves(partial(EmpiricalDenoiser, x), x, test, sigmas, **run) for split, x in train.items()}


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
