"""Every learner on Meta-Dataset's variable-shape episodes (``dataset.variable``): a meta-batch
of episodes of different ways and imbalanced shots trains as the mean of its episodes' losses,
and each episode's predictions have exactly its own ways (a head of ``max_ways`` outputs reads
its first ``ways``, ``metarun.algorithms.episode_ways``). SNAIL, whose network is built for one
sequence length, refuses them in one line."""

from __future__ import annotations

import every_learner
import pytest
import torch
from every_learner import SMALL, build_learner, small_config

from metarun.data.episodes import ClassImages, EpisodeList, EpisodeSampler, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.data.variable_shape import VariableShape
from metarun.errors import ConfigError
from metarun.randomness import task_keys
from metarun.run import check_episode_shapes
from metarun.training.evaluate import scores
from metarun.training.trainer import mean_over_episodes

MAX_WAYS = 5
TASK = TaskSpec("classification", (1, 28, 28), MAX_WAYS)
SHAPE = VariableShape(min_ways=2, max_ways=MAX_WAYS, max_query=2, max_support=12)
FIXED_SHAPE_ONLY = {"snail"}


def variable_episodes(count: int, seed: int) -> EpisodeList:
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([6, 5, 7, 6, 4, 6, 5, 6])
    images = torch.randint(0, 256, (int(counts.sum()), 1, 28, 28), dtype=torch.uint8, generator=g)
    classes = ClassImages(images, counts, [f"c{i}" for i in range(len(counts))])
    sampler = EpisodeSampler(
        classes, EpisodeSpec(2, 1, 1), lambda x: x.double() / 255, variable=SHAPE
    )
    batch = sampler.gather(sampler.draw(count, torch.Generator().manual_seed(seed)))
    assert isinstance(batch, EpisodeList)
    return batch


def learner_for(algorithm: str) -> torch.nn.Module:
    cfg = small_config(
        [f"algorithm={algorithm}", *every_learner.BACKBONES["default"]],
        {**SMALL, "train_ways": None, "train_queries": None},
    )
    return build_learner(cfg, TASK, every_learner.TRAINING_CLASSES).double()


@pytest.mark.parametrize("algorithm", every_learner.LEARNERS)
def test_a_meta_batch_of_variable_episodes_trains_and_predicts_their_own_ways(algorithm) -> None:
    learner = learner_for(algorithm)
    batch = variable_episodes(3, seed=1)
    assert len(set(batch.ways)) > 1 or len({e.support_y.shape[1] for e in batch.episodes}) > 1
    keyed = batch.with_keys(task_keys(0, 1, len(batch)))
    if algorithm in FIXED_SHAPE_ONLY:
        with pytest.raises((ConfigError, ValueError), match="variable"):
            mean_over_episodes(learner.meta_loss, keyed)
        return
    loss, metrics = mean_over_episodes(learner.meta_loss, keyed)
    assert torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    one = [learner.meta_loss(e)[0].detach() for e in keyed.episodes]
    torch.testing.assert_close(loss.detach(), torch.stack(one).mean())
    learner.eval()
    with torch.no_grad():
        for episode in variable_episodes(4, seed=2).episodes:
            predictions = learner.predict(episode)
            assert predictions.shape == (1, episode.query_y.shape[1], episode.ways)
            classify = learner.adapt(episode.support_x[0], episode.support_y[0])
            assert classify(episode.query_x[0]).shape[-1] == episode.ways
        scored = scores(learner, variable_episodes(4, seed=2), TASK)["score"]
        assert scored.shape == (4,)


def test_a_fixed_shape_learner_on_variable_episodes_is_refused_before_any_data(
    compose_config,
) -> None:
    with pytest.raises(ConfigError) as raised:
        check_episode_shapes(compose_config(["algorithm=snail", "dataset=multi"]))
    assert raised.value.key == "algorithm" and "dataset.variable" in str(raised.value)
    check_episode_shapes(compose_config(["algorithm=snail", "dataset=omniglot"]))
    check_episode_shapes(compose_config(["algorithm=protonet", "dataset=multi"]))
