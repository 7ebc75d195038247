"""Embedding a meta-batch of episodes with one shared encoder, as every metric and memory
learner does.

In training each episode goes through the encoder on its own, so BatchNorm normalises it with
its own statistics: the loss is then the mean of the episodes' own losses however they are
grouped (one call, several, or spread over processes), and the running statistics take one
update per meta-batch (``one_running_update``). In evaluation, where BatchNorm uses running
statistics, one call embeds the whole batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metarun.models.episode_norm import one_running_update
from metarun.randomness import drawing_from, keys_for


def embed_episodes(encoder: nn.Module, images: Tensor, keys: Tensor | None = None) -> Tensor:
    """Embeddings ``[B, n, D]`` of episodes' images ``[B, n, ...]``. An encoder that draws
    random numbers in training (DropBlock) draws each episode's from its key (``keys``
    ``[B]``, ``EpisodeBatch.keys``)."""
    if not encoder.training:
        return encoder(images.flatten(0, 1)).reshape(*images.shape[:2], -1)
    keys = keys_for(encoder, keys, "encoder")
    with one_running_update(encoder):
        embeddings = []
        for i, episode in enumerate(images):
            with drawing_from(None if keys is None else keys[i]):
                embeddings.append(encoder(episode).flatten(1))
        return torch.stack(embeddings)


def embedding_size(encoder: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The encoder's output width: its ``embedding_size`` (Conv-4, ResNet-12), else measured on
    a blank input in eval mode, so that no BatchNorm statistics move."""
    size = getattr(encoder, "embedding_size", None)
    if size is not None:
        return int(size)
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        reference = next(encoder.parameters(), None)
        blank = torch.zeros(1, *input_shape)
        if reference is not None:
            blank = blank.to(device=reference.device, dtype=reference.dtype)
        size = encoder(blank).flatten(1).shape[1]
    encoder.train(was_training)
    return int(size)
