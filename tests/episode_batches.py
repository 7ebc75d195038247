"""Random image episodes for the algorithm and model tests: float64, so that comparisons with a
per-task reference loop can be tight."""

from __future__ import annotations

import torch

from metarun.data.episodes import EpisodeBatch


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
