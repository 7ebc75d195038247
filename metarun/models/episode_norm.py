"""BatchNorm whose training statistics are those of each episode, not of the whole meta-batch.

A learner that pushes several episodes through one encoder pass (ProtoNet with a meta-batch
above 1) would otherwise normalise every episode with statistics pooled over all of them, so its
loss would depend on which episodes share a pass: a meta-batch of 4 in one process and 2 + 2 on
two processes (``hardware=ddp``) would train differently. ``EpisodeBatchNorm`` normalises each
episode with its own statistics, which makes the loss of a meta-batch the mean of its episodes'
losses however they are grouped.

Running statistics (used in eval mode) take one update per forward pass, with the mean over
episodes of each episode's batch statistics. That update is linear in the statistics, so the
average of the running statistics that several shards of a meta-batch produce equals what the
whole meta-batch produces in one pass; the trainer averages them across processes after every
step. With one episode per pass (ProtoNet's paper default) this is plain ``BatchNorm``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EpisodeBatchNorm(nn.modules.batchnorm._BatchNorm):
    """``BatchNorm{1,2,3}d`` with per-episode statistics in training mode.

    ``episodes`` says how many equal-sized episodes the batch holds, stacked along dim 0; the
    ``per_episode`` context manager sets it for every such layer of a model. Parameter and
    buffer names are those of ``nn.BatchNorm2d``, so state dicts keep their keys.
    """

    episodes: int = 1

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.episodes == 1:
            return super().forward(x)  # running statistics, or one episode: plain BatchNorm
        normalised, mean, var = self._normalise(x, self.episodes)
        if self.track_running_stats:
            self._update_running_stats(mean, var)
        return normalised

    def _normalise(self, x: Tensor, episodes: int) -> tuple[Tensor, Tensor, Tensor]:
        """Each episode normalised with its own statistics, and those statistics ``[B, C]``
        (mean, unbiased variance), computed by the fused kernel on the batch rearranged to
        ``[n, B*C, ...]``: one BatchNorm "channel" per (episode, channel) pair."""
        total, channels = x.shape[:2]
        if total % episodes:
            raise ValueError(f"a batch of {total} cannot hold {episodes} equal episodes")
        per_episode = total // episodes
        rest = x.shape[2:]
        grouped = (
            x.reshape(episodes, per_episode, channels, *rest)
            .transpose(0, 1)
            .reshape(per_episode, episodes * channels, *rest)
        )
        # momentum=1 makes batch_norm write the batch statistics into these buffers.
        stats_dtype = self.running_mean.dtype if self.running_mean is not None else x.dtype
        mean = torch.zeros(episodes * channels, device=x.device, dtype=stats_dtype)
        var = torch.ones(episodes * channels, device=x.device, dtype=stats_dtype)
        weight = self.weight.repeat(episodes) if self.affine else None
        bias = self.bias.repeat(episodes) if self.affine else None
        normalised = F.batch_norm(grouped, mean, var, weight, bias, True, 1.0, self.eps)
        normalised = (
            normalised.reshape(per_episode, episodes, channels, *rest)
            .transpose(0, 1)
            .reshape(x.shape)
        )
        return normalised, mean.view(episodes, channels), var.view(episodes, channels)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # a cumulative average, as in nn.BatchNorm
            factor = 1.0 / float(self.num_batches_tracked)
        else:
            factor = self.momentum
        self.running_mean.lerp_(mean.mean(0).to(self.running_mean.dtype), factor)
        self.running_var.lerp_(var.mean(0).to(self.running_var.dtype), factor)


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
def per_episode(model: nn.Module, episodes: int) -> Iterator[None]:
    """Within the block, the model's ``EpisodeBatchNorm`` layers treat each batch as
    ``episodes`` equal episodes stacked along dim 0."""
    layers = [m for m in model.modules() if isinstance(m, EpisodeBatchNorm)]
    for layer in layers:
        layer.episodes = episodes
    try:
        yield
    finally:
        for layer in layers:
            layer.episodes = 1
