"""The blind denoiser f(y) = y - net(y) around a noise-predicting network (σ is never an input)."""

from __future__ import annotations

import torch
from torch import nn


class BlindDenoiser(nn.Module):
    """forward(y) = y - net(y): the denoised estimate of the clean image (docs/SCIENCE.md, Model)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y - self.net(y)
