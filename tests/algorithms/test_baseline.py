"""Baseline / Baseline++'s defining computation: pre-training is cross-entropy over every
training class against each image's class in the split; at test a new head (linear, or
Baseline++'s weight-normalised cosine head) is fitted with the authors' SGD on the support
features alone, the backbone frozen."""

from __future__ import annotations

import copy
import io
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from learner_helpers import image_batch
from torch import nn

from metarun.algorithms.base import ClassSupervised
from metarun.algorithms.baseline import (
    Baseline,
    CosineClassifier,
    FineTuning,
    cosine_logits,
    cosine_scale,
    fit_heads,
    initial_head,
)
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import Conv4

TASK = TaskSpec("classification", (1, 16, 16), 3)
HEADS = ["linear", "cosine"]


def small_encoder(input_shape: tuple[int, ...], out_features: int | None) -> nn.Module:
    assert out_features is None  # Baseline asks for an embedding and adds its own heads
    return nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 5))


def conv4(head: str = "linear", **settings) -> Baseline:
    torch.manual_seed(0)
    return Baseline(partial(Conv4, hidden_channels=4), TASK, head=head, **settings).double()


def with_classes(batch: EpisodeBatch, classes: torch.Tensor) -> EpisodeBatch:
    return EpisodeBatch(
        batch.support_x, batch.support_y, batch.query_x, batch.query_y, batch.ways, classes
    )


