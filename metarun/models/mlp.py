"""A ReLU multilayer perceptron; MAML's sinusoid regressor is ``hidden=[40, 40]``."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        out_features: int | None = None,
        hidden: Sequence[int] = (40, 40),
    ) -> None:
        super().__init__()
        sizes = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        if out_features:
            layers.append(nn.Linear(sizes[-1], out_features))
        self.net = nn.Sequential(*layers)
        self.embedding_size = sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))
