"""Precise BN: batch-norm statistics recomputed for the weights that are saved (trainer.precise_bn_batches).

A BN layer's running statistic is an exponential average, over the last ~1/momentum steps, of batch
statistics of *earlier* weights; an EMA net's copy of them belongs to the raw net's weights, not its own
(issue 20: EMA 0.999 evaluated with the raw net's running σ lost 4.8 dB at σ = 0.4). Precise BN (Wu & Johnson,
"Rethinking 'Batch' in BatchNorm", 2021) replaces each statistic by its plain average over K batches run
through the net itself in train-mode BN: momentum 1/(k + 1) at batch k = 0 … K − 1 is the cumulative average
r_k = r_{k−1} + (s_k − r_{k−1})/(k + 1) = mean(s_0 … s_k), torch's momentum=None. For the bias-free BN the
statistic is the per-channel σ (its buffer `running_sd`), for torch's BN the batch mean and unbiased variance.
Under DDP each rank averages its own K batches, then the ranks' averages are averaged (all-reduce), so every
rank holds the mean over all K × world batches.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

from gdm.models.layers import BiasFreeBatchNorm

NORM_LAYERS = (BiasFreeBatchNorm, nn.modules.batchnorm._BatchNorm)


def norm_layers(net: nn.Module) -> list[nn.Module]:
    return [module for module in net.modules() if isinstance(module, NORM_LAYERS)]


def running_statistics(layer: nn.Module) -> list[torch.Tensor]:
    """The buffers a layer normalises with in eval mode (not torch's batch counter)."""
    if isinstance(layer, BiasFreeBatchNorm):
        return [layer.running_sd]
    return [layer.running_mean, layer.running_var]


@torch.no_grad()
def recompute_statistics(net: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Set every BN statistic of `net` (in place) to its average over `batches` (noisy inputs), then over the
    ranks of an initialised process group; returns the number of batches. Parameters are untouched.

    `net.forward`, not `net(...)`: a net compiled in place (trainer.compile) would recompile for each momentum."""
    layers, was_training = norm_layers(net), net.training
    momenta = [layer.momentum for layer in layers]
    net.train()
    count = 0
    try:
        for count, batch in enumerate(batches, start=1):
            for layer in layers:
                layer.momentum = 1.0 / count
            net.forward(batch)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        net.train(was_training)
    average_over_ranks([s for layer in layers for s in running_statistics(layer)])
    return count


def average_over_ranks(tensors: list[torch.Tensor]) -> None:
    """Each tensor ← its mean over the process group's ranks (in place); nothing without a process group.
    SUM then divide: gloo (the CPU backend) has no AVG reduction."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    world = dist.get_world_size()
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(world)
