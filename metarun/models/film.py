"""FiLM (Perez et al. 2018) after every BatchNorm of an encoder: ``gamma * x + beta`` per
channel, with the task's own ``gamma`` and ``beta`` (CNAPs' feature adaptation).

The layers are forward hooks on the BatchNorm modules, not new modules, so the encoder's state
dict keeps its keys: an encoder pretrained by any learner (``pretrained.from``) loads as it is.
A layer's current modulation is an attribute of the BatchNorm module itself (so a copied
learner modulates its own copy); outside ``FiLMHooks.conditioned`` it is None and the hooks do
nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from torch import Tensor, nn

Modulation = tuple[Tensor, Tensor]  # gamma and beta, [channels] each
ATTRIBUTE = "film_modulation"
GENERATED = "film_generated"


Generator = Callable[[Tensor], Modulation]  # a layer's input [n, C, ...] to its modulation


def film_hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor | None:
    modulation = module.__dict__.get(ATTRIBUTE)
    if modulation is None:
        return None
    if callable(modulation):  # autoregressive: made from what reaches this layer, then kept
        modulation = modulation(inputs[0])
        module.__dict__[GENERATED] = modulation
    gamma, beta = modulation
    shape = (1, -1) + (1,) * (output.dim() - 2)
    return output * gamma.view(shape) + beta.view(shape)


class FiLMHooks:
    """The BatchNorm layers of ``encoder``, in forward order, each followed by FiLM."""

    def __init__(self, encoder: nn.Module) -> None:
        self.layers = [
            m for m in encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        if not self.layers:
            raise ValueError(f"{type(encoder).__name__} has no BatchNorm layer for FiLM")
        self.channels = [layer.num_features for layer in self.layers]
        for layer in self.layers:
            layer.__dict__[ATTRIBUTE] = None
            layer.register_forward_hook(film_hook)

    @contextlib.contextmanager
    def conditioned(self, modulations: Sequence[Modulation]) -> Iterator[None]:
        """Within the block, layer ``i``'s output is ``gamma_i * x + beta_i``."""
        if len(modulations) != len(self.layers):
            raise ValueError(f"{len(self.layers)} FiLM layers, {len(modulations)} modulations")
        for layer, modulation in zip(self.layers, modulations, strict=True):
            layer.__dict__[ATTRIBUTE] = modulation
        try:
            yield
        finally:
            for layer in self.layers:
                layer.__dict__[ATTRIBUTE] = None

    @contextlib.contextmanager
    def generating(self, generators: Sequence[Generator]) -> Iterator[list[Modulation]]:
        """Within the block, layer ``i`` makes its modulation from its own input (the adapted
        earlier layers' output) with ``generators[i]`` and applies it; the list yielded holds
        them once the block ends, in layer order, for ``conditioned`` (CNAPs' autoregressive
        FiLM)."""
        if len(generators) != len(self.layers):
            raise ValueError(f"{len(self.layers)} FiLM layers, {len(generators)} generators")
        made: list[Modulation] = []
        for layer, generator in zip(self.layers, generators, strict=True):
            layer.__dict__[ATTRIBUTE] = generator
            layer.__dict__.pop(GENERATED, None)
        try:
            yield made
        finally:
            for layer in self.layers:
                layer.__dict__[ATTRIBUTE] = None
            generated = [layer.__dict__.pop(GENERATED, None) for layer in self.layers]
        if any(m is None for m in generated):
            raise RuntimeError("a FiLM layer was not reached by the forward pass")
        made[:] = generated


__all__ = ["FiLMHooks", "Modulation"]
