"""ProtoNet's defining computation: logits are negative squared Euclidean distances from each
query embedding to the class means of the support embeddings."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
from learner_helpers import assert_trains_as_its_episodes
from torch import nn

from metarun.algorithms import ProtoNet
from metarun.algorithms.protonet import prototype_logits
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import Conv4


def identity_encoder(input_shape: tuple[int, ...], out_features: int | None) -> nn.Module:
    assert out_features is None  # ProtoNet asks for an embedding, not a classifier head
    return nn.Flatten()


def test_logits_equal_the_closed_form_on_a_hand_made_episode() -> None:
    learner = ProtoNet(identity_encoder, TaskSpec("classification", (2,), 2))
    # Class 0 support: (0,0) and (2,0) -> prototype (1,0); class 1: (0,2) and (0,4) -> (0,3).
    support_x = torch.tensor([[[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 4.0]]])
    support_y = torch.tensor([[0, 1, 0, 1]])
    query_x = torch.tensor([[[1.0, 1.0], [0.0, 3.0], [3.0, 0.0]]])
    query_y = torch.tensor([[0, 1, 0]])
    batch = EpisodeBatch(support_x, support_y, query_x, query_y, ways=2)
    expected = -torch.tensor([[[1.0, 5.0], [10.0, 0.0], [4.0, 18.0]]])
    torch.testing.assert_close(learner.predict(batch), expected)

    loss, metrics = learner.meta_loss(batch)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(expected[0], query_y[0]))
    assert metrics["acc"].item() == pytest.approx(100.0)


def test_prototype_logits_match_a_brute_force_computation() -> None:
    g = torch.Generator().manual_seed(0)
    support = torch.randn(3, 10, 7, generator=g)
    labels = torch.arange(5).repeat(2).expand(3, -1)
    query = torch.randn(3, 4, 7, generator=g)
    logits = prototype_logits(support, labels, query, ways=5)
    for b in range(3):
        for c in range(5):
            prototype = support[b][labels[b] == c].mean(0)
            torch.testing.assert_close(logits[b, :, c], -((query[b] - prototype) ** 2).sum(-1))


def test_support_and_query_share_one_encoder_pass_per_episode() -> None:
    calls = []

    class Recording(nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return x.flatten(1)

    learner = ProtoNet(lambda *_: Recording(), TaskSpec("classification", (3,), 2))
    batch = EpisodeBatch(
        torch.rand(2, 4, 3),
        torch.tensor([[0, 0, 1, 1]] * 2),
        torch.rand(2, 6, 3),
        torch.tensor([[0, 1, 0, 1, 0, 1]] * 2),
        ways=2,
    )
    learner.meta_loss(batch)
    assert calls == [4 + 6, 4 + 6]  # training: BatchNorm sees each episode on its own
    learner.eval()
    learner.predict(batch)
    assert calls[2:] == [2 * (4 + 6)]  # evaluation (running statistics): one pass


def test_a_meta_batch_trains_as_the_mean_of_its_episodes() -> None:
    """However episodes are grouped (one pass, one at a time, spread over processes), the loss,
    meta-gradient and BatchNorm running statistics are those of the episodes on their own: the
    property that lets hardware=ddp shard a meta-batch without changing the result."""
    g = torch.Generator().manual_seed(0)
    batch = EpisodeBatch(
        torch.rand(2, 6, 1, 28, 28, generator=g, dtype=torch.float64),
        torch.tensor([[0, 0, 1, 1, 2, 2]] * 2),
        torch.rand(2, 9, 1, 28, 28, generator=g, dtype=torch.float64),
        torch.arange(3).repeat(3).expand(2, -1),
        3,
    )

    def fresh() -> ProtoNet:
        torch.manual_seed(0)
        task = TaskSpec("classification", (1, 28, 28), 3)
        return ProtoNet(partial(Conv4, hidden_channels=8), task, meta_batch_size=2).double()

    assert_trains_as_its_episodes(fresh(), [fresh(), fresh()], batch)


def test_adapt_equals_predict_in_eval_mode() -> None:
    torch.manual_seed(0)
    learner = ProtoNet(
        partial(Conv4, hidden_channels=8), TaskSpec("classification", (1, 28, 28), 3)
    )
    learner.eval()
    batch = EpisodeBatch(
        torch.rand(2, 6, 1, 28, 28),
        torch.tensor([[0, 0, 1, 1, 2, 2]] * 2),
        torch.rand(2, 9, 1, 28, 28),
        torch.arange(3).repeat(3).expand(2, -1),
        3,
    )
    with torch.no_grad():
        batched = learner.predict(batch)
        for t in range(2):
            classify = learner.adapt(batch.support_x[t], batch.support_y[t])
            torch.testing.assert_close(classify(batch.query_x[t]), batched[t], atol=1e-4, rtol=1e-5)


def test_meta_loss_trains_the_encoder() -> None:
    torch.manual_seed(0)
    learner = ProtoNet(
        partial(Conv4, hidden_channels=8), TaskSpec("classification", (1, 28, 28), 3)
    )
    batch = EpisodeBatch(
        torch.rand(1, 3, 1, 28, 28),
        torch.arange(3)[None],
        torch.rand(1, 6, 1, 28, 28),
        torch.arange(3).repeat(2)[None],
        3,
    )
    loss, _ = learner.meta_loss(batch)
    loss.backward()
    grads = [p.grad for p in learner.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_paper_training_episodes_are_60_way_with_5_queries() -> None:
    learner = ProtoNet(partial(Conv4), TaskSpec("classification", (1, 28, 28), 5))
    assert learner.training_episodes(EpisodeSpec(5, 1, 15)) == EpisodeSpec(60, 1, 5)
    assert learner.meta_batch_size == 1 and learner.autocast_safe


def test_regression_tasks_are_refused_with_the_key() -> None:
    with pytest.raises(ConfigError, match="algorithm: protonet classifies"):
        ProtoNet(partial(Conv4), TaskSpec("regression", (1,), 1))


def test_the_plain_euclidean_distance_is_the_square_root_of_the_squared_one() -> None:
    """``algorithm.distance=euclidean``: easyfsl's ``-torch.cdist``, on the hand-made episode
    above: distances 1, sqrt(5), sqrt(10), 0, 2, sqrt(18)."""
    learner = ProtoNet(identity_encoder, TaskSpec("classification", (2,), 2), distance="euclidean")
    support_x = torch.tensor([[[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 4.0]]])
    query_x = torch.tensor([[[1.0, 1.0], [0.0, 3.0], [3.0, 0.0]]])
    batch = EpisodeBatch(support_x, torch.tensor([[0, 1, 0, 1]]), query_x, torch.zeros(1, 3), 2)
    expected = -torch.tensor([[[1.0, 5.0], [10.0, 0.0], [4.0, 18.0]]]).sqrt()
    torch.testing.assert_close(learner.predict(batch), expected)


def conv_protonet(embedding: str) -> ProtoNet:
    torch.manual_seed(0)
    task = TaskSpec("classification", (1, 16, 16), 3)
    return ProtoNet(partial(Conv4, hidden_channels=4), task, embedding=embedding).double()


@pytest.mark.parametrize("embedding", ["joint", "separate"])
def test_the_embedding_key_says_which_images_share_batchnorm_statistics(embedding: str) -> None:
    """``joint``: support and queries in one training pass (the authors' code), so BatchNorm
    normalises them together, one running update per episode; ``separate`` (easyfsl's): two
    passes, each set with its own statistics, two running updates. Against a copy of the
    encoder called on exactly those images (outside ``one_running_update`` its BatchNorm is
    PyTorch's, in training mode)."""
    learner = conv_protonet(embedding)
    reference = copy.deepcopy(learner.encoder)
    g = torch.Generator().manual_seed(1)
    support = torch.rand(1, 6, 1, 16, 16, generator=g, dtype=torch.float64)
    query = torch.rand(1, 6, 1, 16, 16, generator=g, dtype=torch.float64)
    labels = torch.arange(3).repeat_interleave(2)[None]
    batch = EpisodeBatch(support, labels, query, labels, ways=3)
    logits = learner._logits(batch)
    if embedding == "joint":
        both = reference(torch.cat([support[0], query[0]]))
        s, q = both[:6], both[6:]
    else:
        s, q = reference(support[0]), reference(query[0])
    torch.testing.assert_close(logits[0], prototype_logits(s[None], labels, q[None], 3)[0])
    # Running statistics: one momentum update per pass.
    norms = (m for m in learner.encoder.modules() if isinstance(m, nn.modules.batchnorm._NormBase))
    first = next(norms)
    tracked = int(first.num_batches_tracked)
    assert tracked == (1 if embedding == "joint" else 2)


def test_the_two_embeddings_differ_in_training_and_agree_in_evaluation() -> None:
    """Guards the test above (the key changes what is computed) and shows that evaluation, on
    running statistics, does not depend on it."""
    g = torch.Generator().manual_seed(2)
    support = torch.rand(2, 6, 1, 16, 16, generator=g, dtype=torch.float64)
    query = torch.rand(2, 6, 1, 16, 16, generator=g, dtype=torch.float64)
    labels = torch.arange(3).repeat_interleave(2).expand(2, -1)
    batch = EpisodeBatch(support, labels, query, labels, ways=3)
    joint, separate = conv_protonet("joint"), conv_protonet("separate")
    assert (joint._logits(batch) - separate._logits(batch)).abs().max() > 1e-3
    joint, separate = conv_protonet("joint").eval(), conv_protonet("separate").eval()
    torch.testing.assert_close(joint.predict(batch), separate.predict(batch))


@pytest.mark.parametrize(("key", "value"), [("distance", "cosine"), ("embedding", "twice")])
def test_bad_distance_or_embedding_names_its_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"algorithm.{key}"):
        ProtoNet(identity_encoder, TaskSpec("classification", (2,), 2), **{key: value})