def split_classes(tasks: int, ways: int, total: int = 11, seed: int = 0) -> torch.Tensor:
    """Distinct split classes for each episode's ways, as the sampler draws them."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randperm(total, generator=g)[:ways] for _ in range(tasks)])


# -- pre-training ----------------------------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_pretraining_loss_is_cross_entropy_against_the_global_labels(head) -> None:
    torch.manual_seed(0)
    learner = Baseline(small_encoder, TASK, head=head, meta_batch_size=2).double()
    learner.set_training_classes(11)
    batch = with_classes(image_batch(tasks=2, ways=3, shots=2, queries=1), split_classes(2, 3))
    loss, metrics = learner.meta_loss(batch)

    # By hand: every image (support and query) of every episode, with the class its way is.
    images, labels, local = [], [], []
    for b in range(2):
        sets = ((batch.support_x[b], batch.support_y[b]), (batch.query_x[b], batch.query_y[b]))
        for x, y in sets:
            for i in range(len(y)):
                images.append(x[i])
                labels.append(int(batch.classes[b, y[i]]))
                local.append(int(y[i]))
    features = learner.encoder(torch.stack(images))
    if head == "linear":
        logits = features @ learner.classifier.weight.T + learner.classifier.bias
    else:
        v, g = learner.classifier.direction, learner.classifier.norm
        cos = F.cosine_similarity(features[:, None], v[None], dim=-1)
        x_norm = features.norm(dim=-1, keepdim=True)
        logits = 2.0 * g * cos * x_norm / (x_norm + 1e-5)  # 11 classes: the authors' scale 2
    rows = torch.arange(len(labels))
    expected = -logits.log_softmax(-1)[rows, torch.tensor(labels)].mean()
    torch.testing.assert_close(loss, expected)
    accuracy = (logits.argmax(-1) == torch.tensor(labels)).double().mean() * 100
    torch.testing.assert_close(metrics["acc"].double(), accuracy)

    # Guard: the episode labels 0..N-1 would give another loss.
    local = -logits.log_softmax(-1)[rows, torch.tensor(local)].mean()
    assert not torch.allclose(loss, local)


def test_pretraining_trains_backbone_and_classifier() -> None:
    learner = conv4()
    learner.set_training_classes(11)
    batch = with_classes(image_batch(tasks=1, ways=3, shots=1, queries=1), split_classes(1, 3))
    loss, _ = learner.meta_loss(batch)
    loss.backward()
    for name, parameter in learner.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_the_training_head_exists_only_once_the_class_count_is_known() -> None:
    learner = conv4()
    assert isinstance(learner, ClassSupervised) and learner.classifier is None
    batch = with_classes(image_batch(tasks=1), split_classes(1, 3))
    with pytest.raises(RuntimeError, match="set_training_classes"):
        learner.meta_loss(batch)
    learner.set_training_classes(11)
    assert learner.classifier.weight.shape == (11, 4) and not learner.classifier.bias.any()
    with pytest.raises(ConfigError, match="dataset"):
        learner.meta_loss(image_batch(tasks=1))  # no split classes (synthetic data)


def test_training_batches_are_the_papers_16_images() -> None:
    learner = conv4()
    spec = learner.training_episodes(EpisodeSpec(5, 1, 15))
    assert spec == EpisodeSpec(8, 1, 1)
    assert learner.meta_batch_size * spec.ways * (spec.shots + spec.queries) == 16


# -- the cosine head -------------------------------------------------------------------------
def test_cosine_logits_are_scale_times_norm_times_cosine() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 6, generator=g, dtype=torch.float64) * 3
    v = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    norm = torch.rand(2, 5, generator=g, dtype=torch.float64) + 0.5
    logits = cosine_logits(x, v, norm, scale=10.0)
    cos = F.cosine_similarity(x[:, :, None], v[:, None], dim=-1)
    x_norm = x.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(logits, 10.0 * norm[:, None] * cos * x_norm / (x_norm + 1e-5))
    # With unit norms it is the plain scaled cosine (up to the authors' 1e-5 in |x| + 1e-5).
    plain = cosine_logits(x, v, torch.ones_like(norm), scale=2.0)
    torch.testing.assert_close(plain, 2.0 * cos, rtol=1e-5, atol=1e-5)


def test_cosine_classifier_follows_the_authors_weight_norm_and_scale() -> None:
    head = CosineClassifier(6, 4, scale=cosine_scale(4))
    torch.testing.assert_close(head.norm, head.direction.norm(dim=1))  # g starts at |v|
    assert (cosine_scale(200), cosine_scale(201), cosine_scale(4112)) == (2.0, 10.0, 10.0)
    learner = conv4("cosine")
    learner.set_training_classes(300)
    assert learner.classifier.scale == 10.0
    assert conv4("cosine", scale=4.0).scale == 4.0


# -- fine-tuning at test ---------------------------------------------------------------------
def reference_head(head: str, init: list[torch.Tensor], scale: float) -> nn.Module:
    """An ``nn.Linear`` (Baseline) or a bias-free ``nn.Linear`` under PyTorch's own weight
    normalisation, on features divided by ``|x| + 1e-5`` (the authors' ``distLinear``)."""
    ways, dim = init[0].shape
    linear = nn.Linear(dim, ways, bias=head == "linear").double()
    if head == "linear":
        with torch.no_grad():
            linear.weight.copy_(init[0])
            linear.bias.copy_(init[1])
        return linear
    linear = nn.utils.parametrizations.weight_norm(linear, dim=0)
    with torch.no_grad():
        linear.parametrizations.weight.original0.copy_(init[1][:, None])  # g
        linear.parametrizations.weight.original1.copy_(init[0])  # v

    class Cosine(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = linear

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return scale * self.linear(x / (x.norm(dim=-1, keepdim=True) + 1e-5))

    return Cosine()


def fit_alone(head: str, support, labels, ways, settings: FineTuning, scale: float) -> nn.Module:
    """The authors' loop for one episode: a fresh head, torch.optim.SGD, mean cross-entropy
    over each shuffled mini-batch. Initial head and shuffles from the same seeded stream."""
    g = torch.Generator().manual_seed(settings.seed)
    model = reference_head(head, initial_head(head, ways, support.shape[-1], g), scale)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        dampening=settings.dampening,
        weight_decay=settings.weight_decay,
    )
    for _ in range(settings.epochs):
        order = torch.randperm(len(labels), generator=g)
        for start in range(0, len(labels), settings.batch_size):
            pick = order[start : start + settings.batch_size]
            optimizer.zero_grad()
            F.cross_entropy(model(support[pick]), labels[pick]).backward()
            optimizer.step()
    return model


@pytest.mark.parametrize("head", HEADS)
def test_batched_finetuning_equals_fitting_each_episode_alone(head) -> None:
    g = torch.Generator().manual_seed(1)
    support = torch.randn(3, 6, 5, generator=g, dtype=torch.float64)
    labels = torch.arange(3).repeat_interleave(2).expand(3, -1)
    queries = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    settings = FineTuning(epochs=6)  # 6 support examples: mini-batches of 4 and 2
    params = fit_heads(head, support, labels, 3, settings, scale=2.0)
    logits = (
        queries @ params[0].transpose(1, 2) + params[1][:, None]
        if head == "linear"
        else cosine_logits(queries, *params, 2.0)
    )
    for b in range(3):
        alone = fit_alone(head, support[b], labels[b], 3, settings, 2.0)
        with torch.no_grad():
            torch.testing.assert_close(logits[b], alone(queries[b]))
        # The batch does not matter: fitted alone by the package, the same head.
        single = fit_heads(head, support[b : b + 1], labels[b : b + 1], 3, settings, 2.0)
        for mine, theirs in zip(single, params, strict=True):
            torch.testing.assert_close(mine[0], theirs[b])

    # Guard: the authors' dampening matters, so the comparison above could fail.
    undamped = FineTuning(epochs=6, dampening=0.0)
    other = fit_alone(head, support[0], labels[0], 3, undamped, 2.0)
    with torch.no_grad():
        assert not torch.allclose(logits[0], other(queries[0]))


def test_finetuning_defaults_are_the_authors() -> None:
    assert FineTuning() == FineTuning(100, 4, 0.01, 0.9, 0.9, 0.001, 0)
    assert conv4().finetuning == FineTuning()


def eval_batch(seed: int = 0) -> EpisodeBatch:
    return image_batch(tasks=2, ways=3, shots=2, queries=2, seed=seed)


def quick(head: str = "linear") -> Baseline:
    learner = conv4(head, finetune_epochs=5)
    learner.eval()
    return learner


def test_the_test_head_is_fitted_on_the_support_set_only() -> None:
    learner = quick()
    batch = eval_batch()
    with torch.no_grad():
        scores = learner.predict(batch)
        # New images for the last three queries: the first three queries' scores stay.
        other_queries = batch.query_x.clone()
        other_queries[:, 3:] = torch.rand_like(other_queries[:, 3:])
        changed = EpisodeBatch(batch.support_x, batch.support_y, other_queries, batch.query_y, 3)
        torch.testing.assert_close(learner.predict(changed)[:, :3], scores[:, :3])
        # One new support image: the fitted head, hence every query's scores, change.
        other_support = batch.support_x.clone()
        other_support[:, 0] = torch.rand_like(other_support[:, 0])
        moved = EpisodeBatch(other_support, batch.support_y, batch.query_x, batch.query_y, 3)
        assert not torch.allclose(learner.predict(moved)[:, :3], scores[:, :3])


@pytest.mark.parametrize("head", HEADS)
def test_predict_freezes_the_backbone_and_matches_adapt(head) -> None:
    learner = quick(head)
    before = copy.deepcopy(learner.state_dict())
    batch = eval_batch()
    with torch.no_grad():  # as evaluation calls it: the head still trains inside
        scores = learner.predict(batch)
        for name, value in learner.state_dict().items():
            torch.testing.assert_close(value, before[name], msg=name)
        assert all(p.grad is None for p in learner.parameters())
        for b in range(2):
            classify = learner.adapt(batch.support_x[b], batch.support_y[b])
            torch.testing.assert_close(classify(batch.query_x[b]), scores[b])
    # An episode's scores do not depend on the episodes beside it.
    alone = EpisodeBatch(*(t[1:] for t in (batch.support_x, batch.support_y)),
                         *(t[1:] for t in (batch.query_x, batch.query_y)), 3)  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(learner.predict(alone)[0], scores[1])


def test_linear_and_cosine_heads_give_different_scores() -> None:
    batch = eval_batch()
    with torch.no_grad():
        linear, cosine = quick("linear").predict(batch), quick("cosine").predict(batch)
    assert linear.shape == cosine.shape == (2, 6, 3)
    assert not torch.allclose(linear, cosine)


# -- checkpoints and configuration -----------------------------------------------------------
@pytest.mark.parametrize("head", HEADS)
def test_a_checkpoint_round_trips_without_set_training_classes(head) -> None:
    trained = conv4(head)
    trained.set_training_classes(11)
    batch = with_classes(image_batch(tasks=1, ways=3, shots=1, queries=1), split_classes(1, 3))
    optimizer = torch.optim.Adam(trained.parameters(), lr=0.01)
    trained.meta_loss(batch)[0].backward()
    optimizer.step()
    buffer = io.BytesIO()
    torch.save(trained.state_dict(), buffer)
    buffer.seek(0)

    rebuilt = conv4(head)  # as metarun.load builds it: from the config alone
    assert rebuilt.classifier is None
    rebuilt.load_state_dict(torch.load(buffer))  # strict: every key matched
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[name], value, msg=name)
    trained.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.meta_loss(batch)[0], trained.meta_loss(batch)[0])


