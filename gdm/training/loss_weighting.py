"""Per-image weights λ(σ) of the denoising loss (trainer.loss_weighting; docs/SCIENCE.md, Training).

The loss is E_σ E_x,z[λ(σ) ‖net(x + σz) − σz‖²] / E_σ[λ]. With λ = 1 (`uniform`, the authors') the noise-
prediction MSE of an image is ≈ D·σ²·(1 − PSNR gain), so the small σ, where the error is tiny, carry almost no
weight and the models underfit them (issue 20). `inverse_sigma` weights each image by
λ(σ) = 1/max(σ, floor)^p: p = 1 with floor 0.01 (and EMA 0.99) put test PSNR above the oracle at every σ; the
floor keeps λ finite at σ = 0, which the squared-uniform law draws.

Normalisation: the weights are divided by E_σ[λ] under the training σ law (a constant per config, computed once
by quadrature), so they average 1 over the σ the cell trains on. The loss stays an unbiased estimate of one fixed
objective (a per-batch Σλ normaliser would make it a ratio estimator coupling the images of a batch), and its
scale stays that of the per-pixel MSE the authors log, so `train/loss` and Adam's ε keep their meaning and
trainer.lr keeps its (Adam's step is invariant to a constant loss scale but for ε).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from gdm.config import TrainerConfig
from gdm.training.sigma import SIGMA_LAWS

LossWeight = Callable[[torch.Tensor, float, float], torch.Tensor]


def uniform(sigma: torch.Tensor, floor: float, power: float) -> torch.Tensor:
    """λ = 1: the plain mean over images, the authors' loss (floor and power unused)."""
    return torch.ones_like(sigma)


def inverse_sigma(sigma: torch.Tensor, floor: float, power: float) -> torch.Tensor:
    """λ(σ) = 1 / max(σ, floor)^p."""
    return sigma.clamp(min=floor).pow(-power)


LOSS_WEIGHTINGS: dict[str, LossWeight] = {"uniform": uniform, "inverse_sigma": inverse_sigma}

QUADRATURE_NODES = 1 << 16  # midpoint nodes of E_σ[λ]: < 1e-6 relative error on the closed forms tested


def mean_weight(cfg: TrainerConfig) -> float:
    """E_σ[λ(σ)] under trainer.sigma_law on [σ_min, σ_max]: ∫₀¹ λ(law(u)) du by the midpoint rule in float64."""
    u = (torch.arange(QUADRATURE_NODES, dtype=torch.float64) + 0.5) / QUADRATURE_NODES
    sigma = SIGMA_LAWS[cfg.sigma_law](u, cfg.sigma_min, cfg.sigma_max)
    return float(LOSS_WEIGHTINGS[cfg.loss_weighting](sigma, cfg.loss_weight_floor, cfg.loss_weight_power).mean())


@dataclass(frozen=True)
class NormalisedWeight:
    """σ ↦ λ(σ) / E_σ[λ], the weight of each image of a batch (σ of shape [B, 1, 1, 1])."""

    weighting: str  # a key of LOSS_WEIGHTINGS
    floor: float  # σ clip of λ, image units
    power: float  # exponent of λ
    mean: float  # E_σ[λ] under the training σ law

    def __call__(self, sigma: torch.Tensor) -> torch.Tensor:
        return LOSS_WEIGHTINGS[self.weighting](sigma, self.floor, self.power) / self.mean


def loss_weights(cfg: TrainerConfig) -> NormalisedWeight | None:
    """The per-image weights of trainer.loss_weighting; None for `uniform`, whose loss is the plain mean
    computed as before (bit for bit). ValueError naming the key for an unknown name."""
    if cfg.loss_weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"trainer.loss_weighting is {cfg.loss_weighting!r}; allowed values: "
                         f"{', '.join(LOSS_WEIGHTINGS)}")
    if cfg.loss_weighting == "uniform":
        return None
    return NormalisedWeight(cfg.loss_weighting, cfg.loss_weight_floor, cfg.loss_weight_power, mean_weight(cfg))
