"""SNAIL's defining computation: each query is the last item of the sequence of its episode's
(embedding, one-hot label) support items followed by (its embedding, zero label), and its
logits are the sequence model's output there. Checked against an explicit per-episode,
per-query loop that builds every sequence and runs it whole."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from learner_helpers import assert_trains_as_its_episodes, image_batch

from metarun.algorithms.snail import SNAIL, sequence_items
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import Conv4
from metarun.randomness import task_keys

TINY = {"key_sizes": (4, 6, 5), "value_sizes": (3, 4, 2), "filters": 5}


def learner(ways: int = 3, shots: int = 2, seed: int = 0, **settings) -> SNAIL:
    torch.manual_seed(seed)
    task = TaskSpec("classification", (1, 16, 16), ways)
    model = partial(Conv4, hidden_channels=4)
    return SNAIL(model, task, shots=shots, **{**TINY, **settings}).double()


def test_support_items_carry_one_hot_labels_and_the_query_a_zero_label() -> None:
    support = torch.randn(2, 4, 3)
    labels = torch.tensor([[0, 0, 1, 2], [2, 1, 0, 0]])
    queries = torch.randn(2, 5, 3)
    prefix, tails = sequence_items(support, labels, queries, ways=3)
    assert prefix.shape == (2, 4, 6) and tails.shape == (2, 5, 6)
    torch.testing.assert_close(prefix[..., :3], support)
    torch.testing.assert_close(tails[..., :3], queries)
    for b in range(2):
        for i in range(4):
            expected = torch.zeros(3)
            expected[labels[b, i]] = 1.0
            torch.testing.assert_close(prefix[b, i, 3:], expected)
    assert (tails[..., 3:] == 0).all()


def test_predictions_equal_whole_sequences_built_one_query_at_a_time() -> None:
    """The reference: for every episode and query, the sequence [support items in the eval
    order ..., query with a zero label], run whole through the network; its last output."""
    snail = learner().eval()
    batch = image_batch(tasks=2, ways=3, shots=2, queries=2)
    with torch.no_grad():
        logits = snail.predict(batch)
        order = torch.randperm(6, generator=torch.Generator().manual_seed(0))
        assert not torch.equal(order, torch.arange(6))  # a shuffled, fixed order
        for b in range(2):
            items = []
            for i in order.tolist():
                embedding = snail.encoder(batch.support_x[b, i][None])[0]
                label = F.one_hot(batch.support_y[b, i], 3).double()
                items.append(torch.cat([embedding, label]))
            for m in range(6):
                embedding = snail.encoder(batch.query_x[b, m][None])[0]
                sequence = torch.stack([*items, torch.cat([embedding, torch.zeros(3)])])
                expected = snail.net(sequence[None])[0, -1]
                torch.testing.assert_close(logits[b, m], expected)
        # Guard: the episode's own (label-major) order gives other logits.
        in_order = learner(shuffle_support=False).eval().predict(batch)
        assert not torch.allclose(in_order, logits)


def test_a_querys_prediction_ignores_the_other_queries_and_episodes() -> None:
    snail = learner().eval()
    batch = image_batch(tasks=3, ways=3, shots=2, queries=2)
    with torch.no_grad():
        logits = snail.predict(batch)
        changed = batch.query_x.clone()
        changed[:, 1:] = torch.rand_like(changed[:, 1:])  # every query but the first
        other = snail.predict(
            EpisodeBatch(batch.support_x, batch.support_y, changed, batch.query_y, 3)
        )
        torch.testing.assert_close(other[:, 0], logits[:, 0])
        assert not torch.allclose(other[:, 1:], logits[:, 1:])  # guard
        for t in range(3):  # alone, each episode is predicted as in the batch
            torch.testing.assert_close(snail.predict(batch.select(slice(t, t + 1)))[0], logits[t])


def test_predictions_depend_on_the_support_labels() -> None:
    snail = learner().eval()
    batch = image_batch(tasks=1, ways=3, shots=2, queries=2)
    swapped = EpisodeBatch(
        batch.support_x, (batch.support_y + 1) % 3, batch.query_x, batch.query_y, 3
    )
    with torch.no_grad():
        assert not torch.allclose(snail.predict(batch), snail.predict(swapped))


def test_adapt_equals_predict_in_eval_mode() -> None:
    snail = learner().eval()
    batch = image_batch(tasks=2, ways=3, shots=2, queries=3)
    with torch.no_grad():
        batched = snail.predict(batch)
        for t in range(2):
            classify = snail.adapt(batch.support_x[t], batch.support_y[t])
            torch.testing.assert_close(classify(batch.query_x[t]), batched[t])


def test_training_shuffles_each_episodes_support_and_evaluation_uses_one_fixed_order() -> None:
    snail = learner()
    keys = task_keys(1, 1, 8)
    order = snail.support_order(8, 6, torch.device("cpu"), keys)
    assert all(sorted(row.tolist()) == list(range(6)) for row in order)  # permutations
    assert len({tuple(row.tolist()) for row in order}) > 1  # drawn per episode
    # An episode's order follows its own key, not its place in the batch.
    torch.testing.assert_close(
        snail.support_order(1, 6, torch.device("cpu"), keys[5:6])[0], order[5]
    )
    with pytest.raises(ValueError, match="EpisodeBatch.keys"):
        snail.support_order(8, 6, torch.device("cpu"))
    snail.eval()
    fixed = snail.support_order(8, 6, torch.device("cpu"))
    assert len({tuple(row.tolist()) for row in fixed}) == 1
    torch.testing.assert_close(fixed[:1], snail.support_order(1, 6, torch.device("cpu")))


def test_a_meta_batch_trains_as_the_mean_of_its_episodes() -> None:
    """BatchNorm normalises each episode with its own statistics (as ProtoNet), so the loss,
    meta-gradient and running statistics are those of the episodes on their own."""
    batch = image_batch(tasks=2, ways=3, shots=2, queries=2)
    together, *alone = (learner(shuffle_support=False) for _ in range(3))
    assert_trains_as_its_episodes(together, alone, batch)


def test_the_loss_is_cross_entropy_at_each_querys_last_position_and_trains_every_part() -> None:
    """Training mode: each episode's images are embedded together (BatchNorm with the
    episode's statistics); the reference builds every query's whole sequence."""
    snail = learner(shuffle_support=False)
    batch = image_batch(tasks=2, ways=3, shots=2, queries=2)
    loss, metrics = snail.meta_loss(batch)
    losses = []
    with torch.no_grad():
        for b in range(2):
            embeddings = snail.encoder(torch.cat([batch.support_x[b], batch.query_x[b]]))
            labels = F.one_hot(batch.support_y[b], 3).double()
            support = torch.cat([embeddings[:6], labels], dim=1)
            for m in range(6):
                query = torch.cat([embeddings[6 + m], torch.zeros(3)])
                logits = snail.net(torch.cat([support, query[None]])[None])[0, -1]
                losses.append(F.cross_entropy(logits, batch.query_y[b, m]))
    torch.testing.assert_close(loss.detach(), torch.stack(losses).mean())
    loss.backward()
    for part in (snail.encoder, snail.net):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert 0.0 <= metrics["acc"].item() <= 100.0


def test_training_episodes_keep_ways_and_shots_with_one_query_per_class() -> None:
    snail = learner(ways=5, shots=1)
    assert snail.training_episodes(EpisodeSpec(5, 1, 15)) == EpisodeSpec(5, 1, 1)
    assert snail.sequence_length == 6 and snail.meta_batch_size == 32 and snail.autocast_safe
    with pytest.raises(ConfigError, match="algorithm.shots: is 1 but the episodes are 5-shot"):
        snail.training_episodes(EpisodeSpec(5, 5, 15))


def test_regression_tasks_are_refused_with_the_key() -> None:
    with pytest.raises(ConfigError, match="algorithm: snail classifies.*algorithm=maml"):
        SNAIL(partial(Conv4), TaskSpec("regression", (1,), 1))


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"meta_batch_size": 0}, "algorithm.meta_batch_size"),
        ({"shots": 0}, "algorithm.shots"),
        ({"train_queries": 0}, "algorithm.train_queries"),
        ({"filters": 0}, "algorithm.filters"),
        ({"value_sizes": (3, 4)}, "algorithm.value_sizes"),
        ({"key_sizes": (4, 0, 5)}, "algorithm.key_sizes"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_key(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        learner(**settings)
    assert error.value.key == key
