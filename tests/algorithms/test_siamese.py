"""Siamese networks' defining computation: a symmetric weighted L1 similarity of sigmoid
embeddings, binary cross-entropy (or the contrastive margin loss) on balanced same/different
pairs, and one-shot prediction by the most similar support image."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from learner_helpers import assert_trains_as_its_episodes, image_batch
from torch import nn

from metarun.algorithms.siamese import Siamese, pairwise_weighted_l1, weighted_l1
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import Conv4

TASK = TaskSpec("classification", (1, 16, 16), 3)


class Flat(nn.Module):
    """An encoder that only flattens, so a reference can recompute everything by hand."""

    def __init__(self, input_shape: tuple[int, ...], out_features: int | None) -> None:
        super().__init__()
        assert out_features is None  # Siamese asks for an embedding, not a classifier head
        self.embedding_size = math.prod(input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def flat_learner(loss: str = "bce", seed: int = 0, **settings) -> Siamese:
    torch.manual_seed(seed)
    task = TaskSpec("classification", (6,), 3)
    return Siamese(Flat, task, embedding_size=5, loss=loss, **settings).double()


def vector_batch(ways: int = 3, shots: int = 1, queries: int = 1, tasks: int = 2) -> EpisodeBatch:
    g = torch.Generator().manual_seed(3)
    support_y = torch.arange(ways).repeat_interleave(shots).expand(tasks, -1)
    query_y = torch.arange(ways).repeat_interleave(queries).expand(tasks, -1)
    return EpisodeBatch(
        torch.randn(tasks, ways * shots, 6, generator=g, dtype=torch.float64),
        support_y,
        torch.randn(tasks, ways * queries, 6, generator=g, dtype=torch.float64),
        query_y,
        ways,
    )


def embedding(learner: Siamese, x: torch.Tensor) -> list[float]:
    """Koch's sigmoid layer on one flattened image, written out unit by unit."""
    weight, bias = learner.embedding.weight.tolist(), learner.embedding.bias.tolist()
    units = [sum(w * xi for w, xi in zip(row, x.tolist(), strict=True)) for row in weight]
    return [1 / (1 + math.exp(-(u + b))) for u, b in zip(units, bias, strict=True)]


def probability_logit(learner: Siamese, a: list[float], b: list[float]) -> float:
    alpha = learner.alpha.tolist()
    return sum(w * abs(x - y) for w, x, y in zip(alpha, a, b, strict=True)) + learner.bias.item()


def distance(learner: Siamese, a: list[float], b: list[float]) -> float:
    alpha = learner.alpha.tolist()
    return sum(abs(w) * abs(x - y) for w, x, y in zip(alpha, a, b, strict=True))


def reference_pairs(ways: int) -> list[tuple[int, int, bool]]:
    """Koch-style pairs of a 1-shot 1-query episode, listed by hand: (support, query, same)."""
    return [(c, c, True) for c in range(ways)] + [((c + 1) % ways, c, False) for c in range(ways)]


# -- The similarity --------------------------------------------------------------------------


def test_weighted_l1_equals_an_independent_sum_for_weights_of_both_signs() -> None:
    g = torch.Generator().manual_seed(0)
    query = torch.rand(2, 4, 6, generator=g, dtype=torch.float64)
    support = torch.rand(2, 3, 6, generator=g, dtype=torch.float64)
    weight = torch.randn(6, generator=g, dtype=torch.float64)
    assert (weight > 0).any() and (weight < 0).any()
    pairwise = pairwise_weighted_l1(query, support, weight)
    assert pairwise.shape == (2, 4, 3)
    for b in range(2):
        for m in range(4):
            for s in range(3):
                terms = [
                    weight[j].item() * abs(query[b, m, j].item() - support[b, s, j].item())
                    for j in range(6)
                ]
                assert pairwise[b, m, s].item() == pytest.approx(sum(terms), abs=1e-12)
                aligned = weighted_l1(query[b, m], support[b, s], weight)
                assert aligned.item() == pytest.approx(sum(terms), abs=1e-12)
    # The guard: ignoring the weights' signs gives another answer.
    assert not torch.allclose(pairwise_weighted_l1(query, support, weight.abs()), pairwise)


