"""ANIL: Almost No Inner Loop (Raghu, Raghu, Bengio & Vinyals 2020, ICLR, "Rapid Learning or
Feature Reuse? Towards Understanding the Effectiveness of MAML").

MAML in which the inner loop adapts only the network's head (its final Linear layer): for each
task, ``w' = w - alpha * grad_w L_support(w; body(x))`` (repeated ``inner_steps`` times), and the
outer update descends the query loss of the adapted head with respect to the head's
initialisation and the body, which is shared by all tasks and learned only in the outer loop.
The paper's finding is that MAML's success is mostly feature reuse, so this matches MAML's
accuracy at a fraction of its cost.

That cost saving is the point, so it is realised here: the body does not change during the
inner loop, so each task's support and query features are computed once (one pass for the
whole meta-batch, lifted over tasks with ``vmap`` so BatchNorm still sees each task's own
statistics), and the inner loop runs on the head alone, vmapped over tasks. The meta-gradient
still reaches the body twice: through the query features and, in second order, through the
support features inside the head's inner gradients (``first_order`` drops only the latter).

The head is ``model.head``, which must be an ``nn.Linear``, and the body is the model with its
head replaced by the identity (the model's forward must end in ``head``, as Conv-4's does).
``batch_norm: per_step`` is refused: its statistics depend on the inner step, so body features
would have to be recomputed every step, which is exactly what ANIL avoids.

Paper defaults: MAML's hyperparameters and architectures (Raghu et al. train ANIL and MAML with
the same settings). MAML's Omniglot 5-way values are the defaults here: alpha 0.4, 1 inner step
in training and 3 at test, 32 tasks per meta-batch, Adam 1e-3; 20-way: alpha 0.1, 5 steps,
16 tasks; MiniImageNet: alpha 0.01, 5 steps (10 at test), 4 tasks (1-shot) or 2 (5-shot).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import Tensor, nn
from torch.func import functional_call

from metarun.algorithms.base import ModelFactory
from metarun.algorithms.episode_ways import adapts_to_support_ways
from metarun.algorithms.gradient import Params, Stats, key_dim
from metarun.algorithms.maml import MAML
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.randomness import stream

HEAD = "head."


class ANIL(MAML):
    """MAML's keys and defaults; only the head adapts."""

    def __init__(self, model: ModelFactory, task: TaskSpec, **keys: Any) -> None:
        if keys.get("batch_norm") == "per_step":
            raise ConfigError(
                "algorithm.batch_norm",
                "ANIL computes body features once per task, but per_step BatchNorm changes them "
                "every inner step; use transductive or none",
            )
        super().__init__(model, task, **keys)

    # -- hooks -----------------------------------------------------------------------------
    def build_model(self, model: ModelFactory) -> nn.Module:
        network = super().build_model(model)
        if not isinstance(getattr(network, "head", None), nn.Linear):
            raise ConfigError(
                "model",
                f"ANIL adapts the model's final Linear layer `head`, which "
                f"{type(network).__name__} does not have; use a classifier such as model=conv4",
            )
        return network

    def inner_parameters(self) -> Params:
        """The head's trainable weights, under their names in the full model."""
        return {HEAD + name: p for name, p in self.model.head.named_parameters() if p.requires_grad}

    # -- the body, once per task -----------------------------------------------------------
    @contextmanager
    def _headless(self) -> Iterator[None]:
        head = self.model.head
        self.model.head = nn.Identity()
        try:
            yield
        finally:
            self.model.head = head

    def embed(self, x: Tensor, keys: Tensor | None = None) -> Tensor:
        """Body features ``[tasks, n, features]`` of inputs ``[tasks, n, ...]``: one pass with
        the shared body weights, each task normalised with its own batch statistics (and
        drawing from its key, ``keys`` ``[tasks]``, if the body draws)."""
        with self._headless():
            return self._vmap(self._with_noise(self.model), (0, key_dim(keys)))(x, keys)

    # -- the inner loop sees features and runs the head only ---------------------------------
    def _forward_with_stats(self, params: Params, x: Tensor, step: int) -> tuple[Tensor, Stats]:
        head_params = {name.removeprefix(HEAD): p for name, p in params.items()}
        return functional_call(self.model.head, head_params, (x,)), {}

    def adapt_batch(
        self,
        support_x: Tensor,
        support_y: Tensor,
        steps: int,
        first_order: bool,
        keys: Tensor | None = None,
        start: Params | None = None,
    ) -> list[tuple[int, Params]]:
        features = self.embed(support_x, stream(keys, "body support"))
        return super().adapt_batch(features, support_y, steps, first_order, keys, start)

    def _query(self, params: Params, x: Tensor, step: int, keys: Tensor | None = None) -> Tensor:
        return super()._query(params, self.embed(x, stream(keys, "body query")), step, keys)

    @adapts_to_support_ways
    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        classify_features = super().adapt(support_x, support_y)

        def classify(query_x: Tensor) -> Tensor:
            return classify_features(self.embed(query_x.unsqueeze(0))[0])

        return classify


__all__ = ["ANIL"]
