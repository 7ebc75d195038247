"""ResNet-12: the standard deeper few-shot backbone.

Introduced for few-shot learning by TADAM (Oreshkin, Rodriguez & Lacoste 2018, NeurIPS) and
used in the widths given here by MetaOptNet (Lee, Maji, Ravichandran & Soatto 2019, CVPR), whose
public code (``models/ResNet12_embedding.py``) most later work copies. Four residual blocks,
each:

* three times [3x3 convolution without bias, BatchNorm, LeakyReLU(0.1)], the third activation
  applied after the residual addition;
* a shortcut of a 1x1 convolution (no bias) and BatchNorm;
* a 2x2 max-pool, then (in the last two blocks) DropBlock (Ghiasi, Lin & Le 2018, NeurIPS).

Widths 64-160-320-640 (MetaOptNet; ``channels``). An 84x84 image leaves the last block as a
640x5x5 map; ``pooling: avg`` (default) averages it to a 640-d embedding, the usual choice in
later work and the one that keeps a classifier head small; ``pooling: flatten`` keeps all of it
(16000-d for 84x84), as MetaOptNet's code does. Convolutions start from Kaiming-normal
(fan-out, leaky ReLU) weights, as in MetaOptNet.

DropBlock is off by default (``dropblock_rate: 0``): gradient-based learners adapt the whole
network in an inner loop, where dropping features only adds noise to the support gradients.
MetaOptNet's miniImageNet setting is ``dropblock_rate: 0.1, dropblock_size: 5``. Two details of
its code are not reproduced: the drop rate there ramps up linearly over the first 40,000 forward
passes (a counter in the module, which would not survive vmap or resuming), and its first two
blocks apply ordinary dropout at the same rate.

Like Conv-4, the network is a classifier when given ``out_features`` (a Linear head on the
embedding, for MAML and ANIL) and an embedding without (ProtoNet). Everything in it works under
``torch.func.functional_call`` and ``vmap``: the DropBlock mask is drawn from the random key of
the task being computed (``metarun.randomness.current_noise``, which the learner opens per task,
so a task's masks are the same in any batch and on any process) and built with pooling, no
indexing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from metarun.errors import ConfigError
from metarun.randomness import Draws, current_noise

POOLINGS = ("avg", "flatten")


class DropBlock(nn.Module, Draws):
    """Zeroes random ``block_size`` x ``block_size`` squares of each feature map in training,
    about ``rate`` of the positions in all, and rescales the rest so the mean is kept; the
    identity in eval mode or at rate 0.

    Seeds are drawn where a whole block fits, with Ghiasi et al.'s probability
    ``gamma = rate / block_size**2 * (H * W) / ((H - block_size + 1) * (W - block_size + 1))``;
    each seed is grown into its block by a max-pool. On maps smaller than ``block_size`` the
    block shrinks to the map.
    """

    def __init__(self, rate: float = 0.0, block_size: int = 5) -> None:
        super().__init__()
        self.rate = rate
        self.block_size = block_size

    @property
    def draws(self) -> bool:
        return self.rate > 0

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0:
            return x
        height, width = x.shape[-2:]
        size = min(self.block_size, height, width)
        valid_h, valid_w = height - size + 1, width - size + 1
        gamma = self.rate / size**2 * (height * width) / (valid_h * valid_w)
        noise = current_noise().uniform(x[..., :valid_h, :valid_w].shape)
        seeds = (noise.to(x.device) < gamma).to(x.dtype)
        # A seed at (i, j) covers rows i..i+size-1 and columns j..j+size-1.
        padded = F.pad(seeds, (size - 1, size - 1, size - 1, size - 1))
        dropped = F.max_pool2d(padded, kernel_size=size, stride=1)
        keep = 1 - dropped
        scale = keep.numel() / keep.sum().clamp_min(1.0)
        return x * keep * scale

    def extra_repr(self) -> str:
        return f"rate={self.rate}, block_size={self.block_size}"


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)


class ResidualBlock(nn.Module):
    """Three conv-BN-LeakyReLU layers with a 1x1 conv-BN shortcut, then a 2x2 max-pool and
    DropBlock."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        negative_slope: float = 0.1,
        dropblock_rate: float = 0.0,
        dropblock_size: int = 5,
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv3 = conv3x3(out_channels, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.activation = nn.LeakyReLU(negative_slope)
        self.pool = nn.MaxPool2d(2)
        self.dropblock = DropBlock(dropblock_rate, dropblock_size)

    def forward(self, x: Tensor) -> Tensor:
        out = self.activation(self.bn1(self.conv1(x)))
        out = self.activation(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.activation(out + self.shortcut(x))
        return self.dropblock(self.pool(out))


class ResNet12(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        out_features: int | None = None,
        channels: Sequence[int] = (64, 160, 320, 640),
        pooling: str = "avg",
        dropblock_rate: float = 0.0,
        dropblock_size: int = 5,
        negative_slope: float = 0.1,
    ) -> None:
        super().__init__()
        channels = list(channels)
        if not channels or any(int(c) < 1 for c in channels):
            raise ConfigError("model.channels", f"must be positive widths, got {channels}")
        if pooling not in POOLINGS:
            raise ConfigError("model.pooling", f"must be one of {', '.join(POOLINGS)}")
        if not 0 <= dropblock_rate < 1:
            raise ConfigError("model.dropblock_rate", f"must be in [0, 1), got {dropblock_rate}")
        if dropblock_size < 1:
            raise ConfigError("model.dropblock_size", f"must be at least 1, got {dropblock_size}")
        in_channels, height, width = input_shape
        blocks = []
        for i, out_channels in enumerate(channels):
            # DropBlock in the last two blocks only, as in MetaOptNet.
            rate = dropblock_rate if i >= len(channels) - 2 else 0.0
            blocks.append(
                ResidualBlock(in_channels, out_channels, negative_slope, rate, dropblock_size)
            )
            in_channels, height, width = out_channels, height // 2, width // 2
        if height < 1 or width < 1:
            raise ValueError(
                f"{len(channels)} pooling blocks need inputs of at least {2 ** len(channels)} "
                f"pixels"
            )
        self.blocks = nn.Sequential(*blocks)
        self.pooling = pooling
        area = 1 if pooling == "avg" else height * width
        self.embedding_size = channels[-1] * area
        self.head = nn.Linear(self.embedding_size, out_features) if out_features else None
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu")

    def forward(self, x: Tensor) -> Tensor:
        features = self.blocks(x)
        z = features.mean((-2, -1)) if self.pooling == "avg" else features.flatten(1)
        return self.head(z) if self.head is not None else z


__all__ = ["DropBlock", "ResNet12", "ResidualBlock"]
