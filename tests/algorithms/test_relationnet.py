"""Relation Networks' defining computation: a class is the sum of its support feature maps, a
(class, query) pair's score is the relation module applied to their channel-wise concatenation,
scores lie in (0, 1), and training regresses them onto the one-hot query labels (MSE)."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from learner_helpers import image_batch

from metarun.algorithms.relationnet import RelationNet
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import Conv4
from metarun.run import build

# The paper's Omniglot encoder, 4 filters wide: 28x28 images -> 4x5x5 maps; the padded relation
# module pools them to 4x1x1.
ENCODER = partial(Conv4, hidden_channels=4, pool_blocks=2, padding=[0, 0, 1, 1], flatten=False)
TASK = TaskSpec("classification", (1, 28, 28), 3)


def learner(seed: int = 0, **options) -> RelationNet:
    torch.manual_seed(seed)
    return RelationNet(ENCODER, TASK, **options).double()


def batch(tasks: int = 2, shots: int = 2, queries: int = 2, seed: int = 0) -> EpisodeBatch:
    return image_batch(tasks=tasks, ways=3, shots=shots, queries=queries, size=28, seed=seed)


def reference_scores(net: RelationNet, episode: EpisodeBatch, b: int, mean: bool = False):
    """One episode's ``[M, N]`` scores the plain way: support and query images in one encoder
    call, class maps as sums over a boolean mask, every pair concatenated with torch.cat and all
    pairs through the relation module at once (BatchNorm sees the episode's pairs, as in the
    authors' code)."""
    s = episode.support_x.shape[1]
    maps = net.encoder(torch.cat([episode.support_x[b], episode.query_x[b]]))
    support, query = maps[:s], maps[s:]
    classes = []
    for c in range(episode.ways):
        shots = support[episode.support_y[b] == c]
        classes.append(shots.mean(0) if mean else shots.sum(0))
    pairs = [torch.cat([classes[c], query[q]]) for q in range(len(query)) for c in range(3)]
    return net.relation(torch.stack(pairs)).view(len(query), episode.ways)


def test_scores_lie_strictly_between_zero_and_one() -> None:
    net, episodes = learner(), batch()
    for mode in (net.train, net.eval):
        mode()
        with torch.no_grad():
            scores = net.predict(episodes)
        assert scores.shape == (2, 6, 3)
        assert (scores > 0).all() and (scores < 1).all()


def test_a_pair_score_is_the_relation_module_on_the_concatenated_maps() -> None:
    net, episodes = learner().eval(), batch()
    with torch.no_grad():
        scores = net.predict(episodes)
        for b in range(2):
            torch.testing.assert_close(scores[b], reference_scores(net, episodes, b))
        # Guard: prototypes as means (ProtoNet's), not sums, give other scores.
        assert not torch.allclose(scores[0], reference_scores(net, episodes, 0, mean=True))


def test_the_loss_is_the_mse_to_the_one_hot_query_labels() -> None:
    """A meta-batch of two episodes, in training mode (each episode with its own BatchNorm
    statistics): the loss is the mean over episodes of mean((score - onehot)^2)."""
    net, episodes = learner(), batch(seed=1)
    loss, metrics = net.meta_loss(episodes)
    reference = learner()  # the same initial weights; training mode uses batch statistics
    losses, wrong = [], []
    for b in range(2):
        scores = reference_scores(reference, episodes, b)
        target = torch.zeros_like(scores)
        for q, label in enumerate(episodes.query_y[b].tolist()):
            target[q, label] = 1.0
        losses.append(((scores - target) ** 2).mean())
        wrong.append(((scores - target.roll(1, dims=1)) ** 2).mean())
    torch.testing.assert_close(loss, torch.stack(losses).mean().float())
    assert not torch.allclose(loss, torch.stack(wrong).mean().float())  # guard: other targets
    assert metrics["loss"] == loss.detach() and 0 <= metrics["acc"] <= 100


def test_shuffling_shots_within_a_class_keeps_the_scores_but_moving_one_does_not() -> None:
    net, episodes = learner().eval(), batch(shots=3)
    with torch.no_grad():
        scores = net.predict(episodes)
        order = torch.randperm(9, generator=torch.Generator().manual_seed(0))
        shuffled = EpisodeBatch(
            episodes.support_x[:, order],
            episodes.support_y[:, order],
            episodes.query_x,
            episodes.query_y,
            3,
        )
        torch.testing.assert_close(net.predict(shuffled), scores)
        moved_y = episodes.support_y.clone()
        moved_y[:, 0] = 1  # a shot of class 0 now counts for class 1
        moved = EpisodeBatch(episodes.support_x, moved_y, episodes.query_x, episodes.query_y, 3)
        changed = net.predict(moved)
    assert not torch.allclose(changed[..., :2], scores[..., :2])
    torch.testing.assert_close(changed[..., 2], scores[..., 2])  # class 2 kept its shots


def test_predict_equals_adapt_per_episode() -> None:
    net, episodes = learner().eval(), batch(tasks=3)
    with torch.no_grad():
        scores = net.predict(episodes)
        for t in range(3):
            classify = net.adapt(episodes.support_x[t], episodes.support_y[t])
            torch.testing.assert_close(classify(episodes.query_x[t]), scores[t])
        alone = episodes.select(slice(0, 1))
        torch.testing.assert_close(net.predict(alone)[0], scores[0])  # batch-independent


def test_meta_loss_trains_both_modules_and_updates_running_statistics_once() -> None:
    net = learner()
    before = net.encoder.features[0][1].num_batches_tracked.clone()
    loss, _ = net.meta_loss(batch())
    loss.backward()
    for module in (net.encoder, net.relation):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads) and all(g.abs().sum() > 0 for g in grads)
    assert net.encoder.features[0][1].num_batches_tracked == before + 1


