"""A diagonal Gaussian policy over continuous actions: a backbone's features, then a linear
head whose outputs are the means, beside a learned log standard deviation per action that does
not depend on the observation.

This is the policy of MAML's RL experiments (``cbfinn/maml_rl``,
``sandbox/rocky/tf/policies/maml_minimal_gauss_mlp_policy.py``: ``learn_std=True``,
``init_std=1.0``, the ``exp`` parametrisation, ``min_std=1e-6``, Glorot-uniform output weights
and zero biases). The log standard deviation is a parameter of the head, so the gradient
family's inner loop adapts it with the rest (the authors' fast update steps every key of
``all_params``, ``std_param`` among them), and ANIL, which adapts the head, adapts it too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_LOG_STD = math.log(1e-6)


class GaussianHead(nn.Linear):
    """``[..., features]`` to ``[..., 2 * actions]``: the means, then the log standard
    deviations. A ``Linear`` (with one more parameter), so learners that adapt a model's
    linear ``head`` (ANIL) take it as it is."""

    def __init__(self, features: int, actions: int, init_std: float = 1.0) -> None:
        super().__init__(features, actions)
        if not init_std > 0:
            raise ValueError(f"init_std must be positive, got {init_std}")
        self.log_std = nn.Parameter(torch.full((actions,), math.log(init_std)))
        with torch.no_grad():
            nn.init.xavier_uniform_(self.weight)
            nn.init.zeros_(self.bias)

    def forward(self, features: Tensor) -> Tensor:
        mean = F.linear(features, self.weight, self.bias)
        log_std = self.log_std.clamp(min=MIN_LOG_STD)
        return torch.cat([mean, log_std.expand_as(mean)], dim=-1)


class GaussianPolicy(nn.Module):
    """``body`` (a backbone without a head: ``model(input_shape, None)``) and a
    ``GaussianHead`` on its ``embedding_size`` features."""

    def __init__(self, body: nn.Module, actions: int, init_std: float = 1.0) -> None:
        super().__init__()
        self.body = body
        self.head = GaussianHead(int(body.embedding_size), actions, init_std)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def gaussian_log_prob(out: Tensor, actions: Tensor) -> Tensor:
    """``[...]``: the log density of ``actions`` ``[..., A]`` under a ``GaussianHead``'s
    ``out`` ``[..., 2A]``, summed over the action's dimensions."""
    mean, log_std = out.chunk(2, dim=-1)
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_sample(out: Tensor, noise: Tensor) -> Tensor:
    """The action ``mean + std * noise`` for standard normal ``noise`` of the means' shape."""
    mean, log_std = out.chunk(2, dim=-1)
    return mean + torch.exp(log_std) * noise


__all__ = ["GaussianHead", "GaussianPolicy", "gaussian_log_prob", "gaussian_sample"]
