"""A ReLU multilayer perceptron; MAML's sinusoid regressor is ``hidden=[40, 40]``, its 2-D
navigation policy ``hidden=[100, 100]`` with Glorot-uniform weights and zero biases
(``cbfinn/maml_rl``, ``maml_minimal_gauss_mlp_policy.py`` ``create_MLP``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from metarun.errors import ConfigError

INITS = ("pytorch", "glorot")


class MLP(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, ...],
        out_features: int | None = None,
        hidden: Sequence[int] = (40, 40),
        init: str = "pytorch",
    ) -> None:
        """``init``: PyTorch's default initialisation, or Glorot-uniform weights and zero
        biases (TensorFlow's ``xavier_initializer``, as MAML's RL code)."""
        super().__init__()
        if init not in INITS:
            raise ConfigError("model.init", f"must be one of {', '.join(INITS)}, got {init!r}")
        sizes = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        if out_features:
            layers.append(nn.Linear(sizes[-1], out_features))
        self.net = nn.Sequential(*layers)
        if init == "glorot":
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    nn.init.xavier_uniform_(layer.weight)
                    nn.init.zeros_(layer.bias)
        self.embedding_size = sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1))
