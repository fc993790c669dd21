"""Exponential moving average of the weights: θ_ema ← d·θ_ema + (1 - d)·θ (trainer.ema_decay).

Why not torch.optim.swa_utils.AveragedModel (or Lightning's WeightAveraging callback, built on it): its
first update *copies* θ (n_averaged = 0) instead of averaging it into the initial weights, and it adds an
`n_averaged` buffer to the saved state. Both change the weights a cell evaluates from the first step on,
and resuming a checkpoint written by this module would then not reproduce an uninterrupted run. This is
two lines with the same foreach kernel AveragedModel uses (`torch._foreach_lerp_`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(net: nn.Module) -> nn.Module:
    """A frozen copy of `net` that tracks its average (saved in checkpoints as a submodule)."""
    ema = copy.deepcopy(net).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, net: nn.Module, decay: float) -> None:
    """Average the parameters; copy the buffers (the BF-BN running σ) as they are."""
    torch._foreach_lerp_(list(ema.parameters()), list(net.parameters()), 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), net.buffers(), strict=True):
        ema_buffer.copy_(buffer)
