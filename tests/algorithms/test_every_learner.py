"""Promises every learner keeps, checked for every ``algorithm`` option (a new learner is
covered as soon as its YAML exists), with its default backbone and with ResNet-12 whose
DropBlock draws random masks:

* training draws nothing from torch's global generator: every random number of a task (support
  orders, inner mini-batches, DropBlock masks) comes from the task's key;
* so a meta-batch trains as the mean of its shards, each computed as another process would
  compute it (from the same global generator state, as every process is seeded alike);
* an evaluation episode's predictions depend neither on the batch it is scored in nor on its
  place there, and ``adapt`` on the episode alone gives the same predictions.
"""

from __future__ import annotations

import copy

import every_learner
import pytest
import torch
from every_learner import evaluation_batch, small_learner, training_batch
from learner_helpers import assert_trains_as_its_shards

from metarun.data.episodes import EpisodeBatch


def reversed_batch(batch: EpisodeBatch) -> EpisodeBatch:
    flip = {k: v.flip(0) for k, v in vars(batch).items() if isinstance(v, torch.Tensor)}
    return EpisodeBatch(**{**vars(batch), **flip})


CASES = [pytest.param(*case, id="-".join(case)) for case in every_learner.CASES]


@pytest.mark.parametrize(("algorithm", "backbone"), CASES)
def test_training_draws_only_from_the_tasks_keys(algorithm, backbone) -> None:
    learner = small_learner(algorithm, backbone)
    if learner is None:  # refused in one line
        return
    twin = copy.deepcopy(learner)
    batch = training_batch(learner)
    before = torch.get_rng_state()
    loss, _ = learner.meta_loss(batch)
    loss.backward()
    assert torch.equal(torch.get_rng_state(), before), "drew from torch's global generator"
    # Nor from anywhere else: the same keys give the same loss, bit for bit.
    torch.testing.assert_close(twin.meta_loss(batch)[0], loss, rtol=0, atol=0)


@pytest.mark.parametrize(("algorithm", "backbone"), CASES)
def test_a_meta_batch_trains_as_the_mean_of_two_processes_shards(algorithm, backbone) -> None:
    together = small_learner(algorithm, backbone)
    if together is None:  # refused in one line
        return
    shards = [copy.deepcopy(together) for _ in range(2)]
    assert_trains_as_its_shards(together, shards, training_batch(together), reseed=0)


@pytest.mark.parametrize(("algorithm", "backbone"), CASES)
def test_an_episodes_predictions_depend_on_it_alone(algorithm, backbone) -> None:
    learner = small_learner(algorithm, backbone)
    if learner is None:  # refused in one line
        return
    learner.eval()
    batch = evaluation_batch()
    with torch.no_grad():
        together = learner.predict(batch)
        reordered = learner.predict(reversed_batch(batch)).flip(0)
        torch.testing.assert_close(reordered, together, rtol=1e-7, atol=1e-9)
        for i in range(len(batch)):
            alone = learner.predict(batch.select(slice(i, i + 1)))[0]
            torch.testing.assert_close(alone, together[i], rtol=1e-7, atol=1e-9, msg=f"ep {i}")
            classify = learner.adapt(batch.support_x[i], batch.support_y[i])
            adapted = classify(batch.query_x[i])
            torch.testing.assert_close(adapted, together[i], rtol=1e-7, atol=1e-9, msg=f"ep {i}")


def test_the_acting_set_is_complete(compose_config) -> None:
    """``every_learner.ACTING`` holds exactly the algorithms that act and cannot predict."""
    from metarun.cli import options
    from metarun.run import target_of

    acting = set()
    for algorithm in options("algorithm"):
        learner = target_of(compose_config([f"algorithm={algorithm}"]), "algorithm")
        if hasattr(learner, "policy") and not hasattr(learner, "predict"):
            acting.add(algorithm)
    assert acting == every_learner.ACTING
