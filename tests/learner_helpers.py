"""What the algorithm and model tests share: random float64 image episodes (so comparisons with
a per-task reference loop can be tight) carrying training keys, non-trivial BatchNorm affine
weights, and an independent reference network with PyTorch's own BatchNorm."""

from __future__ import annotations

import copy

import torch
from torch import nn

from metarun.data.episodes import EpisodeBatch
from metarun.models import BatchStatsNorm
from metarun.randomness import task_keys


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
        keys=task_keys(seed, 1, tasks),  # as the trainer gives its training tasks
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


def assert_trains_as_its_episodes(
    together: nn.Module, alone: list[nn.Module], batch: EpisodeBatch
) -> None:
    """A learner whose BatchNorm normalises each episode with its own statistics: its loss,
    meta-gradient and running statistics on ``batch`` are the means of identical learners
    (``alone``, one per episode) on each episode alone, which is what lets ``hardware=ddp``
    shard a meta-batch without changing the result."""
    assert_trains_as_its_shards(together, alone, batch)


def assert_trains_as_its_shards(
    together: nn.Module, parts: list[nn.Module], batch: EpisodeBatch, reseed: int | None = None
) -> None:
    """``together``'s loss, logged metrics, meta-gradient and running statistics on ``batch``
    are the means of identical learners' (``parts``, one per shard) on equal contiguous shards
    of it: what ``hardware=ddp`` averages. ``reseed``: seed torch's global generator alike
    before every shard, as every process of a run is seeded, so that a learner drawing from it
    gives each shard's first task the same numbers (which keys must prevent)."""
    size = len(batch) // len(parts)
    if reseed is not None:
        torch.manual_seed(reseed)
    loss, metrics = together.meta_loss(batch)
    loss.backward()
    logged = []
    for i, learner in enumerate(parts):
        if reseed is not None:
            torch.manual_seed(reseed)
        shard, shard_metrics = learner.meta_loss(batch.select(slice(i * size, (i + 1) * size)))
        shard.backward()
        logged.append(shard_metrics)
    for key, value in metrics.items():  # the loss and the logged scores
        torch.testing.assert_close(value, sum(m[key] for m in logged) / len(parts), msg=key)
    shards = [dict(learner.named_parameters()) for learner in parts]
    for name, parameter in together.named_parameters():
        if parameter.grad is None:
            assert all(shard[name].grad is None for shard in shards), name
            continue
        mean_grad = sum(shard[name].grad for shard in shards) / len(parts)
        torch.testing.assert_close(parameter.grad, mean_grad, msg=name)
    states = [learner.state_dict() for learner in parts]
    for name, value in together.state_dict().items():
        if "running" in name:
            mean = sum(state[name] for state in states) / len(parts)
            torch.testing.assert_close(value, mean, msg=name)
