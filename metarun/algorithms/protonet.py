"""Prototypical Networks (Snell, Swersky & Zemel 2017, NeurIPS).

Embeds every image with a shared encoder; a class's prototype is the mean embedding of its
support examples, and a query's logits are its negative squared Euclidean distances to the
prototypes, trained with cross-entropy. Adapting to a new task is computing prototypes: no
gradient steps.

Paper defaults (Omniglot): Conv-4 embedding, training episodes of 60 ways with 5 queries per
class (shots as at test), one episode per update, Adam 1e-3 halved every 2000 episodes.
Support and query images go through the encoder in one batch, as in the paper's code, so
BatchNorm sees both; evaluation uses BatchNorm's running statistics.

Two choices other libraries make differently are keys, the authors' code
(``jakesnell/prototypical-networks``: ``protonets/models/few_shot.py`` embeds
``torch.cat([xs, xq])`` in one pass, ``protonets/models/utils.py`` returns squared distances)
being the default: ``distance: squared | euclidean`` (easyfsl's ``-torch.cdist``) and
``embedding: joint | separate`` (easyfsl's two passes, each set with its own BatchNorm
statistics and running update). On the Omniglot sample at a 2000-episode budget the plain
distance gave 4.0 ± 1.3 points less 20-way error; the embedding made no difference
(``scripts/protonet_vs_easyfsl.py``, README).

In training, a meta-batch of several episodes goes through the encoder one episode at a time,
so BatchNorm normalises each with its own statistics and the loss is the mean of the episodes'
own losses however episodes are grouped (one call, several, or spread over processes with
``hardware=ddp``); the running statistics take one update per meta-batch (``EpisodeBatchNorm``).
On a CPU this is also faster than one pass over the whole meta-batch
(``scripts/benchmarks/maml_protonet.py``).
Evaluation, where BatchNorm uses running statistics, embeds a whole batch of episodes at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.base import ModelFactory, require_classification
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import embed_episodes, use_episode_statistics
from metarun.randomness import stream

DISTANCES = ("squared", "euclidean")
EMBEDDINGS = ("joint", "separate")


def class_means(support: Tensor, labels: Tensor, ways: int) -> tuple[Tensor, Tensor]:
    """Class means ``[B, N, D]`` of support embeddings ``[B, S, D]`` with labels ``[B, S]`` in
    ``0..ways-1`` (the prototypes), and each class's count ``[B, N]``."""
    one_hot = F.one_hot(labels, ways).to(support.dtype)  # [B, S, N]
    counts = one_hot.sum(1)
    return one_hot.transpose(1, 2) @ support / counts.unsqueeze(-1), counts


def prototype_logits(
    support: Tensor, support_y: Tensor, query: Tensor, ways: int, distance: str = "squared"
) -> Tensor:
    """Negative distances from queries ``[B, M, D]`` to the class means of support embeddings
    ``[B, S, D]`` with labels ``[B, S]`` in ``0..ways-1``; returns ``[B, M, ways]``.
    ``squared``: the paper's squared Euclidean distance; ``euclidean``: the plain one
    (``torch.cdist``, as easyfsl scores)."""
    prototypes, _ = class_means(support, support_y, ways)  # [B, N, D]
    if distance == "euclidean":
        return -torch.cdist(query, prototypes)
    return -((query.unsqueeze(2) - prototypes.unsqueeze(1)) ** 2).sum(-1)


class ProtoNet(nn.Module):
    autocast_safe = True
    # Plain convolutions: channels-last is 1.3-1.4x faster on a CPU
    # (scripts/benchmarks/maml_protonet.py).
    memory_format = torch.channels_last

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        meta_batch_size: int = 1,
        train_ways: int | None = 60,
        train_queries: int | None = 5,
        distance: str = "squared",
        embedding: str = "joint",
    ) -> None:
        super().__init__()
        require_classification(task, "protonet")
        if meta_batch_size < 1:
            raise ConfigError(
                "algorithm.meta_batch_size", f"must be at least 1, got {meta_batch_size}"
            )
        for key, value, choices in (
            ("distance", distance, DISTANCES),
            ("embedding", embedding, EMBEDDINGS),
        ):
            if value not in choices:
                raise ConfigError(
                    f"algorithm.{key}", f"must be one of {', '.join(choices)}, got {value!r}"
                )
        self.task = task
        self.encoder = use_episode_statistics(model(task.input_shape, None))
        self.meta_batch_size = meta_batch_size
        self.train_ways = train_ways
        self.train_queries = train_queries
        self.distance = distance
        self.embedding = embedding

    def training_episodes(self, evaluation: EpisodeSpec) -> EpisodeSpec:
        return evaluation.replace(ways=self.train_ways, queries=self.train_queries)

    def _logits(self, batch: EpisodeBatch) -> Tensor:
        if self.embedding == "separate":  # two passes: each set its own BatchNorm statistics
            support = embed_episodes(self.encoder, batch.support_x, stream(batch.keys, "support"))
            query = embed_episodes(self.encoder, batch.query_x, stream(batch.keys, "query"))
        else:
            s = batch.support_y.shape[1]
            images = torch.cat([batch.support_x, batch.query_x], dim=1)
            embeddings = embed_episodes(self.encoder, images, batch.keys)
            support, query = embeddings[:, :s], embeddings[:, s:]
        return prototype_logits(support, batch.support_y, query, batch.ways, self.distance)

    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self._logits(batch)
        loss = F.cross_entropy(logits.flatten(0, 1), batch.query_y.flatten())
        accuracy = self.task.score(logits.detach(), batch.query_y).mean()
        return loss, {"loss": loss.detach(), "acc": accuracy}

    def predict(self, batch: EpisodeBatch) -> Tensor:
        return self._logits(batch)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        ways = int(support_y.max()) + 1
        support = self.encoder(support_x).detach().unsqueeze(0)
        labels = support_y.unsqueeze(0)

        def classify(query_x: Tensor) -> Tensor:
            query = self.encoder(query_x).unsqueeze(0)
            return prototype_logits(support, labels, query, ways, self.distance)[0]

        return classify
