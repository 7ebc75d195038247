"""BatchNorm for a meta-batch that goes through the network one episode at a time.

Pushing a whole meta-batch through one pass would normalise every episode with statistics pooled
over all of them, so a learner's loss would depend on which episodes share a pass: a meta-batch
of 4 in one process and 2 + 2 on two processes (``hardware=ddp``) would train differently.
Passing episodes one at a time gives each its own statistics (and is also the fastest on a CPU,
see ``scripts/benchmarks/maml_protonet.py``), but plain BatchNorm would then update its running
statistics once per episode, in order, which again depends on the grouping.

Inside ``one_running_update``, an ``EpisodeBatchNorm`` normalises each call's batch (one
episode) with its own statistics, exactly as ``BatchNorm`` does, and gives the running statistics
(used in eval mode) one update at the end with the mean of the episodes' statistics. That update
is linear in the statistics, so averaging the running statistics that shards of a meta-batch
produce gives what the whole meta-batch produces; the trainer averages them across processes
after every step. Outside the context it is plain ``BatchNorm``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EpisodeBatchNorm(nn.modules.batchnorm._BatchNorm):
    """``BatchNorm{1,2,3}d`` whose running statistics can take one update for several calls.

    Parameter and buffer names are those of ``nn.BatchNorm2d``, so state dicts keep their keys.
    """

    _collected: list[tuple[Tensor, Tensor]] | None = None

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if self._collected is None or not (self.training and self.track_running_stats):
            return super().forward(x)
        # momentum=1 makes batch_norm write this batch's statistics (mean, unbiased variance)
        # into the fresh buffers instead of blending them into the running ones.
        mean = torch.zeros_like(self.running_mean)
        var = torch.ones_like(self.running_var)
        normalised = F.batch_norm(x, mean, var, self.weight, self.bias, True, 1.0, self.eps)
        self._collected.append((mean, var))
        return normalised

    @torch.no_grad()
    def _update_once(self, collected: list[tuple[Tensor, Tensor]]) -> None:
        if not collected:
            return
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # a cumulative average, as in nn.BatchNorm
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        means, variances = (torch.stack(stats).mean(0) for stats in zip(*collected, strict=True))
        self.running_mean.lerp_(means, factor)
        self.running_var.lerp_(variances, factor)


def use_episode_statistics(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer of ``model`` in place by an ``EpisodeBatchNorm`` with the
    same settings, parameters and running statistics."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, EpisodeBatchNorm
        ):
            replacement = EpisodeBatchNorm(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement)
        else:
            use_episode_statistics(child)
    return model


@contextlib.contextmanager
def one_running_update(model: nn.Module) -> Iterator[None]:
    """Within the block, each forward call through ``model`` is one episode; the running
    statistics of its ``EpisodeBatchNorm`` layers are updated once, when the block ends, with
    the mean of the episodes' statistics (not at all if the block fails)."""
    layers = [m for m in model.modules() if isinstance(m, EpisodeBatchNorm)]
    for layer in layers:
        layer._collected = []
    collected: list[list[tuple[Tensor, Tensor]]] = []
    try:
        yield
    finally:
        for layer in layers:
            collected.append(layer._collected or [])
            layer._collected = None
    for layer, stats in zip(layers, collected, strict=True):
        layer._update_once(stats)
