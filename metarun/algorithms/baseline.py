"""Baseline and Baseline++ (Chen, Liu, Kira, Wang & Huang 2019, ICLR, "A Closer Look at
Few-shot Classification").

No meta-learning: the backbone and a classifier over *all* training classes are trained with
ordinary cross-entropy. At test the backbone is frozen, each episode's support and query images
are embedded, a *new* classifier for the episode's N classes is fitted on the support features
alone, and it scores the queries. ``head: linear`` is Baseline (a linear layer); ``head:
cosine`` is Baseline++, whose logits are ``scale * g_c * cos(v_c, x)``: the authors' code
(``backbone.distLinear``) weight-normalises the class vectors (``W_c = g_c v_c / |v_c|``, a
learnable per-class norm ``g_c`` initialised to ``|v_c|``, their issues #4 and #8) and divides
the features by ``|x| + 1e-5``, with a fixed scale of 2 for up to 200 classes and 10 above
(Omniglot's thousands of training classes).

Paper and code defaults, used here: Adam at 1e-3 (no schedule, no weight decay), batches of
16 images, the training head's bias (linear) starting at zero. Fine-tuning (the authors'
``methods/baselinefinetune.py``): SGD with lr 0.01, momentum 0.9, dampening 0.9, weight decay
0.001 on all of the head's parameters, 100 epochs over the support set in mini-batches of 4
with a fresh random permutation per epoch; the new head is initialised as ``nn.Linear`` is
(uniform in ``±1/sqrt(D)``; a cosine head's ``g`` starts at ``|v|``).

Departures, and why:

* A training batch is a training episode's images (support and query together), labelled by
  each way's class in the split (``EpisodeBatch.classes``): 8 ways x (1 shot + 1 query) = the
  paper's 16 images. Unlike the authors' uniformly shuffled images, a batch holds 8 distinct
  classes with 2 images each, which the shared sampler gives for free (it needs shots and
  queries of at least 1).
* The training budget: the paper trains 400 epochs (the code: 400 on miniImageNet, 200 on CUB,
  5 on Omniglot); metarun counts steps, so an epoch is ``training images / 16`` steps (400
  miniImageNet epochs: 960,000) and ``trainer.max_steps`` is left as configured.
  The authors keep the last model; metarun keeps the best on validation.
* The training head has exactly the split's class count (the code's has ``--num_classes``
  outputs, 200 by default and at least 4112 on Omniglot, some never used); the cosine scale
  follows the count by the same rule, so it is 2 on miniImageNet and 10 on Omniglot as there.
* Fine-tuning is batched: the heads of a batch of episodes are one tensor ``[B, N, D]`` trained
  together on the sum of the episodes' mean losses, so each head gets exactly its own gradient
  and SGD (elementwise) updates each as if alone. Every episode starts from the same initial
  head and uses the same permutations, drawn from a generator seeded by ``finetune_seed``, so
  an episode's scores do not depend on which episodes share its batch.

BatchNorm: in training each episode goes through the backbone on its own (with one running
update per meta-batch, ``EpisodeBatchNorm``), so with ``meta_batch_size: 1`` a batch is the
authors' plain 16-image BatchNorm batch; evaluation embeds with running statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.base import ModelFactory, require_classification
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import embed_episodes, embedding_size, use_episode_statistics

Head = Literal["linear", "cosine"]
HEADS = ("linear", "cosine")
FEATURE_EPS = 1e-5  # the authors' x / (|x| + 1e-5)


def cosine_scale(classes: int) -> float:
    """The authors' fixed Baseline++ scale: 2 for up to 200 classes, 10 above."""
    return 2.0 if classes <= 200 else 10.0


