"""Siamese networks (Koch, Zemel & Salakhutdinov 2015, ICML Deep Learning Workshop, "Siamese
Neural Networks for One-shot Image Recognition").

Twin encoders (one network, so the twins share every weight) map two images to feature vectors
``h1, h2``; a fully connected sigmoid layer gives Koch's 4096-unit embedding, and the pair's
probability of showing one class is ``p = sigmoid(sum_j alpha_j |h1_j - h2_j| + b)``, a weighted
L1 distance with learned ``alpha`` and ``b``. Training is verification: binary cross-entropy on
minibatches of 128 same/different pairs, half of each. Nothing adapts to a new task: a query's
score for a class is its similarity to the class's support image (for K > 1 shots, the largest
over the class's shots), and the prediction is the most similar class, as in Koch's one-shot
test.

``loss=contrastive`` replaces the cross-entropy by the margin loss of Hadsell, Chopra & LeCun
(2006), ``same * D^2 / 2 + (1 - same) * max(0, margin - D)^2 / 2``, on the weighted L1 distance
``D = sum_j |alpha_j| |h1_j - h2_j|`` (a distance needs non-negative weights; ``b`` plays no
part), and scores a class by ``-D``.

Pairs come from ordinary training episodes (``metarun.data.pairs``): 64 ways x (1 shot + 1
query), one episode per update, give Koch's 128 pairs, 64 same and 64 different. Each image goes
through the encoder once per episode (support and query together, so BatchNorm sees both, with
each episode's own statistics in training as in ProtoNet); evaluation embeds a whole batch of
episodes in one pass with BatchNorm's running statistics and scores every (query, support) pair
at once.

Koch's settings and what differs here:

* Network: for 105x105 images, conv 64@10x10, max-pool, 128@7x7, max-pool, 128@4x4, max-pool,
  256@4x4, then FC 4096 sigmoid; ReLU elsewhere, no BatchNorm. Here the backbone is the ``model``
  group, Conv-4 by default: the data sets are 28x28 or 84x84, where Koch's network does not fit,
  and the comparison across learners uses one backbone. The 4096-unit sigmoid layer
  (``embedding_size``) and the weighted L1 layer are Koch's. His fully connected layers start
  from weights N(0, 0.2) and biases N(0.5, 0.01); the distance layer (``alpha``, ``b``) does so
  here, but the sigmoid layer keeps PyTorch's fan-in-scaled initialisation: Koch's scale suits
  the small activations of his unnormalised convolutions, while on Conv-4's BatchNorm-scaled
  features it saturates about 70% of the 4096 sigmoid units at initialisation on 84x84 images
  (1600 inputs; measured), against about 5% on 28x28 (64 inputs). The backbone keeps its own
  initialisation.
* Optimiser: SGD with momentum and L2 weight regularisation, with a learning rate, momentum and
  L2 weight per layer tuned by Bayesian optimisation (Whetlab) within learning rates 1e-4..1e-1,
  momenta 0..1 and L2 weights 0..0.1; momentum rising linearly from 0.5 per epoch; learning rates
  decayed 1% per epoch. The tuned values are not published. ``optimizer=koch_sgd`` (chosen by
  ``algorithm=siamese``) uses one value for all layers, within those ranges: learning rate 0.01,
  momentum 0.9 from the start (no ramp from 0.5), weight decay 5e-4, and the 1% decay every
  1000 updates (an "epoch" of 128,000 pairs; Koch's largest undistorted training set held
  150,000). On the Omniglot sample this trains steadily (79% validation accuracy after 100
  updates).
* Data: Koch trains on random affine distortions of his pairs (rotation, shear, scale,
  translation); they are not reproduced here (``dataset.augment`` offers flips and crops).
* ``margin`` (contrastive only) has no published default for this distance; 1.0.
* Training accuracy (``train/acc``) is the one-shot accuracy on the training episode's queries,
  the quantity validation and test report; ``train/pair_acc`` is Koch's verification accuracy
  (``p > 0.5``; contrastive: ``D < margin / 2``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.base import ModelFactory, require_classification
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.pairs import episode_pairs
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import embed_episodes, use_episode_statistics
from metarun.models.embedding import embedding_size as encoder_width

LOSSES = ("bce", "contrastive")


def weighted_l1(left: Tensor, right: Tensor, weight: Tensor) -> Tensor:
    """``sum_j weight_j |left_j - right_j|`` over the last dimension of aligned pairs."""
    return ((left - right).abs() * weight).sum(-1)


def pairwise_weighted_l1(query: Tensor, support: Tensor, weight: Tensor) -> Tensor:
    """``weighted_l1`` between every query ``[B, M, E]`` and support ``[B, S, E]`` vector:
    ``[B, M, S]``, without a ``[B, M, S, E]`` intermediate. For ``w >= 0``,
    ``w |a - b| = |w a - w b|``, so each sign of the weight is one L1 ``cdist``."""
    positive, negative = weight.clamp(min=0), (-weight).clamp(min=0)
    near = torch.cdist(query * positive, support * positive, p=1)
    return near - torch.cdist(query * negative, support * negative, p=1)


def class_scores(pair_scores: Tensor, support_y: Tensor, ways: int) -> Tensor:
    """Each class's score from query-support scores ``[B, M, S]``: the largest over the
    class's support examples (labels ``[B, S]``); returns ``[B, M, ways]``."""
    batch, queries, supports = pair_scores.shape
    index = support_y[:, None, :].expand(batch, queries, supports)
    empty = pair_scores.new_full((batch, queries, ways), float("-inf"))
    return empty.scatter_reduce(2, index, pair_scores, reduce="amax")


