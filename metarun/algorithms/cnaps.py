"""The conditional family: CNAPs (Requeima, Gordon, Bronskill, Nowozin & Turner 2019, NeurIPS,
"Fast and Flexible Multi-Task Classification Using Conditional Neural Adaptive Processes") and
Simple CNAPs (Bateni, Goyal, Masrani, Wood & Sigal 2020, CVPR, "Improved Few-Shot Visual
Classification").

Both encode the task into a vector that conditions the network, with no gradient steps at test:
a set encoder (``metarun.models.set_encoder``) averages the context (support) images into ``z``,
an adaptation network (``metarun.algorithms.film_adaptation``) turns ``z`` into FiLM's
``gamma, beta`` for every BatchNorm of the encoder (``metarun.models.film``), and the adapted
encoder embeds context and target (query) images. The heads differ:

* ``cnaps``: each class's linear weights and bias are generated from its mean feature
  (``ClassifierGenerator``); logits ``w_k . x + b_k``.
* ``simple_cnaps``: no generated classifier; the negative squared Mahalanobis distance to each
  class mean under a regularised class covariance, ``Q_k = l_k S_k + (1 - l_k) S_task + I``
  with ``l_k = n_k / (n_k + 1)``: ``-(x - mu_k)^T Q_k^-1 (x - mu_k)``.

``feature_adaptation: film+ar`` is the paper's autoregressive variant: each layer's FiLM is
made from ``z`` and the context's activations reaching that layer through the adapted layers
before it (``FiLMARAdaptation``; the target pass reuses the context's modulations).

The training loss is each task's cross-entropy plus 0.001 x the FiLM regularisers' ``sum r^2``
per task (``run_cnaps.py``: ``task_loss / tasks_per_batch + 0.001 * regularization_term`` for
each of 16 tasks, so ``mean CE + 0.001 * 16 * r^2`` per update; here ``0.001 *
meta_batch_size``).

As the authors' code runs them (``cambridge-mlg/cnaps`` ``src/``: ``model.py``,
``config_networks.py``, ``adaptation_networks.py``, ``set_encoder.py``, ``run_cnaps.py``;
``peymanbateni/simple-cnaps`` ``simple-cnaps-src/simple_cnaps.py``):

* The feature extractor is a ResNet-18 pretrained on ImageNet (Meta-Dataset's training
  classes) and frozen; only the set encoder and the adaptation networks train, Adam at 5e-4, 16
  tasks per update. metarun's default encoder is Conv-4 (``model``), pretrained by any metarun
  run and frozen with ``pretrained.from=<run> pretrained.freeze=true`` (README); without them
  the encoder trains with the rest.
* Context and target images go through the adapted encoder in two passes, each its own
  BatchNorm batch (BatchNorm in training mode on one task); here per episode, with one running
  update per meta-batch as every metric learner (``metarun.models.episode_norm``).
* Simple CNAPs' covariance of a class with one example: ``estimate_cov`` transposes its input
  only when it has more than one row, so a one-shot class's ``[1, d]`` feature is read as one
  variable observed ``d`` times, and its "covariance" is the scalar variance of the feature's
  ``d`` entries, which ``lambda * cov + ...`` then adds to every entry of the matrix (a constant
  matrix, not a diagonal). ``one_shot_covariance: authors`` (the default) reproduces that;
  ``zero`` gives a one-shot class no covariance of its own (``Q_k = S_task / 2 + I``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.base import ModelFactory, require_classification
from metarun.algorithms.film_adaptation import (
    ClassifierGenerator,
    FiLMAdaptation,
    FiLMARAdaptation,
)
from metarun.algorithms.protonet import class_means
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models.embedding import embedding_size
from metarun.models.episode_norm import one_running_update, use_episode_statistics
from metarun.models.film import FiLMHooks
from metarun.models.set_encoder import SetEncoder
from metarun.randomness import drawing_from, keys_for

ONE_SHOT_COVARIANCES = ("authors", "zero")
FEATURE_ADAPTATIONS = ("film", "film+ar")


def covariance(features: Tensor, weights: Tensor) -> Tensor:
    """Unbiased covariances ``[..., d, d]`` of the rows of ``features`` ``[..., S, d]`` selected
    by 0/1 ``weights`` ``[..., S]`` (zero where only one is selected)."""
    count = weights.sum(-1, keepdim=True)
    mean = (weights.unsqueeze(-1) * features).sum(-2) / count
    centred = (features - mean.unsqueeze(-2)) * weights.unsqueeze(-1)
    return centred.transpose(-1, -2) @ centred / (count - 1).clamp(min=1).unsqueeze(-1)


def mahalanobis_logits(
    support: Tensor, labels: Tensor, query: Tensor, ways: int, one_shot: str = "authors"
) -> Tensor:
    """Simple CNAPs' logits ``[B, M, N]``: ``-(x - mu_k)^T Q_k^-1 (x - mu_k)`` for queries
    ``[B, M, d]``, with ``Q_k`` from the support ``[B, S, d]`` (module docstring)."""
    means, counts = class_means(support, labels, ways)
    d = support.shape[-1]
    one_hot = F.one_hot(labels, ways).to(support.dtype).transpose(1, 2)  # [B, N, S]
    task = covariance(support, torch.ones_like(support[..., 0]))  # [B, d, d]
    own = covariance(support.unsqueeze(1), one_hot)  # [B, N, d, d]; zero for a one-shot class
    if one_shot == "authors":  # the scalar variance of the lone feature's entries, everywhere
        spread = means.var(-1, unbiased=True)  # [B, N]: a one-shot class's mean is its feature
        own = torch.where((counts > 1)[..., None, None], own, spread[..., None, None])
    share = (counts / (counts + 1))[..., None, None]
    eye = torch.eye(d, dtype=support.dtype, device=support.device)
    precision = share * own + (1 - share) * task.unsqueeze(1) + eye
    difference = query.unsqueeze(2) - means.unsqueeze(1)  # [B, M, N, d]
    solved = torch.linalg.solve(precision.unsqueeze(1), difference.unsqueeze(-1)).squeeze(-1)
    return -(difference * solved).sum(-1)


class ConditionalLearner(nn.Module):
    """The set encoder, the FiLM-adapted encoder and the adaptation network; subclasses are the
    heads."""

    autocast_safe = False  # a covariance's inverse, and generated weights: kept in float32

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        meta_batch_size: int = 16,
        train_ways: int | None = None,
        train_queries: int | None = None,
        set_channels: int = 64,
        regulariser_weight: float = 0.001,
        feature_adaptation: str = "film",
    ) -> None:
        """``feature_adaptation``: ``film`` (FiLM from ``z`` alone) or ``film+ar`` (each layer's
        FiLM also from the context's activations reaching it, through the adapted layers
        before it: the paper's autoregressive variant), as the authors' flag."""
        super().__init__()
        require_classification(task, type(self).__name__)
        if feature_adaptation not in FEATURE_ADAPTATIONS:
            raise ConfigError(
                "algorithm.feature_adaptation",
                f"must be one of {', '.join(FEATURE_ADAPTATIONS)}, got {feature_adaptation!r}",
            )
        self.autoregressive = feature_adaptation == "film+ar"
        if not regulariser_weight >= 0:
            raise ConfigError(
                "algorithm.regulariser_weight", f"must be at least 0, got {regulariser_weight}"
            )
        self.task = task
        self.meta_batch_size = meta_batch_size
        self.train_ways, self.train_queries = train_ways, train_queries
        self.regulariser_weight = float(regulariser_weight)
        self.encoder = use_episode_statistics(model(task.input_shape, None))
        try:
            self.film = FiLMHooks(self.encoder)
        except ValueError as error:
            raise ConfigError("model", f"{error}; use a model with BatchNorm (conv4)") from None
        self.set_encoder = use_episode_statistics(SetEncoder(task.input_shape, set_channels))
        adaptation = FiLMARAdaptation if self.autoregressive else FiLMAdaptation
        self.adaptation = adaptation(set_channels, self.film.channels)
        self.features = embedding_size(self.encoder, task.input_shape)

    def training_episodes(self, evaluation: EpisodeSpec) -> EpisodeSpec:
        return evaluation.replace(ways=self.train_ways, queries=self.train_queries)

    def embed(
        self, support_x: Tensor, query_x: Tensor, keys: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Adapted features of each episode's support ``[B, S, d]`` and queries ``[B, M, d]``:
        per episode, its own FiLM and its own BatchNorm batches (context, then target), and an
        encoder that draws (DropBlock) drawing from the episode's key (``keys`` ``[B]``)."""
        keys = keys_for(self.encoder, keys, "encoder") if self.training else None
        supports, queries = [], []
        with one_running_update(self.set_encoder), one_running_update(self.encoder):
            for i, (context, target) in enumerate(zip(support_x, query_x, strict=True)):
                with drawing_from(None if keys is None else keys[i]):
                    z = self.set_encoder(context)
                    support, modulations = self._adapted_context(context, z)
                    supports.append(support)
                    with self.film.conditioned(modulations):
                        queries.append(self.encoder(target).flatten(1))
        return torch.stack(supports), torch.stack(queries)

    def _adapted_context(self, context: Tensor, z: Tensor) -> tuple[Tensor, list]:
        """The context's adapted features and the modulations that made them: from ``z``
        alone, or layer by layer as the context's activations reach each (``film+ar``)."""
        if self.autoregressive:
            with self.film.generating(self.adaptation.generators(z)) as modulations:
                features = self.encoder(context).flatten(1)
            return features, modulations
        modulations = [(g[0], b[0]) for g, b in self.adaptation(z.unsqueeze(0))]
        with self.film.conditioned(modulations):
            return self.encoder(context).flatten(1), modulations

    def logits(self, support: Tensor, labels: Tensor, query: Tensor, ways: int) -> Tensor:
        raise NotImplementedError

    def _logits(self, batch: EpisodeBatch) -> Tensor:
        support, query = self.embed(batch.support_x, batch.query_x, batch.keys)
        return self.logits(support, batch.support_y, query, batch.ways)

    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self._logits(batch)
        cross_entropy = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
        regularisation = self.adaptation.regularisation()
        # Per task of the whole meta-batch, so that shards on several processes add up to it.
        weight = self.regulariser_weight * self.meta_batch_size
        loss = cross_entropy + weight * regularisation
        accuracy = self.task.score(logits.detach(), batch.query_y).mean()
        return loss, {"loss": loss.detach(), "acc": accuracy, "film_reg": regularisation.detach()}

    def predict(self, batch: EpisodeBatch) -> Tensor:
        return self._logits(batch)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        ways = int(support_y.max()) + 1

        def classify(query_x: Tensor) -> Tensor:
            support, query = self.embed(support_x.unsqueeze(0), query_x.unsqueeze(0))
            return self.logits(support, support_y.unsqueeze(0), query, ways)[0]

        return classify


class CNAPs(ConditionalLearner):
    """CNAPs: a linear classifier generated from the class means."""

    def __init__(self, model: ModelFactory, task: TaskSpec, **settings) -> None:
        super().__init__(model, task, **settings)
        self.classifier = ClassifierGenerator(self.features)

    def logits(self, support: Tensor, labels: Tensor, query: Tensor, ways: int) -> Tensor:
        means, _ = class_means(support, labels, ways)
        weights, bias = self.classifier(means)  # [B, N, d], [B, N]
        return query @ weights.transpose(1, 2) + bias.unsqueeze(1)


class SimpleCNAPs(ConditionalLearner):
    """Simple CNAPs: the regularised Mahalanobis distance to the class means."""

    def __init__(
        self, model: ModelFactory, task: TaskSpec, one_shot_covariance: str = "authors", **settings
    ) -> None:
        if one_shot_covariance not in ONE_SHOT_COVARIANCES:
            raise ConfigError(
                "algorithm.one_shot_covariance",
                f"must be one of {', '.join(ONE_SHOT_COVARIANCES)}, got {one_shot_covariance!r}",
            )
        super().__init__(model, task, **settings)
        self.one_shot_covariance = one_shot_covariance

    def logits(self, support: Tensor, labels: Tensor, query: Tensor, ways: int) -> Tensor:
        return mahalanobis_logits(support, labels, query, ways, self.one_shot_covariance)


__all__ = ["CNAPs", "SimpleCNAPs", "covariance", "mahalanobis_logits"]
