"""Conv-4: four blocks of [3x3 conv with 64 filters, BatchNorm, ReLU, 2x2 max-pool].

The standard few-shot backbone since Vinyals et al. (2016), used by MAML (Finn et al. 2017) and
Prototypical Networks (Snell et al. 2017). With a head it is a classifier (MAML); without one it
is an embedding (ProtoNet): a 28x28 Omniglot image becomes a 64-d vector, 84x84 a 1600-d one.

Relation Networks (Sung et al. 2018) compare feature maps rather than vectors: their encoder
max-pools after the first two blocks only, leaves those two unpadded, and keeps the spatial map
(``pool_blocks=2, padding=[0, 0, 1, 1], flatten=False``: 28x28 becomes 64x5x5, 84x84 64x19x19).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from metarun.errors import ConfigError


def conv_block(
    in_channels: int, out_channels: int, pool: bool = True, padding: int = 1
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=padding),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def block_paddings(padding: int | Sequence[int], blocks: int) -> list[int]:
    """One padding per block: an int applies to all, a list gives each its own."""
    paddings = [padding] * blocks if isinstance(padding, int) else [int(p) for p in padding]
    if len(paddings) != blocks or any(p < 0 for p in paddings):
        raise ConfigError(
            "model.padding", f"must be an int >= 0 or a list of {blocks} of them, got {padding}"
        )
    return paddings


class Conv4(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        out_features: int | None = None,
        hidden_channels: int = 64,
        blocks: int = 4,
        pool_blocks: int | None = None,
        padding: int | Sequence[int] = 1,
        flatten: bool = True,
    ) -> None:
        """``pool_blocks``: how many leading blocks max-pool (None: all); ``padding``: each
        conv's zero padding; ``flatten=False`` returns ``[n, C, H, W]`` feature maps."""
        super().__init__()
        pool_blocks = blocks if pool_blocks is None else pool_blocks
        if not 0 <= pool_blocks <= blocks:
            raise ConfigError("model.pool_blocks", f"must be in 0..{blocks}, got {pool_blocks}")
        if out_features and not flatten:
            raise ConfigError("model.flatten", "a classifier head needs flatten=true")
        channels, height, width = input_shape
        layers = []
        for i, pad in enumerate(block_paddings(padding, blocks)):
            pool = i < pool_blocks
            layers.append(
                conv_block(channels if i == 0 else hidden_channels, hidden_channels, pool, pad)
            )
            height, width = height + 2 * pad - 2, width + 2 * pad - 2
            if pool:
                height, width = height // 2, width // 2
            if height < 1 or width < 1:
                raise ValueError(
                    f"{blocks} pooling blocks need inputs of at least {2**blocks} pixels"
                    if pool_blocks == blocks and padding == 1
                    else f"inputs of {input_shape[1]}x{input_shape[2]} vanish in block {i + 1}"
                )
        self.features = nn.Sequential(*layers)
        self.output_shape = (hidden_channels, height, width)
        self.embedding_size = hidden_channels * height * width
        self.flatten = flatten
        self.head = nn.Linear(self.embedding_size, out_features) if out_features else None

    def forward(self, x: Tensor) -> Tensor:
        z = self.features(x)
        if not self.flatten:
            return z
        z = z.flatten(1)
        return self.head(z) if self.head is not None else z