def contrastive_loss(distance: Tensor, same: Tensor, margin: float) -> Tensor:
    """Hadsell, Chopra & LeCun (2006): pull same pairs together, push different pairs to at
    least ``margin`` apart; the mean over pairs."""
    apart = (margin - distance).clamp(min=0)
    return (same * distance**2 + (1 - same) * apart**2).mean() / 2


class Siamese(nn.Module):
    autocast_safe = True
    # Plain convolutions, as in ProtoNet: channels-last is faster on a CPU.
    memory_format = torch.channels_last

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        meta_batch_size: int = 1,
        train_ways: int | None = 64,
        train_shots: int | None = 1,
        train_queries: int | None = 1,
        embedding_size: int = 4096,
        loss: str = "bce",
        margin: float = 1.0,
    ) -> None:
        super().__init__()
        require_classification(task, "siamese")
        check_settings(meta_batch_size, train_ways, train_shots, train_queries, embedding_size)
        if loss not in LOSSES:
            raise ConfigError("algorithm.loss", f"must be one of {', '.join(LOSSES)}, got {loss!r}")
        if not margin > 0:
            raise ConfigError("algorithm.margin", f"must be positive, got {margin}")
        self.task = task
        self.meta_batch_size = meta_batch_size
        self.train_ways = train_ways
        self.train_shots = train_shots
        self.train_queries = train_queries
        self.loss = loss
        self.margin = margin
        self.encoder = use_episode_statistics(model(task.input_shape, None))
        self.embedding = nn.Linear(encoder_width(self.encoder, task.input_shape), embedding_size)
        self.alpha = nn.Parameter(torch.empty(embedding_size))
        self.bias = nn.Parameter(torch.empty(()))
        with torch.no_grad():  # Koch's initialisation of his final, distance layer
            self.alpha.normal_(0.0, 0.2)
            self.bias.normal_(0.5, 0.01)

    def training_episodes(self, evaluation: EpisodeSpec) -> EpisodeSpec:
        spec = evaluation.replace(
            ways=self.train_ways, shots=self.train_shots, queries=self.train_queries
        )
        if spec.ways < 2:
            raise ConfigError(
                "algorithm.train_ways",
                f"different-class pairs need at least 2 ways, got {spec.ways}",
            )
        return spec

    def embed(self, images: Tensor, keys: Tensor | None = None) -> Tensor:
        """Sigmoid embeddings ``[B, n, E]`` of episodes' images ``[B, n, ...]``: one encoder
        call per episode in training (each normalised with its own statistics, drawing from its
        key), one for all in eval."""
        return torch.sigmoid(self.embedding(embed_episodes(self.encoder, images, keys)))

    def _embed_episodes(self, batch: EpisodeBatch) -> tuple[Tensor, Tensor]:
        s = batch.support_x.shape[1]
        images = torch.cat([batch.support_x, batch.query_x], dim=1)
        embeddings = self.embed(images, batch.keys)
        return embeddings[:, :s], embeddings[:, s:]

    def pair_scores(self, left: Tensor, right: Tensor) -> Tensor:
        """Similarity of aligned pairs: the logit of ``p`` (bce) or ``-D`` (contrastive).
        Symmetric in its arguments."""
        if self.loss == "bce":
            return weighted_l1(left, right, self.alpha) + self.bias
        return -weighted_l1(left, right, self.alpha.abs())

    def _class_scores(self, support: Tensor, support_y: Tensor, query: Tensor, ways: int) -> Tensor:
        if self.loss == "bce":
            scores = pairwise_weighted_l1(query, support, self.alpha) + self.bias
        else:
            scores = -pairwise_weighted_l1(query, support, self.alpha.abs())
        return class_scores(scores, support_y, ways)

    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        support, query = self._embed_episodes(batch)
        pairs = episode_pairs(batch)
        scores = self.pair_scores(*pairs.take(support, query))
        same = pairs.same.to(scores.dtype)
        if self.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(scores, same)
            verified = (scores > 0) == pairs.same
        else:
            loss = contrastive_loss(-scores, same, self.margin)
            verified = (-scores < self.margin / 2) == pairs.same
        with torch.no_grad():
            logits = self._class_scores(support, batch.support_y, query, batch.ways)
            accuracy = self.task.score(logits, batch.query_y).mean()
        return loss, {
            "loss": loss.detach(),
            "acc": accuracy,
            "pair_acc": verified.float().mean() * 100.0,
        }

    def predict(self, batch: EpisodeBatch) -> Tensor:
        support, query = self._embed_episodes(batch)
        return self._class_scores(support, batch.support_y, query, batch.ways)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        ways = int(support_y.max()) + 1
        support = self.embed(support_x[None]).detach()
        labels = support_y[None]

        def classify(query_x: Tensor) -> Tensor:
            query = self.embed(query_x[None])
            return self._class_scores(support, labels, query, ways)[0]

        return classify


def check_settings(
    meta_batch_size: int,
    train_ways: int | None,
    train_shots: int | None,
    train_queries: int | None,
    embedding_size: int,
) -> None:
    """One ``ConfigError`` naming the first out-of-range key."""
    if meta_batch_size < 1:
        raise ConfigError("algorithm.meta_batch_size", f"must be at least 1, got {meta_batch_size}")
    if train_ways is not None and train_ways < 2:
        raise ConfigError(
            "algorithm.train_ways", f"different-class pairs need at least 2 ways, got {train_ways}"
        )
    for key, value in (("train_shots", train_shots), ("train_queries", train_queries)):
        if value is not None and value < 1:
            raise ConfigError(f"algorithm.{key}", f"must be at least 1 (or null), got {value}")
    if embedding_size < 1:
        raise ConfigError("algorithm.embedding_size", f"must be at least 1, got {embedding_size}")
