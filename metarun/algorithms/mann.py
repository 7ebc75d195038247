"""Memory-Augmented Neural Networks (Santoro, Bartunov, Botvinick, Wierstra & Lillicrap 2016,
ICML, "Meta-Learning with Memory-Augmented Neural Networks").

An LSTM controller with an external memory written by Least Recently Used Access
(``metarun.models.lru_memory``) reads an episode as a sequence: the input at step ``t`` is the
image ``x_t`` with the one-hot label of the *previous* step, ``y_{t-1}`` (zeros at the first
step), so the network must hold ``x_t`` until its label arrives and bind them in memory. The
output at every step is a softmax over the episode's ``N`` ways from ``[h_t, r_t]``, the
controller output and the read vectors. Adapting to a task is running its support sequence: no
gradient steps.

Paper defaults, and where each number comes from (the paper's full text could not be read here;
equations from its transcriptions, numbers from Deleu's reproduction ``tristandeleu/ntm-one-shot``,
whose comments quote the paper's pages):

* LRUA read/write/usage equations, the key written to memory (the paper has no separate add
  vector), the least used slot zeroed before writing, ``n`` = number of reads;
* LSTM controller of 200 units, memory of 128 slots x 40, 4 read heads, usage decay
  ``gamma = 0.95``, 16 episodes per update, images downscaled to 20x20 and flattened (no CNN);
* loss: cross-entropy summed over every step of the sequence, the first sight of a class
  included;
* RMSProp at 1e-4 (``optimizer=rmsprop``): the value commonly attributed to the paper, not
  confirmed here (Deleu's example uses Adam 1e-3);
* one-hot labels over the episode's ways (the paper's 5-character string labels for 15 classes
  are not implemented);
* headline results (Omniglot, 5 classes, one-hot labels, instance accuracy after 100,000
  episodes): 82.8% at the 2nd sight of a class, 94.9% at the 5th, quoted by Vinyals et al.
  (2016) and Finn et al. (2017) as 5-way 1-shot and 5-shot; no 20-way or miniImageNet results.

Departures, for metarun's evaluation protocol:

* The paper's episodes are one stream (each class shown up to 10 times, every step predicted).
  Here the support set, in an order shuffled per episode, is the sequence; each query is then
  one more step from the same post-support state (batched: the state is repeated per query),
  so a query's prediction depends on the support set only, never on other queries. A query's
  previous-label input is the last support item's label: what the stream would hold there.
* Training loss: the mean cross-entropy over every support step (``support_loss``; the paper
  scores every step) and every query; accuracy is on the queries.
* Support order: random per episode in training (drawn from the task's key,
  ``metarun.randomness``, a function of its index in the run, so the same on any process); in
  ``predict`` and ``adapt`` one fixed permutation from ``order_seed`` for every episode, so an
  episode's scores do not depend on its batch.
* Inputs: Omniglot here is 28x28 (784 pixels), normalised; ``dataset.image_size=20`` gives the
  paper's 20x20. ``encoder=model`` feeds the ``model`` group's embedding instead of pixels (not
  in the paper; BatchNorm per episode in training, running statistics in evaluation).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.base import ModelFactory, require_classification
from metarun.algorithms.episode_ways import adapts_to_support_ways, answers_episode_ways
from metarun.algorithms.sequences import fixed_order
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import embed_episodes, embedding_size, use_episode_statistics
from metarun.models.lru_memory import LRUAMemoryCell, LRUAState
from metarun.randomness import permutation, stream

ENCODERS = ("pixels", "model")
PROTOCOLS = ("episodic", "stream")
SIGHTS = (1, 2, 3, 4, 5, 10)  # the instances the paper's Table 1 reports


def sight_numbers(labels: Tensor, ways: int) -> Tensor:
    """For a stream's labels ``[B, T]``, which presentation of its class each step is: 1 for
    the first time a class appears, 2 for the second, and so on."""
    one_hot = F.one_hot(labels, ways)
    return (one_hot.cumsum(1) * one_hot).sum(-1)


def accuracy_by_sight(logits: Tensor, labels: Tensor, instances: int) -> Tensor:
    """Per episode, the accuracy at each presentation ``[B, instances]``: column ``k - 1`` is
    the share of the episode's classes predicted right at their ``k``-th presentation (the
    paper's "instance" accuracy; every class appears ``instances`` times in a stream)."""
    correct = (logits.argmax(-1) == labels).to(logits.dtype)
    sights = sight_numbers(labels, logits.shape[-1])
    by_sight = F.one_hot(sights - 1, instances).to(logits.dtype)  # [B, T, instances]
    return (correct.unsqueeze(-1) * by_sight).sum(1) / by_sight.sum(1).clamp_min(1)


