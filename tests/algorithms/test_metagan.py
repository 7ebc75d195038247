"""MetaGAN: the (N+1)-way discriminator, its real/fake probabilities, the two groups stepped in
turn, both hosts, and its pictures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from every_learner import (
    EVALUATION,
    SMALL,
    TASK,
    TRAINING_CLASSES,
    SyntheticEpisodes,
    build_learner,
    evaluation_batch,
    small_config,
    training_batch,
)

from metarun.algorithms.adversary import DISCRIMINATOR, GENERATOR
from metarun.algorithms.base import Illustrated, Phased
from metarun.algorithms.fake_class import (
    discriminator_loss,
    feature_matching,
    real_probability,
    with_fake_class,
)
from metarun.data.episodes import FixedEpisodes
from metarun.errors import ConfigError
from metarun.hardware import Hardware
from metarun.tracking.console import NullReporter
from metarun.tracking.null import NullLogger
from metarun.training.checkpoint import Checkpoints
from metarun.training.optimisers import build_optimisers, parameter_groups
from metarun.training.trainer import Trainer, TrainerConfig

HOSTS = ["maml", "protonet"]


def learner(
    host: str, *overrides: str, model: tuple[str, ...] = ("model.hidden_channels=8",)
) -> torch.nn.Module:
    dataset = [f"dataset.{k}={getattr(EVALUATION, k)}" for k in ("ways", "shots", "queries")]
    cfg = small_config(
        [
            "algorithm=metagan",
            f"algorithm.host={host}",
            "algorithm.protonet.train_ways=3",
            "algorithm.protonet.train_queries=2",
            "algorithm.noise_size=4",
            "algorithm.generator_channels=4",
            *model,
            *dataset,
            *overrides,
        ],
        SMALL,
    )
    return build_learner(cfg, TASK, TRAINING_CLASSES).double()


def one_group_optimiser_each(
    made: torch.nn.Module,
    optimiser: type[torch.optim.Optimizer],
    lr: float,
    val_episodes: FixedEpisodes | None = None,
    checkpoints: Path | None = None,
    steps: int = 1,
) -> Trainer:
    """The real trainer around ``made``, one ``optimiser`` per parameter group."""
    return Trainer(
        learner=made,
        optimizer=build_optimisers(made, lambda _, params: (optimiser(params, lr=lr), None)),
        scheduler=None,
        sampler=SyntheticEpisodes(made.training_episodes(EVALUATION)),
        val_episodes=val_episodes,
        task=TASK,
        runtime=Hardware(device="cpu", precision="fp32").setup(),
        generator=torch.Generator().manual_seed(0),
        seed=0,
        checkpoints=Checkpoints(checkpoints) if checkpoints else None,
        logger=NullLogger(),
        reporter=NullReporter(),
        config=TrainerConfig(max_steps=steps, val_every=steps),
        eval_batch_size=2,
        run_state={},
    )


def test_the_fake_class_is_an_appended_zero_logit() -> None:
    logits = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])
    extended = with_fake_class(logits)
    assert extended.shape == (2, 4)
    assert torch.equal(extended[:, :3], logits) and torch.equal(extended[:, 3], torch.zeros(2))


def test_real_probability_by_hand() -> None:
    # Class logits log 1, log 2, log 3 and the fake one 0: P(fake) = 1 / (1 + 1 + 2 + 3).
    logits = torch.tensor([[0.0, math.log(2.0), math.log(3.0)]], dtype=torch.float64)
    assert real_probability(logits).item() == pytest.approx(6.0 / 7.0, rel=1e-12)
    very_negative = torch.full((1, 3), -30.0, dtype=torch.float64)
    assert real_probability(very_negative).item() == pytest.approx(3 * math.exp(-30), rel=1e-9)


def test_the_discriminator_loss_is_the_supervised_plus_real_and_fake_terms() -> None:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(4, 3, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 2, 1, 1])
    fake = torch.randn(2, 3, generator=g, dtype=torch.float64)
    supervised = F.cross_entropy(real, labels, reduction="sum")
    real_term = -torch.log(real_probability(real)).sum()  # -log P(real) of real examples
    fake_term = -torch.log(1 - real_probability(fake)).sum()  # -log P(fake) of generated ones
    expected = (supervised + real_term + fake_term) / 6
    torch.testing.assert_close(discriminator_loss(real, labels, fake), expected)


def test_feature_matching_is_the_squared_distance_of_the_means() -> None:
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    fake = torch.tensor([[0.0, 0.0], [0.0, 2.0], [3.0, 1.0]])  # mean (1, 1)
    assert feature_matching(real, fake).item() == pytest.approx(1.0 + 4.0)


@pytest.mark.parametrize("host", HOSTS)
def test_the_groups_split_the_generator_from_the_discriminator(host) -> None:
    made = learner(host)
    assert isinstance(made, Phased) and isinstance(made, Illustrated)
    groups = parameter_groups(made)
    assert list(groups) == [DISCRIMINATOR, GENERATOR]
    generator = {id(p) for p in made.adversary.parameters()}
    assert {id(p) for p in groups[GENERATOR]} == generator
    assert not generator & {id(p) for p in groups[DISCRIMINATOR]}
    assert [phase.group for phase in made.phases()] == [DISCRIMINATOR, GENERATOR]
    two = learner(host, "algorithm.generator_steps=2")
    assert [phase.group for phase in two.phases()] == [DISCRIMINATOR, GENERATOR, GENERATOR]


@pytest.mark.parametrize("host", HOSTS)
def test_each_phase_of_a_step_changes_only_its_groups_parameters(host) -> None:
    made = learner(host)
    groups = parameter_groups(made)
    snapshots = []

    def snapshot() -> dict[str, list[torch.Tensor]]:
        return {name: [p.detach().clone() for p in params] for name, params in groups.items()}

    real_generator_loss = made.generator_loss

    def generator_loss(batch):
        snapshots.append(snapshot())  # after the discriminator's step
        return real_generator_loss(batch)

    made.generator_loss = generator_loss
    trainer = one_group_optimiser_each(made, torch.optim.SGD, lr=0.1)
    before = snapshot()
    metrics = trainer._train_step(1)
    after = snapshot()
    (middle,) = snapshots

    def same(a, b, group) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a[group], b[group], strict=True))

    assert same(before, middle, GENERATOR) and not same(before, middle, DISCRIMINATOR)
    assert same(middle, after, DISCRIMINATOR) and not same(middle, after, GENERATOR)
    assert {"loss", "acc", "p_real", "p_real_fakes", "feature_matching"} <= set(metrics)


@pytest.mark.parametrize("host", HOSTS)
def test_predictions_are_n_way_and_pictures_are_pngs(host) -> None:
    made = learner(host)
    made.eval()
    batch = evaluation_batch()
    with torch.no_grad():
        predictions = made.predict(batch)
        pictures = made.figures(batch)
    assert predictions.shape == (len(batch), EVALUATION.ways * EVALUATION.queries, TASK.output_size)
    assert pictures["samples"].startswith(b"\x89PNG")


def test_training_fakes_come_from_the_tasks_keys() -> None:
    made = learner("maml")
    batch = training_batch(made)
    one, other = made.adversary.detached(batch.support_x, batch.keys, "fakes", 2)
    again, _ = made.adversary.detached(batch.support_x, batch.keys, "fakes", 2)
    (elsewhere,) = made.adversary.detached(batch.support_x, batch.keys, "generator fakes")
    torch.testing.assert_close(one, again, rtol=0, atol=0)
    assert one.shape == batch.support_x.shape  # as many fakes as support images by default
    assert not torch.allclose(one, other) and not torch.allclose(one, elsewhere)


def test_bad_settings_are_one_line() -> None:
    with pytest.raises(ConfigError, match="algorithm.host"):
        learner("relationnet")
    with pytest.raises(ConfigError, match="algorithm.generator_steps"):
        learner("maml", "algorithm.generator_steps=0")
    with pytest.raises(ConfigError, match="model"):
        learner("maml", model=("model=mlp",))


def test_a_metagan_run_trains_and_validates_with_fixed_episodes(tmp_path) -> None:
    made = learner("protonet")
    validation = FixedEpisodes(SyntheticEpisodes(EVALUATION), 2, seed=7)
    trainer = one_group_optimiser_each(
        made, torch.optim.Adam, lr=1e-3, val_episodes=validation, checkpoints=tmp_path, steps=2
    )
    trainer.fit()
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(saved["optimizers"]) == {GENERATOR} and saved["step"] == 2


def test_the_meta_batch_is_the_hosts_unless_set() -> None:
    def batch(*overrides: str) -> int:
        cfg = small_config(["algorithm=metagan", "model.hidden_channels=8", *overrides], {})
        return build_learner(cfg, TASK, TRAINING_CLASSES).meta_batch_size

    assert batch() == 32 and batch("algorithm.host=protonet") == 1
    assert batch("algorithm.host=protonet", "algorithm.meta_batch_size=4") == 4