@pytest.mark.parametrize("loss", ["bce", "contrastive"])
def test_the_score_is_symmetric(loss: str) -> None:
    learner = flat_learner(loss)
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 7, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(learner.pair_scores(a, b), learner.pair_scores(b, a))
    pairwise = pairwise_weighted_l1(a[None], b[None], learner.alpha)[0]
    torch.testing.assert_close(pairwise, pairwise_weighted_l1(b[None], a[None], learner.alpha)[0].T)


# -- The losses ------------------------------------------------------------------------------


def test_bce_loss_equals_a_per_pair_loop() -> None:
    learner = flat_learner("bce")
    batch = vector_batch()
    loss, metrics = learner.meta_loss(batch)
    terms, verified = [], []
    for t in range(2):
        for s, q, same in reference_pairs(3):
            h1 = embedding(learner, batch.support_x[t, s])
            h2 = embedding(learner, batch.query_x[t, q])
            p = 1 / (1 + math.exp(-probability_logit(learner, h1, h2)))
            terms.append(-math.log(p) if same else -math.log(1 - p))
            verified.append((p > 0.5) == same)
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-10)
    assert metrics["pair_acc"].item() == pytest.approx(100 * sum(verified) / len(verified))


@pytest.mark.parametrize("margin", [0.3, 5.0])
def test_contrastive_loss_equals_its_formula(margin: float) -> None:
    learner = flat_learner("contrastive", margin=margin)
    batch = vector_batch()
    loss, _ = learner.meta_loss(batch)
    terms = []
    for t in range(2):
        for s, q, same in reference_pairs(3):
            d = distance(
                learner,
                embedding(learner, batch.support_x[t, s]),
                embedding(learner, batch.query_x[t, q]),
            )
            terms.append(0.5 * d**2 if same else 0.5 * max(0.0, margin - d) ** 2)
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-10)
    assert any(t > 0 for t in terms)  # the margin is active, so it is tested


def test_bce_trains_everything_and_contrastive_leaves_the_bias_alone() -> None:
    for loss in ("bce", "contrastive"):
        torch.manual_seed(0)
        learner = Siamese(partial(Conv4, hidden_channels=4), TASK, embedding_size=8, loss=loss)
        batch = image_batch(tasks=1, ways=3, shots=1, queries=1, size=16)
        learner.double().meta_loss(batch)[0].backward()
        for name, parameter in learner.named_parameters():
            if name == "bias" and loss == "contrastive":
                assert parameter.grad is None
            else:
                assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


# -- One-shot classification -----------------------------------------------------------------


@pytest.mark.parametrize("loss", ["bce", "contrastive"])
def test_prediction_is_the_most_similar_support_images_class(loss: str) -> None:
    learner = flat_learner(loss, seed=2)
    learner.eval()
    batch = vector_batch(ways=3, shots=2, queries=4)
    with torch.no_grad():
        scores = learner.predict(batch)
    assert scores.shape == (2, 12, 3)
    for t in range(2):
        supports = [embedding(learner, x) for x in batch.support_x[t]]
        for m, x in enumerate(batch.query_x[t]):
            h = embedding(learner, x)
            if loss == "bce":
                similarity = [probability_logit(learner, h, s) for s in supports]
            else:
                similarity = [-distance(learner, h, s) for s in supports]
            best = max(range(len(supports)), key=similarity.__getitem__)
            assert scores[t, m].argmax().item() == batch.support_y[t, best].item()
            for c in range(3):  # a class's score: its best shot
                shots = [similarity[i] for i in range(6) if batch.support_y[t, i] == c]
                assert scores[t, m, c].item() == pytest.approx(max(shots), abs=1e-9)


