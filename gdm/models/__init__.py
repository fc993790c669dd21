"""Denoiser backbones by registry name; each predicts the noise, net(y) ≈ y - x (docs/SCIENCE.md, Model).

`bf_unet` (the paper's bias-free UNet), `unet_bias` (the same UNet with conv biases and ordinary
BatchNorm — the control that is not homogeneous), `bf_cnn` (BF-CNN for small images).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from gdm.config import ModelConfig
from gdm.models.cnn import BFCNN
from gdm.models.layers import BiasFreeBatchNorm
from gdm.models.unet import UNet

Builder = Callable[[ModelConfig], nn.Module]

MODELS: dict[str, Builder] = {
    "bf_unet": lambda cfg: UNet(cfg.channels, cfg.blocks, bias=False),
    "unet_bias": lambda cfg: UNet(cfg.channels, cfg.blocks, bias=True),
    "bf_cnn": lambda cfg: BFCNN(cfg.channels, cfg.layers, bias=False),
}

BIAS_FREE = ("bf_unet", "bf_cnn")  # models for which f(a·y) = a·f(y) must hold (in eval mode)

__all__ = ["MODELS", "BIAS_FREE", "BiasFreeBatchNorm", "UNet", "BFCNN", "build_model", "check_image_size",
           "count_parameters"]


def check_image_size(cfg: ModelConfig, image_size: int) -> None:
    """ValueError naming the key unless model `cfg.name` can denoise images of side `image_size`."""
    if cfg.name not in MODELS:
        raise ValueError(f"model.name is {cfg.name!r}, so images of image_size {image_size} have no model; "
                         f"allowed values of model.name: {', '.join(sorted(MODELS))}")
    if cfg.channels < 1:
        raise ValueError(f"model.channels is {cfg.channels}; it must be ≥ 1")
    if cfg.name == "bf_cnn":
        if cfg.layers < 2:
            raise ValueError(f"model.layers is {cfg.layers}; bf_cnn needs ≥ 2 conv layers (paper: 21)")
        return
    if cfg.blocks < 1:
        raise ValueError(f"model.blocks is {cfg.blocks}; the UNet needs ≥ 1 block (paper: 1-4)")
    factor = 2**cfg.blocks
    if image_size % factor:
        raise ValueError(f"image_size {image_size} is not divisible by 2**model.blocks = {factor} "
                         f"(model.blocks={cfg.blocks}); use a multiple of {factor} or fewer blocks")


def build_model(cfg: ModelConfig, image_size: int) -> nn.Module:
    """The noise-predicting network named by `cfg.name`, checked against `image_size`."""
    check_image_size(cfg, image_size)
    return MODELS[cfg.name](cfg)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
