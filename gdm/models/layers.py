"""Bias-free batch normalisation (Mohan et al. 2020; Kadkhodaie et al. 2024, authors' `BF_batchNorm`).

y = γ · x / σ_c, with σ_c the per-channel standard deviation: of the batch in training mode (and a
running estimate updated from it), of the running estimate in evaluation mode. There is no mean
subtraction and no shift, so in evaluation mode the layer is linear in x and the whole network stays
positively homogeneous of degree 1: f(a·y) = a·f(y), f(y) = J_f(y)·y (paper, Section 2).

In training mode σ_c is computed from the batch itself, so the layer is invariant to a common
rescaling of the batch (degree 0); still no additive constant is introduced.

Distributed training: the statistics are per rank (each process normalises with its own batch, as
the authors' DataParallel replicas did). The class is deliberately *not* a `_BatchNorm`, so
Lightning's `sync_batchnorm` / `convert_sync_batchnorm` never replaces it; DDP broadcasts rank 0's
running estimate before every forward and `gdm.training.lit_module` broadcasts it once more at the end of fitting,
so all ranks finish with identical buffers. With trainer.precise_bn_batches > 0 the saved estimate is instead
recomputed for the saved weights and averaged over the ranks (gdm.training.precise_bn).
"""

from __future__ import annotations

import torch
from torch import nn


class BiasFreeBatchNorm(nn.Module):
    """Scale each channel by γ_c / σ_c; σ_c from the batch (train) or its running estimate (eval)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        # Authors' initialisation: small random scales, so the residual net(y) starts near 0 and
        # the blind denoiser f(y) = y - net(y) starts near the identity.
        gamma = (torch.randn(1, num_channels, 1, 1) * (2.0 / 9.0 / 64.0)).clamp_(-0.025, 0.025)
        self.gamma = nn.Parameter(gamma)
        self.register_buffer("running_sd", torch.ones(1, num_channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            sd = self.batch_sd(x)
            with torch.no_grad():  # exponential moving average, as torch's BatchNorm (momentum 0.1)
                self.running_sd.lerp_(sd.detach(), self.momentum)
        else:
            sd = self.running_sd
        return x * (self.gamma / sd).to(x.dtype)

    def batch_sd(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel standard deviation over (N, H, W), in fp32 at least (also under bf16 autocast)."""
        var = x.to(torch.promote_types(x.dtype, torch.float32)).var(dim=(0, 2, 3), keepdim=True, unbiased=False)
        return torch.sqrt(var + self.eps)

    def extra_repr(self) -> str:
        return f"{self.gamma.shape[1]}, eps={self.eps}, momentum={self.momentum}"


def norm_layer(channels: int, bias: bool) -> nn.Module:
    """BiasFreeBatchNorm for bias-free nets; torch's affine BatchNorm (mean and shift) for the control."""
    return nn.BatchNorm2d(channels) if bias else BiasFreeBatchNorm(channels)


def conv3x3(in_channels: int, out_channels: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)


def conv_norm_relu(in_channels: int, out_channels: int, bias: bool) -> list[nn.Module]:
    """conv 3×3 → (BF-)BN → ReLU: every hidden layer of both architectures (docs/SCIENCE.md, Model)."""
    return [conv3x3(in_channels, out_channels, bias), norm_layer(out_channels, bias), nn.ReLU(inplace=True)]
