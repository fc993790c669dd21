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


def denoising_loss(net: nn.Module, y: torch.Tensor, noise: torch.Tensor,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between the predicted and the true noise, in fp32.

    weight: None (the plain mean over pixels and images), or each image's λ(σ)/E_σ[λ] ([B, 1, 1, 1],
    gdm.training.loss_weighting): the mean over images of weight × the image's mean squared error."""
    error = (net(y).float() - noise.float()).square()
    if weight is None:
        return error.mean()
    return (weight.float().reshape(-1) * error.mean(dim=tuple(range(1, error.dim())))).mean()


NO_STEP = torch.iinfo(torch.int64).max  # "no non-finite loss yet", in a device-side first-step record


def first_non_finite(first: torch.Tensor, loss: torch.Tensor, step: int) -> torch.Tensor:
    """min(first, step) if `loss` is NaN or ±inf, else `first`: the first step with a non-finite loss so far.

    Computed where the loss lives, so recording it never makes the host wait for the device (no host-device
    sync); `check_first_non_finite` reads it every few steps."""
    return torch.where(torch.isfinite(loss.detach()), first, first.clamp(max=step))


def check_first_non_finite(first_by_rank: torch.Tensor, steps: range) -> None:
    """NonFiniteLossError when a rank recorded a non-finite loss during `steps` (one host-device sync).

    `first_by_rank`: each rank's `first_non_finite` record, gathered over the process group by the caller, so
    every rank raises at the same check and none waits for a failed one in a collective until its timeout
    (which would then be recorded instead of the NaN)."""
    firsts = first_by_rank.reshape(-1).tolist()
    first = min(firsts)
    if first == NO_STEP:
        return
    where = f"checked after step {steps.stop - 1}, covering steps {steps.start}–{steps.stop - 1}"
    raise NonFiniteLossError(
        f"training loss is non-finite on {firsts.count(first)} rank(s) at step {first} ({where}); the cell stops "
        "and keeps its last good last.ckpt. "
        "Lower trainer.lr, use trainer.precision=32-true, or check the data for NaN pixels")


def check_finite(loss: torch.Tensor, step: int) -> None:
    """NonFiniteLossError now if `loss` (of step `step`, one process) is NaN or ±inf: a host-device sync."""
    record = first_non_finite(torch.tensor(NO_STEP, device=loss.device), loss, step)
    check_first_non_finite(record, range(step, step + 1))
