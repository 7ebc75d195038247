"""CNAPs' feature-adaptation network: from the task representation ``z``, a ``(gamma, beta)``
for every FiLM layer of the encoder (``cambridge-mlg/cnaps``, ``src/adaptation_networks.py``,
``FilmLayerNetwork``, read for these facts).

Per adapted layer of ``C`` channels: a shared ``Linear(z, C)`` and ReLU, then one processor each
for ``gamma`` and ``beta`` (three residual ``Linear(C, C)`` layers with ReLUs between), each
output multiplied by a learned regulariser vector initialised from N(0, 0.001):
``gamma = 1 + processor_g(h) * r_g``, ``beta = processor_b(h) * r_b``, so the encoder starts
within about 0.001 of itself (exactly itself with zero regularisers). The paper's regulariser
is ``sum r^2`` over all of them, added to each task's loss with weight 0.001.

Two departures: the authors' code groups the FiLM layers of a ResNet stage under one shared
layer (a stage's two blocks and their two BatchNorms each); here every BatchNorm is its own
layer, which is what a Conv-4 has. And its four regulariser parameters of one block are made
from one tensor (``nn.Parameter`` of the same storage, so they alias and move together); here
each is its own.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from metarun.models.film import Modulation

REGULARISER_STD = 0.001


class DenseResidual(nn.Module):
    """``x + Linear(x)``: the processors' layer (``DenseResidualLayer``)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(size, size)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.linear(x)


def processor(size: int) -> nn.Sequential:
    return nn.Sequential(
        DenseResidual(size), nn.ReLU(), DenseResidual(size), nn.ReLU(), DenseResidual(size)
    )


class FiLMLayerGenerator(nn.Module):
    """``z`` ``[B, z_size]`` to one layer's ``gamma``, ``beta`` ``[B, C]``."""

    def __init__(self, z_size: int, channels: int) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Linear(z_size, channels), nn.ReLU())
        self.gamma = processor(channels)
        self.beta = processor(channels)
        self.gamma_regulariser = nn.Parameter(torch.randn(channels) * REGULARISER_STD)
        self.beta_regulariser = nn.Parameter(torch.randn(channels) * REGULARISER_STD)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        h = self.shared(z)
        gamma = 1.0 + self.gamma(h) * self.gamma_regulariser
        return gamma, self.beta(h) * self.beta_regulariser

    def regularisation(self) -> Tensor:
        return (self.gamma_regulariser**2).sum() + (self.beta_regulariser**2).sum()


class FiLMAdaptation(nn.Module):
    """One ``FiLMLayerGenerator`` per FiLM layer of the encoder."""

    def __init__(self, z_size: int, channels: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(FiLMLayerGenerator(z_size, c) for c in channels)

    def forward(self, z: Tensor) -> list[Modulation]:
        return [layer(z) for layer in self.layers]

    def regularisation(self) -> Tensor:
        """The paper's ``sum r^2`` over every regulariser."""
        return torch.stack([layer.regularisation() for layer in self.layers]).sum()


class FiLMARLayerGenerator(nn.Module):
    """The autoregressive variant's generator of one layer (``FilmArLayerNetwork``): the
    context's activations reaching the layer ``[n, C, ...]``, averaged over space, go through
    ``Linear(C, C)``, ReLU and three residual layers, are averaged over the set, then through
    ``Linear(C, C)`` and ReLU, and are joined to ``z`` before the ``gamma`` and ``beta``
    processors (a ``Linear(C + z, C)``, ReLU, then three residual layers), with the same
    regularisers as ``FiLMLayerGenerator``.

    Departure: the authors' local representation is the previous ResNet stage's output (the
    input of the stage being adapted); here it is what reaches this BatchNorm, the layer's own
    convolution of the adapted earlier layers' output, which is what a forward hook sees."""

    def __init__(self, z_size: int, channels: int) -> None:
        super().__init__()
        self.pre = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), processor(channels))
        self.post = nn.Sequential(nn.Linear(channels, channels), nn.ReLU())
        self.gamma = nn.Sequential(
            nn.Linear(channels + z_size, channels), nn.ReLU(), processor(channels)
        )
        self.beta = nn.Sequential(
            nn.Linear(channels + z_size, channels), nn.ReLU(), processor(channels)
        )
        self.gamma_regulariser = nn.Parameter(torch.randn(channels) * REGULARISER_STD)
        self.beta_regulariser = nn.Parameter(torch.randn(channels) * REGULARISER_STD)

    def forward(self, activations: Tensor, z: Tensor) -> Modulation:
        """``activations`` ``[n, C, ...]`` of one set and its ``z`` ``[z_size]``."""
        local = self.pre(activations.flatten(2).mean(-1)).mean(0)
        h = torch.cat([self.post(local), z], dim=-1)
        gamma = 1.0 + self.gamma(h) * self.gamma_regulariser
        return gamma, self.beta(h) * self.beta_regulariser

    def regularisation(self) -> Tensor:
        return (self.gamma_regulariser**2).sum() + (self.beta_regulariser**2).sum()


class FiLMARAdaptation(nn.Module):
    """One ``FiLMARLayerGenerator`` per FiLM layer; ``generators(z)`` are the callables
    ``FiLMHooks.generating`` takes for one set."""

    def __init__(self, z_size: int, channels: list[int]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(FiLMARLayerGenerator(z_size, c) for c in channels)

    def generators(self, z: Tensor) -> list:
        return [functools.partial(layer, z=z) for layer in self.layers]

    def regularisation(self) -> Tensor:
        return torch.stack([layer.regularisation() for layer in self.layers]).sum()


class ClassifierGenerator(nn.Module):
    """CNAPs' linear classifier from class means (``LinearClassifierAdaptationNetwork``): a
    class's weights and bias are ``DenseResidualBlock``s of its mean feature, three ELU'd
    linear layers, residual where the sizes agree."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.weights = dense_block(features, features)
        self.bias = dense_block(features, 1)

    def forward(self, means: Tensor) -> tuple[Tensor, Tensor]:
        """Class means ``[..., N, d]`` to weights ``[..., N, d]`` and biases ``[..., N]``."""
        return self.weights(means) + means, self.bias(means).squeeze(-1)


def dense_block(in_size: int, out_size: int) -> nn.Sequential:
    """``DenseResidualBlock`` without its residual (added by the caller where sizes agree)."""
    return nn.Sequential(
        nn.Linear(in_size, out_size),
        nn.ELU(),
        nn.Linear(out_size, out_size),
        nn.ELU(),
        nn.Linear(out_size, out_size),
    )


__all__ = [
    "ClassifierGenerator",
    "DenseResidual",
    "FiLMARAdaptation",
    "FiLMARLayerGenerator",
    "FiLMAdaptation",
    "FiLMLayerGenerator",
]
