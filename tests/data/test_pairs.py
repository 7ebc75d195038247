"""Siamese training pairs cut from an episode: balanced, truthful about classes, and using every
image. Checks read each image's class from its pixels, never from the pairing code."""

from __future__ import annotations

import pytest
import torch

from metarun.data.episodes import ClassImages, EpisodeBatch, EpisodeSampler, EpisodeSpec
from metarun.data.pairs import Pairs, episode_pairs


def labelled_episodes(ways: int, shots: int, queries: int, tasks: int = 2, seed: int = 0):
    """Episodes of a real sampler whose every pixel holds the image's class in the split, so a
    paired image's class can be read off its pixels (and checked against ``classes``)."""
    counts = torch.full((12,), 6)
    images = torch.arange(12).repeat_interleave(6).to(torch.uint8)[:, None, None, None]
    classes = ClassImages(images.expand(-1, 1, 4, 4).clone(), counts, [str(c) for c in range(12)])
    sampler = EpisodeSampler(classes, EpisodeSpec(ways, shots, queries), decode=lambda x: x.float())
    return sampler.gather(sampler.draw(tasks, torch.Generator().manual_seed(seed)))


def check_pairs(batch: EpisodeBatch, pairs: Pairs) -> None:
    """Same pairs share a class, different pairs do not, judged from the images themselves."""
    left, right = pairs.take(batch.support_x, batch.query_x)
    left_class, right_class = left[..., 0, 0, 0], right[..., 0, 0, 0]
    assert torch.equal(left_class == right_class, pairs.same)


@pytest.mark.parametrize(("ways", "shots", "queries"), [(3, 1, 1), (4, 2, 3), (5, 3, 1), (2, 1, 4)])
def test_pairs_are_balanced_truthful_and_use_every_image(ways, shots, queries) -> None:
    batch = labelled_episodes(ways, shots, queries)
    pairs = episode_pairs(batch)
    count = 2 * ways * max(shots, queries)
    for tensor in (pairs.left, pairs.right, pairs.same):
        assert tensor.shape == (2, count)
    assert pairs.same.dtype == torch.bool
    assert torch.equal(pairs.same.sum(1), torch.full((2,), count // 2))  # exactly half same
    check_pairs(batch, pairs)
    # The pixels agree with the episodes' global labels: way n is class classes[b, n].
    left, right = pairs.take(batch.support_x, batch.query_x)
    episodes = torch.arange(2)[:, None]
    expected_left = batch.classes[episodes, batch.support_y[episodes, pairs.left]]
    torch.testing.assert_close(left[..., 0, 0, 0], expected_left.float())
    assert left.shape == right.shape == (2, count, 1, 4, 4)
    for b in range(2):
        assert set(pairs.left[b].tolist()) == set(range(ways * shots))
        assert set(pairs.right[b].tolist()) == set(range(ways * queries))


def test_the_check_can_fail() -> None:
    batch = labelled_episodes(4, 1, 1)
    pairs = episode_pairs(batch)
    wrong = Pairs(pairs.left, pairs.right, ~pairs.same)
    with pytest.raises(AssertionError):
        check_pairs(batch, wrong)


def test_examples_in_any_order_pair_by_their_labels() -> None:
    batch = labelled_episodes(4, 2, 3)
    g = torch.Generator().manual_seed(1)
    s, q = torch.randperm(8, generator=g), torch.randperm(12, generator=g)
    shuffled = EpisodeBatch(
        batch.support_x[:, s], batch.support_y[:, s], batch.query_x[:, q], batch.query_y[:, q], 4
    )
    pairs = episode_pairs(shuffled)
    check_pairs(shuffled, pairs)
    assert int(pairs.same.sum()) == pairs.same.numel() // 2


def test_koch_minibatch_from_a_64_way_one_plus_one_episode() -> None:
    labels = torch.arange(64)[None]
    batch = EpisodeBatch(torch.rand(1, 64, 2), labels, torch.rand(1, 64, 2), labels, 64)
    pairs = episode_pairs(batch)
    assert pairs.same.shape == (1, 128) and int(pairs.same.sum()) == 64
    left, right = pairs.take(torch.rand(1, 64, 7), torch.rand(1, 64, 7))  # embeddings work too
    assert left.shape == right.shape == (1, 128, 7)


def test_one_way_episodes_cannot_make_different_pairs() -> None:
    labels = torch.zeros(1, 2, dtype=torch.long)
    batch = EpisodeBatch(torch.rand(1, 2, 3), labels, torch.rand(1, 2, 3), labels, 1)
    with pytest.raises(ValueError, match="at least 2 ways"):
        episode_pairs(batch)
