"""The shared episode embedding: per-episode BatchNorm statistics in training, one pass in eval."""

from __future__ import annotations

import torch
from torch import nn

from metarun.models import Conv4, embed_episodes, embedding_size, use_episode_statistics


def encoder() -> nn.Module:
    torch.manual_seed(0)
    return use_episode_statistics(Conv4((1, 16, 16), None, hidden_channels=4))


def test_training_normalises_each_episode_with_its_own_statistics() -> None:
    images = torch.randn(3, 6, 1, 16, 16)
    images[1] = images[1] * 5 + 2  # an episode with other statistics
    together, alone = encoder().train(), encoder().train()

    embedded = embed_episodes(together, images)

    expected = torch.stack([embed_episodes(alone, images[i : i + 1])[0] for i in range(3)])
    assert embedded.shape == (3, 6, together.embedding_size)
    torch.testing.assert_close(embedded, expected)
    # Guard: one pass over all episodes normalises with the pooled statistics instead.
    pooled = encoder().train()(images.flatten(0, 1)).view(3, 6, -1)
    assert not torch.allclose(embedded, pooled, atol=1e-4)


def test_evaluation_embeds_a_batch_in_one_pass_with_running_statistics() -> None:
    images = torch.randn(2, 5, 1, 16, 16)
    model = encoder().eval()

    embedded = embed_episodes(model, images)

    torch.testing.assert_close(embedded[1], model(images[1]))


def test_embedding_size_is_declared_or_measured() -> None:
    model = encoder()
    assert embedding_size(model, (1, 16, 16)) == model.embedding_size == 4
    flat = nn.Sequential(nn.Flatten(), nn.Linear(256, 7), nn.BatchNorm1d(7)).train()
    assert embedding_size(flat, (1, 16, 16)) == 7
    assert flat.training and int(flat[2].num_batches_tracked) == 0  # nothing moved