def linear_logits(features: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``features [..., M, D] @ weight[..., C, D]^T + bias [..., C]``: ``[..., M, C]``."""
    return features @ weight.transpose(-1, -2) + bias.unsqueeze(-2)


def cosine_logits(features: Tensor, direction: Tensor, norm: Tensor, scale: float) -> Tensor:
    """``scale * g_c * cos(v_c, x)`` for features ``[..., M, D]``, class directions ``v``
    ``[..., C, D]`` and norms ``g`` ``[..., C]`` (weight normalisation): ``[..., M, C]``."""
    x = features / (features.norm(dim=-1, keepdim=True) + FEATURE_EPS)
    weight = direction * (norm / direction.norm(dim=-1)).unsqueeze(-1)
    return scale * x @ weight.transpose(-1, -2)


def head_logits(head: Head, features: Tensor, params: list[Tensor], scale: float) -> Tensor:
    if head == "linear":
        return linear_logits(features, *params)
    return cosine_logits(features, *params, scale)


class CosineClassifier(nn.Module):
    """Baseline++'s training head over ``classes`` classes: ``direction`` ``v`` and per-class
    ``norm`` ``g`` as in weight normalisation (``g`` starts at ``|v|``)."""

    def __init__(self, features: int, classes: int, scale: float) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(features)  # nn.Linear's initialisation
        self.direction = nn.Parameter(torch.empty(classes, features).uniform_(-bound, bound))
        self.norm = nn.Parameter(self.direction.detach().norm(dim=1).clone())
        self.scale = scale

    def forward(self, features: Tensor) -> Tensor:
        return cosine_logits(features, self.direction, self.norm, self.scale)


def initial_head(head: Head, ways: int, features: int, generator: torch.Generator) -> list[Tensor]:
    """A new episode head as the authors create it (``nn.Linear``'s uniform ``±1/sqrt(D)``;
    a cosine head's norm starts at ``|v|``), drawn from ``generator`` on the CPU:
    ``[weight, bias]`` or ``[direction, norm]``."""
    bound = 1.0 / math.sqrt(features)
    weight = (torch.rand(ways, features, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    if head == "linear":
        bias = (torch.rand(ways, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        return [weight, bias]
    return [weight, weight.norm(dim=1)]


@dataclass(frozen=True)
class FineTuning:
    """How a new head is fitted to a support set (the authors' values by default)."""

    epochs: int = 100
    batch_size: int = 4
    lr: float = 0.01
    momentum: float = 0.9
    dampening: float = 0.9
    weight_decay: float = 0.001
    seed: int = 0


def fit_heads(
    head: Head,
    support: Tensor,
    support_y: Tensor,
    ways: int,
    settings: FineTuning,
    scale: float,
) -> list[Tensor]:
    """Fit one new head per episode on support features ``[B, S, D]`` with labels ``[B, S]``;
    returns its parameters stacked over episodes (``[B, N, D]``, ``[B, N]``), detached.

    Every episode starts from the same initial head and sees the same mini-batch order, both
    drawn from ``settings.seed``: an episode's head does not depend on the others."""
    generator = torch.Generator().manual_seed(settings.seed)
    episodes, size, dim = support.shape
    support = support.detach()
    params = [
        p.to(support).expand(episodes, *p.shape).clone().requires_grad_()
        for p in initial_head(head, ways, dim, generator)
    ]
    optimizer = torch.optim.SGD(
        params,
        lr=settings.lr,
        momentum=settings.momentum,
        dampening=settings.dampening,
        weight_decay=settings.weight_decay,
    )
    with torch.enable_grad(), torch.autocast(support.device.type, enabled=False):
        for _ in range(settings.epochs):
            order = torch.randperm(size, generator=generator).to(support.device)
            for start in range(0, size, settings.batch_size):
                pick = order[start : start + settings.batch_size]
                logits = head_logits(head, support[:, pick], params, scale)
                targets = support_y[:, pick]
                # The sum over episodes of each episode's mean loss: every head gets its own
                # gradient, unscaled by the number of episodes.
                loss = F.cross_entropy(
                    logits.flatten(0, 1), targets.flatten(), reduction="sum"
                ) / len(pick)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    return [p.detach() for p in params]


class Baseline(nn.Module):
    autocast_safe = True  # plain supervised training; fine-tuning runs in float32 regardless
    # Plain convolutions: channels-last is faster on a CPU (as for ProtoNet).
    memory_format = torch.channels_last

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        head: str = "linear",
        meta_batch_size: int = 1,
        train_ways: int | None = 8,
        train_shots: int | None = 1,
        train_queries: int | None = 1,
        scale: float | None = None,
        finetune_epochs: int = 100,
        finetune_batch_size: int = 4,
        finetune_lr: float = 0.01,
        finetune_momentum: float = 0.9,
        finetune_dampening: float = 0.9,
        finetune_weight_decay: float = 0.001,
        finetune_seed: int = 0,
    ) -> None:
        super().__init__()
        name = "baseline_pp" if head == "cosine" else "baseline"
        require_classification(task, name)
        self.finetuning = FineTuning(
            finetune_epochs,
            finetune_batch_size,
            finetune_lr,
            finetune_momentum,
            finetune_dampening,
            finetune_weight_decay,
            finetune_seed,
        )
        check_settings(head, meta_batch_size, scale, self.finetuning)
        self.task = task
        self.head: Head = head  # type: ignore[assignment]
        self.encoder = use_episode_statistics(model(task.input_shape, None))
        self.meta_batch_size = meta_batch_size
        self.train_ways = train_ways
        self.train_shots = train_shots
        self.train_queries = train_queries
        self.scale = scale
        self.classifier: nn.Module | None = None
        self.register_load_state_dict_pre_hook(Baseline._classifier_from_state)

    # -- the pre-training classifier ---------------------------------------------------------
    def set_training_classes(self, count: int) -> None:
        """Create the classifier over every training class (``ClassSupervised``)."""
        if count < 1:
            raise ValueError(f"need at least one training class, got {count}")
        features = embedding_size(self.encoder, self.task.input_shape)
        if self.head == "linear":
            classifier: nn.Module = nn.Linear(features, count)
            nn.init.zeros_(classifier.bias)  # the authors' code
        else:
            scale = self.scale if self.scale is not None else cosine_scale(count)
            classifier = CosineClassifier(features, count, scale)
        reference = next(self.encoder.parameters())
        self.classifier = classifier.to(device=reference.device, dtype=reference.dtype)

    def _classifier_from_state(
        self, state_dict: Mapping[str, Any], prefix: str, *args: Any
    ) -> None:
        """A checkpoint holds the classifier; a learner rebuilt from config (``metarun.load``)
        has none until this creates it with the stored class count."""
        key = prefix + ("classifier.weight" if self.head == "linear" else "classifier.direction")
        if self.classifier is None and key in state_dict:
            self.set_training_classes(state_dict[key].shape[0])

    # -- training ----------------------------------------------------------------------------
    def training_episodes(self, evaluation: EpisodeSpec) -> EpisodeSpec:
        return evaluation.replace(
            ways=self.train_ways, shots=self.train_shots, queries=self.train_queries
        )

    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        """Cross-entropy of the classifier over all training classes against each image's
        class in the split (``batch.classes``), support and query images alike."""
        if self.classifier is None:
            raise RuntimeError(
                "the pre-training classifier does not exist yet: call "
                "set_training_classes(count) with the training split's class count first"
            )
        if batch.classes is None:
            raise ConfigError(
                "dataset",
                "baseline pre-trains on every episode's split class labels "
                "(EpisodeBatch.classes), which this data set's episodes do not carry; use an "
                "image data set",
            )
        images = torch.cat([batch.support_x, batch.query_x], dim=1)
        labels = torch.cat(
            [batch.classes.gather(1, batch.support_y), batch.classes.gather(1, batch.query_y)],
            dim=1,
        )
        features = embed_episodes(self.encoder, images, batch.keys)
        logits = self.classifier(features)  # [B, n, classes]
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        accuracy = self.task.score(logits.detach(), labels).mean()
        return loss, {"loss": loss.detach(), "acc": accuracy}

    # -- few-shot evaluation -----------------------------------------------------------------
    def _episode_scale(self, ways: int) -> float:
        return self.scale if self.scale is not None else cosine_scale(ways)

    def _fit(self, support: Tensor, support_y: Tensor, ways: int) -> list[Tensor]:
        support = support.detach().to(torch.promote_types(support.dtype, torch.float32))
        return fit_heads(
            self.head, support, support_y, ways, self.finetuning, self._episode_scale(ways)
        )

    def predict(self, batch: EpisodeBatch) -> Tensor:
        s = batch.support_y.shape[1]
        features = embed_episodes(
            self.encoder, torch.cat([batch.support_x, batch.query_x], dim=1)
        ).detach()
        features = features.to(torch.promote_types(features.dtype, torch.float32))
        params = self._fit(features[:, :s], batch.support_y, batch.ways)
        with torch.autocast(features.device.type, enabled=False):
            scale = self._episode_scale(batch.ways)
            return head_logits(self.head, features[:, s:], params, scale)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        ways = int(support_y.max()) + 1
        with torch.no_grad():
            support = self.encoder(support_x).unsqueeze(0)
        params = self._fit(support, support_y.unsqueeze(0), ways)
        scale = self._episode_scale(ways)

        def classify(query_x: Tensor) -> Tensor:
            query = self.encoder(query_x).unsqueeze(0).to(params[0].dtype)
            with torch.autocast(query.device.type, enabled=False):
                return head_logits(self.head, query, params, scale)[0]

        return classify


def check_settings(
    head: str, meta_batch_size: int, scale: float | None, finetuning: FineTuning
) -> None:
    """One-line ``ConfigError`` for a setting that cannot work."""
    if head not in HEADS:
        raise ConfigError(
            "algorithm.head", f"must be linear (Baseline) or cosine (Baseline++), got {head!r}"
        )
    at_least_one = {
        "algorithm.meta_batch_size": meta_batch_size,
        "algorithm.finetune_epochs": finetuning.epochs,
        "algorithm.finetune_batch_size": finetuning.batch_size,
    }
    for key, value in at_least_one.items():
        if value < 1:
            raise ConfigError(key, f"must be at least 1, got {value}")
    if not finetuning.lr > 0:
        raise ConfigError("algorithm.finetune_lr", f"must be positive, got {finetuning.lr}")
    if scale is not None and not scale > 0:
        raise ConfigError(
            "algorithm.scale", f"must be positive or null (the authors' rule), got {scale}"
        )
    for key, value in (
        ("algorithm.finetune_momentum", finetuning.momentum),
        ("algorithm.finetune_dampening", finetuning.dampening),
    ):
        if not 0 <= value <= 1:
            raise ConfigError(key, f"must be between 0 and 1, got {value}")
    if finetuning.weight_decay < 0:
        raise ConfigError(
            "algorithm.finetune_weight_decay",
            f"must be at least 0, got {finetuning.weight_decay}",
        )
