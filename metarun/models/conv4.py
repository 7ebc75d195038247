"""Conv-4: four blocks of [3x3 conv with 64 filters, BatchNorm, ReLU, 2x2 max-pool].

The standard few-shot backbone since Vinyals et al. (2016), used by MAML (Finn et al. 2017) and
Prototypical Networks (Snell et al. 2017). With a head it is a classifier (MAML); without one it
is an embedding (ProtoNet): a 28x28 Omniglot image becomes a 64-d vector, 84x84 a 1600-d one.
"""

from __future__ import annotations

from torch import Tensor, nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        out_features: int | None = None,
        hidden_channels: int = 64,
        blocks: int = 4,
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        layers = []
        for i in range(blocks):
            layers.append(conv_block(channels if i == 0 else hidden_channels, hidden_channels))
            height, width = height // 2, width // 2
        if height < 1 or width < 1:
            raise ValueError(f"{blocks} pooling blocks need inputs of at least {2**blocks} pixels")
        self.features = nn.Sequential(*layers)
        self.embedding_size = hidden_channels * height * width
        self.head = nn.Linear(self.embedding_size, out_features) if out_features else None

    def forward(self, x: Tensor) -> Tensor:
        z = self.features(x).flatten(1)
        return self.head(z) if self.head is not None else z