def label_offset_inputs(features: Tensor, labels: Tensor, ways: int) -> Tensor:
    """The sequence ``[x_t, onehot(y_{t-1})]`` (zeros at ``t = 0``) from features ``[B, T, D]``
    and labels ``[B, T]``; returns ``[B, T, D + ways]``."""
    one_hot = F.one_hot(labels, ways).to(features.dtype)
    previous = torch.cat([torch.zeros_like(one_hot[:, :1]), one_hot[:, :-1]], dim=1)
    return torch.cat([features, previous], dim=-1)


def check_settings(
    meta_batch_size: int,
    sizes: dict[str, int],
    usage_decay: float,
    encoder: str,
    protocol: str = "episodic",
    stream_instances: int = 10,
    key_strength: float | None = None,
) -> None:
    """One-line ``ConfigError``s for settings that cannot work."""
    if meta_batch_size < 1:
        raise ConfigError("algorithm.meta_batch_size", f"must be at least 1, got {meta_batch_size}")
    for key, value in sizes.items():
        if value < 1:
            raise ConfigError(f"algorithm.{key}", f"must be at least 1, got {value}")
    if sizes["memory_slots"] < sizes["read_heads"]:
        raise ConfigError(
            "algorithm.memory_slots",
            f"each of the {sizes['read_heads']} heads writes to its own least used slot, so at "
            f"least {sizes['read_heads']} slots are needed, got {sizes['memory_slots']}",
        )
    if not 0.0 <= usage_decay <= 1.0:
        raise ConfigError("algorithm.usage_decay", f"must be in [0, 1], got {usage_decay}")
    if encoder not in ENCODERS:
        raise ConfigError(
            "algorithm.encoder", f"must be one of {', '.join(ENCODERS)}, got {encoder!r}"
        )
    if protocol not in PROTOCOLS:
        raise ConfigError(
            "algorithm.protocol", f"must be one of {', '.join(PROTOCOLS)}, got {protocol!r}"
        )
    if stream_instances < 2:
        raise ConfigError(
            "algorithm.stream_instances", f"must be at least 2, got {stream_instances}"
        )
    if key_strength is not None and not key_strength > 0:
        raise ConfigError("algorithm.key_strength", f"must be null or positive, got {key_strength}")


