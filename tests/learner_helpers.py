"""What the algorithm and model tests share: random float64 image episodes (so comparisons with
a per-task reference loop can be tight), non-trivial BatchNorm affine weights, and an
independent reference network with PyTorch's own BatchNorm."""

from __future__ import annotations

import copy

import torch
from torch import nn

from metarun.data.episodes import EpisodeBatch
from metarun.models import BatchStatsNorm


def image_batch(
    tasks: int = 3,
    ways: int = 3,
    shots: int = 2,
    queries: int = 2,
    size: int = 16,
    channels: int = 1,
    seed: int = 0,
) -> EpisodeBatch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(ways)

    def images(per_class: int) -> torch.Tensor:
        shape = (tasks, ways * per_class, channels, size, size)
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    return EpisodeBatch(
        support_x=images(shots),
        support_y=labels.repeat_interleave(shots).expand(tasks, -1),
        query_x=images(queries),
        query_y=labels.repeat_interleave(queries).expand(tasks, -1),
        ways=ways,
    )


def vary_batch_norm(learner: nn.Module) -> None:
    """Non-trivial BatchNorm affine weights, so that their (second-order) terms matter."""
    with torch.no_grad():
        for module in learner.modules():
            if isinstance(module, BatchStatsNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)


def reference_model(learner: nn.Module) -> nn.Module:
    """``learner.model`` with PyTorch's own batch-statistics BatchNorm in place of
    ``BatchStatsNorm``: an independent reference that the same parameter dict drives."""

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, BatchStatsNorm):
                setattr(module, name, nn.BatchNorm2d(child.num_features, track_running_stats=False))
            else:
                swap(child)

    model = copy.deepcopy(learner.model)
    swap(model)
    return model.double()
