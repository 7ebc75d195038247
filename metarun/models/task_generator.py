"""MetaGAN's generator: images of "almost the task's" classes, from a task embedding and noise.

The task is represented by the mean of an encoder's embeddings of its support images (MetaGAN,
Zhang et al. 2018, section 3.2: the generator is conditioned on the task through a dataset-level
representation of its support set); each generated image decodes that vector together with its
own noise through a small DCGAN-style decoder (a linear layer to a quarter-size map, then two
nearest-neighbour upsamplings, each followed by a 3x3 convolution). The output is not squashed:
images are normalised per data set (``dataset.normalize``), so the generator learns their range.

Noise comes from the task's key (``metarun.randomness.normal``), so a task generates the same
images wherever it runs; evaluation episodes use ``EVALUATION_KEY``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from metarun.models.embedding import embed_episodes, embedding_size
from metarun.randomness import EVALUATION_KEY, normal, stream


class Decoder(nn.Module):
    """``[n, in_features]`` vectors to ``[n, C, H, W]`` images."""

    def __init__(self, in_features: int, image_shape: tuple[int, ...], channels: int) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        c, h, w = self.image_shape
        self.grid = (math.ceil(h / 4), math.ceil(w / 4))
        self.channels = channels
        self.project = nn.Linear(in_features, 2 * channels * self.grid[0] * self.grid[1])
        self.up = nn.Sequential(
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(channels, c, 3, padding=1),
        )

    def forward(self, z: Tensor) -> Tensor:
        _, h, w = self.image_shape
        x = self.project(z).view(len(z), 2 * self.channels, *self.grid)
        return self.up(x)[:, :, :h, :w]


class TaskGenerator(nn.Module):
    """Generates ``count`` images per episode from its support set: ``[B, count, C, H, W]``."""

    def __init__(
        self,
        encoder: nn.Module,
        image_shape: tuple[int, ...],
        noise_size: int = 100,
        channels: int = 32,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.noise_size = noise_size
        self.decoder = Decoder(
            embedding_size(encoder, image_shape) + noise_size, image_shape, channels
        )

    def forward(
        self, support_x: Tensor, count: int, keys: Tensor | None, name: str = "fakes"
    ) -> Tensor:
        """``keys`` ``[B]``: the episodes' keys (None in evaluation: ``EVALUATION_KEY`` for
        every episode); ``name`` separates the uses of one episode's noise."""
        tasks = support_x.shape[0]
        task = embed_episodes(self.encoder, support_x, stream(keys, "generator encoder"))
        task = task.mean(1)  # [B, D]: the support set's mean embedding
        if keys is None:
            keys = torch.full((tasks,), EVALUATION_KEY, dtype=torch.int64, device=task.device)
        noise = normal(stream(keys, name), (count, self.noise_size), dtype=task.dtype)
        z = torch.cat([task.unsqueeze(1).expand(-1, count, -1), noise.to(task.device)], -1)
        images = self.decoder(z.flatten(0, 1))
        return images.view(tasks, count, *images.shape[1:])


__all__ = ["Decoder", "TaskGenerator"]
