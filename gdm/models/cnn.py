"""BF-CNN (Mohan et al. 2020; DnCNN without biases): `layers` 3×3 convs of constant width.

conv(1→k) → ReLU, (layers - 2) × (conv(k→k) → BF-BN → ReLU), conv(k→1). At k = 64, 21 layers:
0.70 M parameters. Fully convolutional, so any image size works.
"""

from __future__ import annotations

from torch import nn

from gdm.models.layers import conv3x3, conv_norm_relu


class BFCNN(nn.Sequential):
    """Noise predictor net(y) of `layers` convolutions, `channels` wide."""

    def __init__(self, channels: int = 64, layers: int = 21, bias: bool = False, image_channels: int = 1):
        hidden = [m for _ in range(layers - 2) for m in conv_norm_relu(channels, channels, bias)]
        super().__init__(conv3x3(image_channels, channels, bias), nn.ReLU(inplace=True), *hidden,
                         conv3x3(channels, image_channels, bias))