def test_adapt_equals_predict_and_episodes_do_not_affect_each_other() -> None:
    torch.manual_seed(0)
    learner = Siamese(partial(Conv4, hidden_channels=4), TASK, embedding_size=16).double()
    learner.meta_loss(image_batch(tasks=2, size=16))  # running statistics away from their start
    learner.eval()
    batch = image_batch(tasks=3, ways=3, shots=2, queries=2, size=16, seed=1)
    with torch.no_grad():
        batched = learner.predict(batch)
        for t in range(3):
            classify = learner.adapt(batch.support_x[t], batch.support_y[t])
            torch.testing.assert_close(classify(batch.query_x[t]), batched[t])
            alone = batch.select(slice(t, t + 1))
            torch.testing.assert_close(learner.predict(alone)[0], batched[t])


def test_training_accuracy_is_the_one_shot_accuracy_of_the_episode() -> None:
    learner = flat_learner("bce", seed=4)
    batch = vector_batch(ways=3, shots=2, queries=4)
    _, metrics = learner.meta_loss(batch)
    learner.eval()  # no BatchNorm here, so eval-mode predictions are the same function
    with torch.no_grad():
        expected = TaskSpec("classification", (6,), 3).score(learner.predict(batch), batch.query_y)
    torch.testing.assert_close(metrics["acc"], expected.mean())


def test_a_meta_batch_trains_as_the_mean_of_its_episodes() -> None:
    batch = image_batch(tasks=2, ways=3, shots=1, queries=1, size=16)

    def fresh() -> Siamese:
        torch.manual_seed(0)
        return Siamese(partial(Conv4, hidden_channels=4), TASK, embedding_size=8).double()

    assert_trains_as_its_episodes(fresh(), [fresh(), fresh()], batch)


# -- Settings --------------------------------------------------------------------------------


def test_paper_defaults_give_kochs_128_pairs_of_4096_unit_embeddings() -> None:
    learner = Siamese(partial(Conv4, hidden_channels=4), TaskSpec("classification", (1, 28, 28), 5))
    assert learner.training_episodes(EpisodeSpec(5, 1, 15)) == EpisodeSpec(64, 1, 1)
    assert learner.meta_batch_size == 1 and learner.loss == "bce"
    assert learner.alpha.shape == (4096,) and learner.embedding.out_features == 4096


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"loss": "hinge"}, "algorithm.loss: must be one of bce, contrastive"),
        ({"margin": 0.0}, "algorithm.margin"),
        ({"embedding_size": 0}, "algorithm.embedding_size"),
        ({"train_ways": 1}, "algorithm.train_ways"),
        ({"train_queries": 0}, "algorithm.train_queries"),
        ({"meta_batch_size": 0}, "algorithm.meta_batch_size"),
    ],
)
def test_bad_settings_name_their_key(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Siamese(Flat, TaskSpec("classification", (6,), 3), **settings)


def test_one_way_training_episodes_are_refused() -> None:
    learner = Siamese(Flat, TaskSpec("classification", (6,), 3), train_ways=None)
    with pytest.raises(ConfigError, match="algorithm.train_ways"):
        learner.training_episodes(EpisodeSpec(1, 1, 1))


def test_regression_tasks_are_refused_with_the_key() -> None:
    with pytest.raises(ConfigError, match="algorithm: siamese classifies.*algorithm=maml"):
        Siamese(Flat, TaskSpec("regression", (1,), 1))


def test_the_config_chooses_kochs_optimiser_and_yields_to_another(compose_config) -> None:
    cfg = compose_config(["algorithm=siamese"])
    assert cfg.algorithm.train_ways == 64 and cfg.algorithm.embedding_size == 4096
    assert cfg.optimizer._target_ == "torch.optim.SGD" and cfg.scheduler.gamma == 0.99
    adam = compose_config(["algorithm=siamese", "optimizer=adam"])
    assert adam.optimizer._target_ == "torch.optim.Adam" and adam.scheduler is None