def test_regression_tasks_are_refused_with_the_key() -> None:
    with pytest.raises(ConfigError, match="algorithm: baseline classifies.*algorithm=maml"):
        Baseline(small_encoder, TaskSpec("regression", (1,), 1))
    with pytest.raises(ConfigError, match="algorithm: baseline_pp classifies"):
        Baseline(small_encoder, TaskSpec("regression", (1,), 1), head="cosine")


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ({"head": "arcface"}, "algorithm.head"),
        ({"meta_batch_size": 0}, "algorithm.meta_batch_size"),
        ({"finetune_epochs": 0}, "algorithm.finetune_epochs"),
        ({"finetune_batch_size": 0}, "algorithm.finetune_batch_size"),
        ({"finetune_lr": 0.0}, "algorithm.finetune_lr"),
        ({"finetune_momentum": 1.5}, "algorithm.finetune_momentum"),
        ({"finetune_dampening": -0.1}, "algorithm.finetune_dampening"),
        ({"finetune_weight_decay": -1.0}, "algorithm.finetune_weight_decay"),
        ({"scale": 0.0}, "algorithm.scale"),
    ],
)
def test_bad_settings_name_their_key(setting, key) -> None:
    with pytest.raises(ConfigError) as error:
        Baseline(small_encoder, TASK, **setting)
    assert error.value.key == key and "\n" not in str(error.value)
