"""MANN's episode-as-a-sequence: the label offset (step t sees the label of step t-1, never its
own), queries stepped independently from the post-support state, and the loss over every step,
checked against a per-episode, per-query loop."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from learner_helpers import image_batch

from metarun.algorithms.mann import MANN, accuracy_by_sight, label_offset_inputs, sight_numbers
from metarun.algorithms.sequences import fixed_order
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import Conv4
from metarun.models.lru_memory import cosine_read_weights
from metarun.randomness import permutation, stream, task_keys

SMALL = {"memory_slots": 8, "memory_width": 5, "controller_size": 12, "read_heads": 2}


def small_mann(ways: int = 3, size: int = 8, **settings) -> MANN:
    torch.manual_seed(0)
    task = TaskSpec("classification", (1, size, size), ways)
    return MANN(partial(Conv4, hidden_channels=4), task, **{**SMALL, **settings}).double()


@torch.no_grad()
def reference_logits(learner: MANN, batch: EpisodeBatch, order: torch.Tensor) -> tuple:
    """Support-step and query logits, one episode and one query at a time: each query is the
    support sequence followed by that query alone, run from scratch."""
    support_out, query_out = [], []
    for b in range(len(batch)):
        xs = batch.support_x[b][order[b]].flatten(1)
        ys = batch.support_y[b][order[b]]
        previous = [torch.zeros(batch.ways, dtype=xs.dtype)]
        previous += [F.one_hot(y, batch.ways).to(xs.dtype) for y in ys]
        state = learner.cell.initial_state(1, xs)
        logits = []
        for t in range(len(ys)):
            features, state = learner.cell.step(torch.cat([xs[t], previous[t]])[None], state)
            logits.append(learner.classifier(features)[0])
        support_out.append(torch.stack(logits))
        queries = []
        for query in batch.query_x[b]:
            step = torch.cat([query.flatten(), previous[-1]])[None]
            features, _ = learner.cell.step(step, state)
            queries.append(learner.classifier(features)[0])
        query_out.append(torch.stack(queries))
    return torch.stack(support_out), torch.stack(query_out)


def test_predict_matches_a_per_episode_per_query_loop() -> None:
    learner = small_mann()
    learner.eval()
    batch = image_batch(tasks=2, ways=3, shots=2, queries=2, size=8)
    order = fixed_order(6, learner.order_seed).expand(2, -1)
    _, expected = reference_logits(learner, batch, order)
    with torch.no_grad():
        torch.testing.assert_close(learner.predict(batch), expected)
        # Guard: another support order gives other predictions.
        _, other = reference_logits(learner, batch, order.flip(-1))
    assert not torch.allclose(other, expected)


def test_each_step_sees_the_previous_label_and_never_its_own() -> None:
    features = torch.arange(12.0).view(1, 4, 3)
    labels = torch.tensor([[2, 0, 0, 1]])
    inputs = label_offset_inputs(features, labels, ways=3)
    torch.testing.assert_close(inputs[..., :3], features)
    torch.testing.assert_close(inputs[0, 0, 3:], torch.zeros(3))
    for t in range(1, 4):
        torch.testing.assert_close(inputs[0, t, 3:], F.one_hot(labels[0, t - 1], 3).float())
    for t in range(4):  # changing a step's own label leaves its input unchanged
        changed = labels.clone()
        changed[0, t] = (changed[0, t] + 1) % 3
        torch.testing.assert_close(label_offset_inputs(features, changed, 3)[0, t], inputs[0, t])


def test_the_learner_feeds_the_shuffled_support_with_offset_labels(monkeypatch) -> None:
    learner = small_mann()
    batch = image_batch(tasks=2, ways=3, shots=2, queries=2, size=8)
    seen = []
    step = learner.cell.step
    monkeypatch.setattr(learner.cell, "step", lambda x, s: (seen.append(x), step(x, s))[1])
    torch.manual_seed(3)
    learner.meta_loss(batch)
    pixels = 64
    steps = torch.stack(seen[:6], dim=1)  # [B, S, D + N]
    for b in range(2):
        # Every support image once, each with the label of the image before it.
        order = [
            next(i for i in range(6) if torch.equal(batch.support_x[b, i].flatten(), x))
            for x in steps[b, :, :pixels]
        ]
        assert sorted(order) == list(range(6))
        labels = batch.support_y[b][order]
        torch.testing.assert_close(steps[b, 0, pixels:], torch.zeros(3).double())
        for t in range(1, 6):
            torch.testing.assert_close(steps[b, t, pixels:], F.one_hot(labels[t - 1], 3).double())
        queries = seen[6].view(2, 6, -1)[b]  # every query with the last support label
        torch.testing.assert_close(queries[:, :pixels], batch.query_x[b].flatten(1))
        assert torch.all(queries[:, pixels:] == F.one_hot(labels[-1], 3).double())
    assert len(seen) == 7  # six support steps, then one step for all queries


def test_a_query_depends_on_the_support_and_not_on_other_queries() -> None:
    learner = small_mann()
    learner.eval()
    batch = image_batch(tasks=2, ways=3, shots=1, queries=2, size=8)
    with torch.no_grad():
        before = learner.predict(batch)
        batch.query_x[:, 1] = torch.rand_like(batch.query_x[:, 1])
        after = learner.predict(batch)
        torch.testing.assert_close(after[:, [0, 2, 3, 4, 5]], before[:, [0, 2, 3, 4, 5]])
        assert not torch.allclose(after[:, 1], before[:, 1])  # guard: the changed query moved
        batch.support_x[:, 2] = torch.rand_like(batch.support_x[:, 2])
        assert not torch.allclose(learner.predict(batch)[:, 0], after[:, 0])


@pytest.mark.parametrize("encoder", ["pixels", "model"])
def test_predict_equals_adapt_and_does_not_depend_on_the_batch(encoder: str) -> None:
    learner = small_mann(size=16, encoder=encoder)
    learner.eval()
    batch = image_batch(tasks=3, ways=3, shots=2, queries=2, size=16)
    with torch.no_grad():
        batched = learner.predict(batch)
        for t in range(3):
            classify = learner.adapt(batch.support_x[t], batch.support_y[t])
            torch.testing.assert_close(classify(batch.query_x[t]), batched[t])
        alone = batch.select(slice(1, 2))
        torch.testing.assert_close(learner.predict(alone)[0], batched[1])


@pytest.mark.parametrize("support_loss", [True, False])
def test_the_loss_scores_every_support_step_and_every_query(monkeypatch, support_loss) -> None:
    learner = small_mann(support_loss=support_loss)
    batch = image_batch(tasks=2, ways=3, shots=2, queries=2, size=8)
    orders = []
    draw = learner._training_order
    monkeypatch.setattr(
        learner, "_training_order", lambda b: (orders.append(draw(b)), orders[-1])[1]
    )
    loss, metrics = learner.meta_loss(batch)
    order = orders[0]
    support, query = reference_logits(learner, batch, order)
    logits = query.flatten(0, 1)
    targets = batch.query_y.flatten()
    if support_loss:
        logits = torch.cat([support.flatten(0, 1), logits])
        targets = torch.cat([torch.gather(batch.support_y, 1, order).flatten(), targets])
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets))
    accuracy = (query.argmax(-1) == batch.query_y).double().mean() * 100
    torch.testing.assert_close(metrics["acc"], accuracy.float())
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in learner.parameters())


def test_training_orders_differ_between_episodes(monkeypatch) -> None:
    learner = small_mann()
    batch = image_batch(tasks=4, ways=3, shots=2, queries=1, size=8)
    orders = []
    support = learner._support
    monkeypatch.setattr(
        learner, "_support", lambda x, y, order: (orders.append(order), support(x, y, order))[1]
    )
    learner.meta_loss(batch)
    assert len({tuple(o.tolist()) for o in orders[0]}) > 1
    learner.eval()
    learner.predict(batch)
    assert torch.equal(orders[1], fixed_order(6, 0).expand(4, -1))


def test_the_model_encoder_is_trained() -> None:
    learner = small_mann(size=16, encoder="model")
    batch = image_batch(tasks=2, ways=3, shots=1, queries=2, size=16)
    learner.meta_loss(batch)[0].backward()
    grads = [p.grad for p in learner.encoder.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_paper_defaults_and_episode_shapes(compose_config) -> None:
    learner = MANN(partial(Conv4), TaskSpec("classification", (1, 20, 20), 5))
    cell = learner.cell
    assert (cell.memory_slots, cell.memory_width, cell.controller_size) == (128, 40, 200)
    assert cell.read_heads == 4 and cell.usage_decay == 0.95 and learner.meta_batch_size == 16
    assert learner.encoder is None and cell.controller.input_size == 400 + 5 + 4 * 40
    assert not learner.autocast_safe
    assert learner.training_episodes(EpisodeSpec(5, 1, 15)) == EpisodeSpec(5, 1, 15)
    cfg = compose_config(["algorithm=mann"])
    assert cfg.optimizer._target_ == "torch.optim.RMSprop" and cfg.optimizer.lr == 1e-4
    assert cfg.algorithm.memory_slots == 128 and cfg.algorithm.usage_decay == 0.95
    assert compose_config(["algorithm=mann", "optimizer=adam"]).optimizer.lr == 1e-3


def test_regression_tasks_are_refused_with_the_key() -> None:
    with pytest.raises(ConfigError, match="algorithm: mann classifies.*algorithm=maml"):
        MANN(partial(Conv4), TaskSpec("regression", (1,), 1))


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ({"memory_slots": 3, "read_heads": 4}, "algorithm.memory_slots"),
        ({"usage_decay": 1.5}, "algorithm.usage_decay"),
        ({"encoder": "cnn"}, "algorithm.encoder"),
        ({"meta_batch_size": 0}, "algorithm.meta_batch_size"),
        ({"controller_size": 0}, "algorithm.controller_size"),
    ],
)
def test_bad_settings_name_their_key(setting: dict, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        MANN(partial(Conv4), TaskSpec("classification", (1, 8, 8), 3), **setting)
    assert error.value.key == key and "\n" not in str(error.value)


# -- the paper's protocol: one stream per episode ----------------------------------------------


def test_sights_count_each_class_presentations() -> None:
    # snowkylin/ntm issue #11's example stream of three classes
    labels = torch.tensor([[1, 2, 2, 1, 3, 3, 2, 1, 1, 2, 3, 2, 3, 3, 1]]) - 1
    expected = [1, 1, 2, 2, 1, 2, 3, 3, 4, 4, 3, 5, 4, 5, 5]
    assert sight_numbers(labels, 3).tolist() == [expected]


def test_accuracy_by_sight_is_the_share_right_at_each_presentation() -> None:
    labels = torch.tensor([[0, 1, 0, 1], [1, 1, 0, 0]])
    predicted = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 1]])
    logits = F.one_hot(predicted, 2).double()
    # episode 0: 1st sights (steps 0, 1) 1 of 2 right, 2nd sights (steps 2, 3) 1 of 2;
    # episode 1: 1st sights (steps 0, 2) both right, 2nd sights (steps 1, 3) 1 of 2.
    expected = torch.tensor([[0.5, 0.5], [1.0, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(accuracy_by_sight(logits, labels, 2), expected)


def test_a_stream_episode_is_every_instance_of_its_classes() -> None:
    learner = small_mann(protocol="stream", stream_instances=4)
    spec = learner.training_episodes(EpisodeSpec(ways=3, shots=1, queries=15))
    assert (spec.ways, spec.shots, spec.queries) == (3, 3, 1)


def test_the_stream_loss_is_every_step_of_a_per_step_loop() -> None:
    learner = small_mann(protocol="stream", stream_instances=3)
    batch = image_batch(tasks=2, ways=3, shots=2, queries=1, size=8).with_keys(
        task_keys(seed=5, step=0, count=2)
    )
    loss, metrics = learner.meta_loss(batch)
    order = permutation(stream(batch.keys, "stream order"), 9)
    joined = EpisodeBatch(
        support_x=torch.cat([batch.support_x, batch.query_x], 1),
        support_y=torch.cat([batch.support_y, batch.query_y], 1),
        query_x=batch.query_x,
        query_y=batch.query_y,
        ways=3,
    )
    expected_logits, _ = reference_logits(learner, joined, order)
    labels = torch.gather(joined.support_y, 1, order)
    torch.testing.assert_close(
        loss.detach(), F.cross_entropy(expected_logits.flatten(0, 1), labels.flatten())
    )
    by_sight = accuracy_by_sight(expected_logits, labels, 3).mean(0)
    for sight in (1, 2, 3):
        torch.testing.assert_close(metrics[f"acc_sight{sight}"], by_sight[sight - 1])
    assert "acc_sight4" not in metrics
    # Each episode's order is its own, drawn from its key: a stream, not one fixed pattern.
    assert sorted(order[0].tolist()) == list(range(9)) and not torch.equal(order[0], order[1])


def test_the_stream_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="algorithm.protocol"):
        small_mann(protocol="sequence")
    with pytest.raises(ConfigError, match="algorithm.stream_instances"):
        small_mann(protocol="stream", stream_instances=1)
    with pytest.raises(ConfigError, match="algorithm.key_strength"):
        small_mann(key_strength=0.0)


def test_key_strength_sharpens_the_reads() -> None:
    memory = torch.eye(4).unsqueeze(0) + 1e-6
    key = torch.eye(4)[:1].unsqueeze(0)  # equal to slot 0, orthogonal to the other three
    for strength, beta in ((None, 1.0), (10.0, 10.0)):
        weight = float(cosine_read_weights(key, memory, strength)[0, 0, 0])
        assert weight == pytest.approx(math.exp(beta) / (math.exp(beta) + 3), rel=1e-4)