def test_training_episodes_keep_the_test_ways_with_19_queries() -> None:
    net = learner()
    assert net.training_episodes(EpisodeSpec(5, 1, 15)) == EpisodeSpec(5, 1, 19)
    assert net.training_episodes(EpisodeSpec(20, 5, 15)) == EpisodeSpec(20, 5, 19)
    assert learner(train_ways=10).training_episodes(EpisodeSpec(5, 1, 15)) == EpisodeSpec(10, 1, 19)
    assert net.meta_batch_size == 1 and net.autocast_safe


def test_regression_is_refused_with_the_key() -> None:
    with pytest.raises(ConfigError, match="^algorithm: relationnet classifies.*algorithm=maml"):
        RelationNet(ENCODER, TaskSpec("regression", (1,), 1))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"meta_batch_size": 0}, "algorithm.meta_batch_size"),
        ({"relation_hidden": 0}, "algorithm.relation_hidden"),
        ({"relation_padding": -1}, "algorithm.relation_padding"),
        ({"relation_channels": 0}, "algorithm.relation_channels"),
        ({"relation_padding": 0}, "algorithm.relation_padding"),  # 5x5 maps vanish unpadded
    ],
)
def test_bad_values_name_their_key(options, key) -> None:
    with pytest.raises(ConfigError, match=f"^{key}: "):
        RelationNet(ENCODER, TASK, **options)


def test_a_flattening_encoder_is_refused() -> None:
    with pytest.raises(ConfigError, match="^model: .*model.flatten=false"):
        RelationNet(partial(Conv4, hidden_channels=4), TASK)


def test_the_yaml_gives_the_paper_architecture_and_schedule(compose_config) -> None:
    cfg = compose_config(["algorithm=relationnet", "dataset=omniglot"])
    assert cfg.scheduler.step_size == 100000 and cfg.scheduler.gamma == 0.5
    assert cfg.optimizer.lr == 0.001 and cfg.trainer.max_steps == 1000000
    net = build(
        cfg, "algorithm", model=build(cfg, "model"), task=TaskSpec("classification", (1, 28, 28), 5)
    )
    assert net.encoder.output_shape == (64, 5, 5) and net.relation.fc.in_features == 64
    assert (net.relation.fc.out_features, net.relation.out.in_features) == (8, 8)
    mini = compose_config(["algorithm=relationnet", "dataset=mini_imagenet"])
    assert mini.algorithm.relation_padding == 0 and mini.algorithm.train_queries == 15
