"""SNAIL, a Simple Neural Attentive Meta-Learner (Mishra, Rohaninejad, Chen & Abbeel 2018, ICLR).

A few-shot task is a sequence: the ``N*K`` support examples, each its image embedding
concatenated with its one-hot label, then one query with a zero label vector. A causal sequence
model (``metarun.models.snail_blocks.SnailNet``: temporal-convolution and soft-attention blocks)
reads it, and its output at the last position is the query's ``N`` logits, trained with
cross-entropy on that position. Adapting to a new task is reading its support set: no gradient
steps.

Paper defaults (appendix, supervised experiments): for N-way K-shot, ``T = NK + 1`` and the
network is AttentionBlock(64, 32), TCBlock(T, 128), AttentionBlock(256, 128), TCBlock(T, 128),
AttentionBlock(512, 256), then a 1x1 convolution to N logits; TC blocks use dilations ``2^i``,
``i = 1 .. ceil(log2 T)`` (its pseudo-code); the score is the accuracy at the last, (NK+1)-th,
position. The Omniglot embedding is four blocks of
3x3 conv with 64 channels, BatchNorm, leaky ReLU and 2x2 max-pool (64 features); mini-ImageNet
uses a ResNet. Reported: Omniglot 5-way 99.07% (1-shot) / 99.78% (5-shot), 20-way 97.64% /
99.36%; mini-ImageNet 5-way 55.71% / 68.88%.

Sources: the paper's appendix text could not be retrieved here. The block sizes, the dilations
and the loss on the last position alone agree with three public reimplementations
(eambutu/snail-pytorch, seujung/SNAIL-gluon, metamazium) and with the pseudo-code as recalled;
the reported accuracies are quoted by eambutu/snail-pytorch's README (Omniglot) and by
benchmark listings (mini-ImageNet). The optimiser settings are not confirmed (below).

How this differs, and why:

- Episodes hold ``N*Q`` queries, not one: each query is the last item of its own sequence
  ``[support..., query]``, and all share the support prefix. The model is causal, so the prefix
  is computed once per episode and only each query's last position beyond it
  (``SnailNet.extend``), exactly as ``N*Q`` separate sequences would give; a query's
  prediction does not depend on the other queries (in evaluation; in training BatchNorm
  normalises each episode's images, support and queries, with the episode's statistics, as
  ProtoNet does; evaluation uses the running statistics). ``train_queries`` queries per class
  (default 1: ``N`` query sequences per training episode, one per class) and
  ``meta_batch_size`` episodes per update.
- Support order: the paper presents the support examples in random order. In training each
  episode's support set is shuffled afresh (``shuffle_support``); in evaluation one fixed
  permutation (from seed 0, the same for every episode and batch) reorders every support set,
  so predictions depend on the support set only. With ``shuffle_support=false`` the episode's
  own order (label-major) is used throughout.
- Embedding: the configured ``model`` without a head (Conv-4 by default: ReLU, not leaky
  ReLU; 64 features on 28x28 Omniglot). Some reimplementations add a 64-to-64 linear layer.
- Optimiser: Adam. The paper's learning rate and batch size could not be confirmed; the YAML
  uses Adam 1e-4 and 32 tasks per update, the settings of eambutu/snail-pytorch (98.3% on
  Omniglot 5-way 1-shot). On the Omniglot sample SNAIL stays at chance for its first 100
  updates (32 tasks each, lr 1e-4 or 1e-3) before its attention locks on; with lr 1e-3 and 8
  tasks per update it reached 43% (5-way 1-shot) after 400.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.base import ModelFactory, require_classification
from metarun.algorithms.sequences import fixed_order
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import embed_episodes, embedding_size, use_episode_statistics
from metarun.models.snail_blocks import SnailNet
from metarun.randomness import permutation, stream

EVAL_ORDER_SEED = 0
"""Seeds the one support permutation evaluation uses, whatever the batch."""


def sequence_items(
    support: Tensor, support_y: Tensor, queries: Tensor, ways: int
) -> tuple[Tensor, Tensor]:
    """The sequence items of episodes: support features ``[B, S, D]`` with their one-hot labels
    ``[B, S, D + ways]`` (the shared prefix), and queries ``[B, M, D]`` with a zero label vector
    ``[B, M, D + ways]`` (each the last item of its own sequence)."""
    labels = F.one_hot(support_y, ways).to(support.dtype)
    blank = queries.new_zeros(*queries.shape[:2], ways)
    return torch.cat([support, labels], dim=-1), torch.cat([queries, blank], dim=-1)


class SNAIL(nn.Module):
    variable_episodes = False  # its network is built for one sequence length, N*K + 1
    autocast_safe = True
    # Plain convolutions in the encoder: channels-last is faster on a CPU (as ProtoNet).
    memory_format = torch.channels_last

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        shots: int = 1,
        meta_batch_size: int = 32,
        train_queries: int | None = 1,
        shuffle_support: bool = True,
        key_sizes: Sequence[int] = (64, 256, 512),
        value_sizes: Sequence[int] = (32, 128, 256),
        filters: int = 128,
    ) -> None:
        super().__init__()
        require_classification(task, "snail")
        positive = {
            "algorithm.meta_batch_size": meta_batch_size,
            "algorithm.shots": shots,
            "algorithm.filters": filters,
            "algorithm.train_queries": 1 if train_queries is None else train_queries,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(key, f"must be at least 1, got {value}")
        key_sizes, value_sizes = list(key_sizes), list(value_sizes)
        if not key_sizes or len(key_sizes) != len(value_sizes):
            raise ConfigError(
                "algorithm.value_sizes",
                f"needs one entry per attention block, like algorithm.key_sizes "
                f"({len(key_sizes)}), got {len(value_sizes)}",
            )
        if min(key_sizes + value_sizes) < 1:
            raise ConfigError("algorithm.key_sizes", "key and value sizes must be at least 1")
        self.task = task
        self.ways = task.output_size
        self.shots = shots
        self.meta_batch_size = meta_batch_size
        self.train_queries = train_queries
        self.shuffle_support = shuffle_support
        self.encoder = use_episode_statistics(model(task.input_shape, None))
        features = embedding_size(self.encoder, task.input_shape)
        self.sequence_length = self.ways * shots + 1
        self.net = SnailNet(
            features + self.ways, self.ways, self.sequence_length, key_sizes, value_sizes, filters
        )

    def training_episodes(self, evaluation: EpisodeSpec) -> EpisodeSpec:
        # Here training and test tasks have the same N and K: the network's TC depth follows
        # T = NK + 1 and its output has N logits. The paper (section 5.1) instead trains one
        # model per N on K drawn uniformly from 1 to 5; that sampling is not implemented.
        if evaluation.shots != self.shots:
            raise ConfigError(
                "algorithm.shots",
                f"is {self.shots} but the episodes are {evaluation.shots}-shot; use "
                f"algorithm.shots={evaluation.shots} (the default follows dataset.shots)",
            )
        return evaluation.replace(queries=self.train_queries)

    def support_order(
        self, episodes: int, size: int, device: torch.device, keys: Tensor | None = None
    ) -> Tensor:
        """``[B, S]`` positions: the order support examples enter each episode's sequence (in
        training, drawn from each task's key ``keys`` ``[B]``)."""
        if not self.shuffle_support:
            order = torch.arange(size, device=device)
        elif self.training:
            if keys is None:
                raise ValueError(
                    "SNAIL shuffles each training episode's support set from its random key, "
                    "and these episodes carry none (EpisodeBatch.keys)"
                )
            return permutation(stream(keys, "support order"), size).to(device)
        else:
            order = fixed_order(size, EVAL_ORDER_SEED, device)
        return order.expand(episodes, -1)

    def _logits(
        self, support: Tensor, support_y: Tensor, queries: Tensor, keys: Tensor | None = None
    ) -> Tensor:
        """Query logits ``[B, M, N]`` from support features ``[B, S, D]`` with labels
        ``[B, S]`` and query features ``[B, M, D]``."""
        if support_y.shape[1] != self.sequence_length - 1:
            raise ValueError(
                f"SNAIL's network is built for {self.ways}-way {self.shots}-shot sequences of "
                f"{self.sequence_length} steps, not a support set of {support_y.shape[1]}: "
                f"variable episodes (dataset.variable) need another learner"
            )
        order = self.support_order(*support_y.shape, support.device, keys)
        support = support.gather(1, order.unsqueeze(-1).expand_as(support))
        prefix, tails = sequence_items(support, support_y.gather(1, order), queries, self.ways)
        return self.net.extend(prefix, tails)

    def _batch_logits(self, batch: EpisodeBatch) -> Tensor:
        s = batch.support_y.shape[1]
        images = torch.cat([batch.support_x, batch.query_x], dim=1)
        features = embed_episodes(self.encoder, images, batch.keys)
        return self._logits(features[:, :s], batch.support_y, features[:, s:], batch.keys)

    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self._batch_logits(batch)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
        accuracy = self.task.score(logits.detach(), batch.query_y).mean()
        return loss, {"loss": loss.detach(), "acc": accuracy}

    def predict(self, batch: EpisodeBatch) -> Tensor:
        return self._batch_logits(batch)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        support = self.encoder(support_x).flatten(1).detach().unsqueeze(0)
        labels = support_y.unsqueeze(0)

        def classify(query_x: Tensor) -> Tensor:
            queries = self.encoder(query_x).flatten(1).unsqueeze(0)
            return self._logits(support, labels, queries)[0]

        return classify
