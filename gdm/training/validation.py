"""Denoising PSNR per σ on a fixed batch: per-image PSNR (data range 1, fp32) averaged over images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio

from gdm.training.seeds import derive_seed


@torch.no_grad()
def psnr_per_sigma(net: nn.Module, images: torch.Tensor, sigmas: Sequence[float], seed: int) -> dict[float, float]:
    """{σ: mean PSNR(f(x + σz), x)} with f(y) = y - net(y); the noise z is fixed by (seed, σ index)."""
    was_training = net.training
    net.eval()
    result = {}
    with torch.autocast(images.device.type, enabled=False):
        for index, sigma in enumerate(sigmas):
            generator = torch.Generator(images.device).manual_seed(derive_seed("val", seed, index))
            noisy = images + sigma * torch.randn(images.shape, generator=generator, device=images.device)
            denoised = (noisy - net(noisy)).float()
            psnr = peak_signal_noise_ratio(denoised, images, data_range=1.0, reduction="none", dim=(1, 2, 3))
            result[sigma] = psnr.mean().item()
    net.train(was_training)
    return result

