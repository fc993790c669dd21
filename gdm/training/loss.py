"""Noise-prediction loss of a blind denoiser (docs/SCIENCE.md, Training).

y = x + σ·z per image, z ~ N(0, I); the network predicts the noise, so f(y) = y - net(y) and
‖net(y) - σz‖² = ‖f(y) - x‖²: minimising it gives the MMSE denoiser, i.e. the score by
Miyasawa/Tweedie, f*(y) = y + σ²∇log p_σ(y).
"""

from __future__ import annotations

import torch
from torch import nn


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the cell fails and its last good checkpoint is kept."""


def add_noise(x: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, σz): the noisy images and the noise that was added."""
    noise = sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + noise, noise


def denoising_loss(net: nn.Module, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Mean squared error between the predicted and the true noise, in fp32."""
    return (net(y).float() - noise.float()).square().mean()


def check_finite(loss: torch.Tensor, step: int, ranks_non_finite: torch.Tensor | None = None) -> None:
    """NonFiniteLossError when this rank's loss, or (under DDP) any rank's, is NaN or ±inf.

    `ranks_non_finite` is the count of ranks with a non-finite loss, all-reduced by the caller: every rank
    then raises at the same step, instead of one raising while the others wait for it in the backward's
    gradient all-reduce until the collective timeout (which would be recorded instead of the NaN)."""
    bad = ranks_non_finite if ranks_non_finite is not None else (~torch.isfinite(loss)).sum()
    if bad:
        raise NonFiniteLossError(
            f"training loss is non-finite on {int(bad)} rank(s) at step {step} (this rank's: {loss.item()}); the "
            "cell stops and keeps its last good last.ckpt. "
            "Lower trainer.lr, use trainer.precision=32-true, or check the data for NaN pixels")
