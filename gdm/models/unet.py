"""The UNet of Kadkhodaie et al. 2024 (authors' `UNet`), bias-free or with biases (the control).

Levels b = 0 … B-1 carry k·2^b channels (k = model.channels = 64: 64, 128, 256 for B = 3), the
middle block k·2^B (512). Encoder level 0: conv(1→k) → ReLU, conv → BN → ReLU; deeper encoder
levels: 2×2 average pool, then 2 × (conv → BN → ReLU). Middle: pool, 2 × (conv → BN → ReLU).
Decoder level b: 2×2 transposed conv up, concatenation with the encoder's level-b output, then
2 × (conv → BN → ReLU), except level 0 whose second conv is the final conv to 1 channel.
Parameter counts at k = 64: 0.37 M, 1.82 M, 7.66 M, 30.7 M for B = 1, 2, 3, 4 (20, 40, 80, 160 px).
"""

from __future__ import annotations

import torch
from torch import nn

from gdm.models.layers import conv3x3, conv_norm_relu


def encoder_level(level: int, width: int, in_channels: int, bias: bool) -> nn.Sequential:
    if level == 0:  # authors: no normalisation after the first conv
        return nn.Sequential(conv3x3(in_channels, width, bias), nn.ReLU(inplace=True),
                             *conv_norm_relu(width, width, bias))
    return nn.Sequential(nn.AvgPool2d(2), *conv_norm_relu(width // 2, width, bias), *conv_norm_relu(width, width, bias))


def decoder_level(level: int, width: int, out_channels: int, bias: bool) -> nn.Sequential:
    """Convolutions after the concatenation [up(x), skip] of 2·width channels."""
    if level == 0:
        return nn.Sequential(*conv_norm_relu(2 * width, width, bias), conv3x3(width, out_channels, bias))
    return nn.Sequential(*conv_norm_relu(2 * width, width, bias), *conv_norm_relu(width, width, bias))


class UNet(nn.Module):
    """Noise predictor net(y) on [N, C, H, W] with H, W divisible by 2**blocks."""

    def __init__(self, channels: int = 64, blocks: int = 3, bias: bool = False, image_channels: int = 1):
        super().__init__()
        widths = [channels * 2**b for b in range(blocks + 1)]
        self.encoder = nn.ModuleList(encoder_level(b, widths[b], image_channels, bias) for b in range(blocks))
        self.middle = nn.Sequential(nn.AvgPool2d(2), *conv_norm_relu(widths[-2], widths[-1], bias),
                                    *conv_norm_relu(widths[-1], widths[-1], bias))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[b + 1], widths[b], 2, stride=2, bias=bias)
                                for b in range(blocks))
        self.decoder = nn.ModuleList(decoder_level(b, widths[b], image_channels, bias) for b in range(blocks))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        skips, h = [], y
        for level in self.encoder:
            h = level(h)
            skips.append(h)
        h = self.middle(h)
        for b in reversed(range(len(self.decoder))):
            h = self.decoder[b](torch.cat([self.up[b](h), skips[b]], dim=1))
        return h
