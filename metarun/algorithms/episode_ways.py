"""Heads of a fixed size answering episodes of fewer ways (variable-shape episodes).

A learner whose network ends in a classifier head has ``task.output_size`` outputs, the most
ways an episode can have (``dataset.variable.max_ways``). An episode of ``N`` ways reads the
first ``N`` logits of that head, so that the classes it lacks take no probability and are never
predicted: Meta-Dataset's learners do the same (``google-research/meta-dataset``,
``meta_dataset/learners/optimization_learners.py``: ``self._fc_layer(...)[:, 0:data.way]``).
For fixed-shape episodes (``N`` equal to the head's size) nothing changes.

The slice is a forward hook on the head for the duration of one call, so it applies wherever
the head runs: inside ``torch.func.functional_call``, ``grad`` and ``vmap`` alike.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from torch import Tensor, nn

Method = TypeVar("Method", bound=Callable[..., Any])


@contextlib.contextmanager
def first_ways(head: nn.Module | None, ways: int, outputs: int) -> Iterator[None]:
    """While inside, ``head`` returns its first ``ways`` outputs (of ``outputs``)."""
    if head is None or ways >= outputs:
        yield
        return

    def sliced(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        return output[..., :ways]

    handle = head.register_forward_hook(sliced)
    try:
        yield
    finally:
        handle.remove()


def head_of(network: nn.Module) -> nn.Module | None:
    """The classifier head of a network (its ``head`` module), or the network itself."""
    head = getattr(network, "head", None)
    return head if isinstance(head, nn.Module) else network


def answers_episode_ways(method: Method) -> Method:
    """For a learner's ``meta_loss`` or ``predict`` on one batch: the head (``classifier_head``)
    gives the batch's ``ways`` logits during the call."""

    @functools.wraps(method)
    def call(self: Any, batch: Any, *args: Any, **kwargs: Any) -> Any:
        if self.task.kind != "classification":
            return method(self, batch, *args, **kwargs)
        with first_ways(self.classifier_head(), batch.ways, self.task.output_size):
            return method(self, batch, *args, **kwargs)

    return call  # type: ignore[return-value]


def adapts_to_support_ways(method: Method) -> Method:
    """For a learner's ``adapt(support_x, support_y)``: the head gives the support set's ways
    (its largest label + 1) while adapting and in the classifier returned."""

    @functools.wraps(method)
    def call(self: Any, support_x: Tensor, support_y: Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.task.kind != "classification":
            return method(self, support_x, support_y, *args, **kwargs)
        head, outputs = self.classifier_head(), self.task.output_size
        ways = int(support_y.max()) + 1
        with first_ways(head, ways, outputs):
            classify = method(self, support_x, support_y, *args, **kwargs)

        def classify_ways(query_x: Tensor) -> Tensor:
            with first_ways(head, ways, outputs):
                return classify(query_x)

        return classify_ways

    return call  # type: ignore[return-value]


__all__ = ["adapts_to_support_ways", "answers_episode_ways", "first_ways", "head_of"]