class MANN(nn.Module):
    # The memory accumulates writes over the sequence and reads through near-tied cosine
    # similarities: kept in full precision.
    autocast_safe = False

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        meta_batch_size: int = 16,
        memory_slots: int = 128,
        memory_width: int = 40,
        controller_size: int = 200,
        read_heads: int = 4,
        usage_decay: float = 0.95,
        add_vector: bool = False,
        support_loss: bool = True,
        encoder: str = "pixels",
        order_seed: int = 0,
        train_shots: int | None = None,
        train_queries: int | None = None,
        protocol: str = "episodic",
        stream_instances: int = 10,
        key_strength: float | None = None,
    ) -> None:
        """``protocol``: what training episodes are (module docstring); ``stream_instances``:
        presentations of each class in a ``stream`` episode; ``key_strength``: beta of the read
        weights' softmax (null: the paper's, none)."""
        super().__init__()
        require_classification(task, "mann")
        sizes = {
            "memory_slots": memory_slots,
            "memory_width": memory_width,
            "controller_size": controller_size,
            "read_heads": read_heads,
        }
        check_settings(
            meta_batch_size, sizes, usage_decay, encoder, protocol, stream_instances, key_strength
        )
        self.protocol = protocol
        self.stream_instances = stream_instances
        self.task = task
        self.ways = task.output_size
        self.meta_batch_size = meta_batch_size
        self.support_loss = support_loss
        self.order_seed = order_seed
        self.train_shots = train_shots
        self.train_queries = train_queries
        self.encoder = None
        features = math.prod(task.input_shape)
        if encoder == "model":
            self.encoder = use_episode_statistics(model(task.input_shape, None))
            features = embedding_size(self.encoder, task.input_shape)
        self.cell = LRUAMemoryCell(
            features + self.ways,
            controller_size,
            memory_slots,
            memory_width,
            read_heads,
            usage_decay,
            add_vector,
            key_strength,
        )
        self.classifier = nn.Linear(self.cell.features, self.ways)

    def training_episodes(self, evaluation: EpisodeSpec) -> EpisodeSpec:
        if self.protocol == "stream":  # the stream is support and query together
            return evaluation.replace(shots=self.stream_instances - 1, queries=1)
        return evaluation.replace(shots=self.train_shots, queries=self.train_queries)

    def _features(self, images: Tensor, keys: Tensor | None = None) -> Tensor:
        """``[B, n, D]`` inputs from images ``[B, n, ...]``: flattened pixels, or the encoder's
        embeddings (one call per episode in training, so BatchNorm sees each on its own)."""
        if self.encoder is None:
            return images.flatten(2)
        return embed_episodes(self.encoder, images, keys)

    def _support(
        self, support: Tensor, support_y: Tensor, order: Tensor
    ) -> tuple[Tensor, Tensor, LRUAState]:
        """Run the support sequence in ``order`` ``[B, S]``: its logits ``[B, S, N]``, its
        labels in that order, and the state after it."""
        steps = torch.gather(support, 1, order.unsqueeze(-1).expand(-1, -1, support.shape[-1]))
        labels = torch.gather(support_y, 1, order)
        inputs = label_offset_inputs(steps, labels, self.ways)
        state = self.cell.initial_state(inputs.shape[0], inputs)
        outputs = []
        for t in range(inputs.shape[1]):
            features, state = self.cell.step(inputs[:, t], state)
            outputs.append(features)
        return self.classifier(torch.stack(outputs, dim=1)), labels, state

    def _queries(self, state: LRUAState, last_label: Tensor, query: Tensor) -> Tensor:
        """Each query ``[B, M, D]`` one step on from its episode's post-support state, with the
        last support label ``[B]`` as its previous label; returns ``[B, M, N]``."""
        b, m = query.shape[:2]
        previous = F.one_hot(last_label, self.ways).to(query.dtype)
        inputs = torch.cat([query, previous.unsqueeze(1).expand(-1, m, -1)], dim=-1)
        features, _ = self.cell.step(inputs.flatten(0, 1), state.repeat_each(m))
        return self.classifier(features).view(b, m, -1)

    def _logits(self, batch: EpisodeBatch, order: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        self._check_ways(batch)
        s = batch.support_y.shape[1]
        images = torch.cat([batch.support_x, batch.query_x], dim=1)
        features = self._features(images, batch.keys)
        support_logits, labels, state = self._support(features[:, :s], batch.support_y, order)
        query_logits = self._queries(state, labels[:, -1], features[:, s:])
        return support_logits, labels, query_logits

    @staticmethod
    def _training_order(batch: EpisodeBatch) -> Tensor:
        """A random support order ``[B, S]`` per episode, from each task's key."""
        keys = stream(batch.training_keys(), "support order")
        return permutation(keys, batch.support_y.shape[1]).to(batch.support_y.device)

    def _check_ways(self, batch: EpisodeBatch) -> None:
        if batch.ways > self.ways:
            raise ValueError(f"episodes are {batch.ways}-way but the model has {self.ways} ways")

    def classifier_head(self) -> nn.Module:
        """The class logits' layer (sliced to an episode's ways, ``episode_ways``)."""
        return self.classifier

    def stream_logits(self, batch: EpisodeBatch, order: Tensor) -> tuple[Tensor, Tensor]:
        """An episode's support and query items as one stream in ``order`` ``[B, T]``, every
        step predicted: logits ``[B, T, N]`` and the labels in that order."""
        self._check_ways(batch)
        images = torch.cat([batch.support_x, batch.query_x], dim=1)
        labels = torch.cat([batch.support_y, batch.query_y], dim=1)
        logits, ordered, _ = self._support(self._features(images, batch.keys), labels, order)
        return logits, ordered

    def _stream_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """The paper's training: cross-entropy over every step of the stream, and accuracy at
        the presentations the paper reports."""
        keys = stream(batch.training_keys(), "stream order")
        length = batch.support_y.shape[1] + batch.query_y.shape[1]
        logits, labels = self.stream_logits(
            batch, permutation(keys, length).to(batch.support_y.device)
        )
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        by_sight = accuracy_by_sight(logits.detach(), labels, self.stream_instances).mean(0)
        metrics = {"loss": loss.detach(), "acc": (logits.argmax(-1) == labels).float().mean()}
        for sight in SIGHTS:
            if sight <= self.stream_instances:
                metrics[f"acc_sight{sight}"] = by_sight[sight - 1]
        return loss, metrics

    @answers_episode_ways
    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        if self.protocol == "stream":
            return self._stream_loss(batch)
        order = self._training_order(batch)
        support_logits, labels, query_logits = self._logits(batch, order)
        logits, targets = query_logits.flatten(0, 1), batch.query_y.flatten()
        if self.support_loss:
            logits = torch.cat([support_logits.flatten(0, 1), logits])
            targets = torch.cat([labels.flatten(), targets])
        loss = F.cross_entropy(logits, targets)
        accuracy = self.task.score(query_logits.detach(), batch.query_y).mean()
        return loss, {"loss": loss.detach(), "acc": accuracy}

    @answers_episode_ways
    def predict(self, batch: EpisodeBatch) -> Tensor:
        b, s = batch.support_y.shape
        order = fixed_order(s, self.order_seed, batch.support_y.device).expand(b, -1)
        return self._logits(batch, order)[2]

    @adapts_to_support_ways
    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        order = fixed_order(len(support_y), self.order_seed, support_y.device).unsqueeze(0)
        support = self._features(support_x.unsqueeze(0))
        _, labels, state = self._support(support, support_y.unsqueeze(0), order)

        def classify(query_x: Tensor) -> Tensor:
            return self._queries(state, labels[:, -1], self._features(query_x.unsqueeze(0)))[0]

        return classify
