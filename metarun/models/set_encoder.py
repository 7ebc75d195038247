"""CNAPs' set encoder (Requeima et al. 2019; ``cambridge-mlg/cnaps``, ``src/set_encoder.py``):
a DeepSets ``rho(mean_i phi(x_i))`` whose ``phi`` is five blocks of a 3x3 convolution with 64
maps, BatchNorm, ReLU and 2x2 max-pooling, then a global average, and ``rho`` the identity, so
the task's representation is the mean of its context images' 64 features.

The authors' images are 84x84; on smaller ones a block is pooled only while its map is at
least 2 pixels wide (28x28 drawings: four pooled blocks and a fifth that is not), so the
architecture keeps its five blocks on every data set.
"""

from __future__ import annotations

from torch import Tensor, nn


class SetEncoder(nn.Module):
    """``[n, C, H, W]`` images of one set to a ``[channels]`` representation."""

    def __init__(self, input_shape: tuple[int, ...], channels: int = 64, blocks: int = 5) -> None:
        super().__init__()
        in_channels, size = input_shape[0], min(input_shape[1:])
        layers: list[nn.Module] = []
        for _ in range(blocks):
            layers += [
                nn.Conv2d(in_channels, channels, 3, padding=1),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
            ]
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            in_channels = channels
        self.phi = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.output_size = channels

    def forward(self, images: Tensor) -> Tensor:
        return self.phi(images).mean(0)


__all__ = ["SetEncoder"]
