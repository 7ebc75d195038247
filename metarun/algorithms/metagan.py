"""MetaGAN (Zhang, Che, Ghahramani, Bengio & Song 2018, NeurIPS, "MetaGAN: An Adversarial
Approach to Few-Shot Learning"): a few-shot classifier that is also the discriminator of a GAN
whose generator is conditioned on the task.

The discriminator is the host's N-way classifier with one more output, "fake", whose logit is
fixed at 0 (``metarun.algorithms.fake_class``): ``P(real | x) = sigmoid(logsumexp(l))``, and
one (N+1)-way cross-entropy over labelled real examples and generated ones (labelled N) is the
paper's discriminator loss, its supervised term plus its real/fake terms. The generator
(``metarun.models.task_generator``) decodes the mean embedding of an episode's support set and
noise drawn from the episode's key; it is trained by feature matching on the discriminator's
penultimate features. The two are trained by two optimisers in alternation, through the
trainer's ``Phased`` seam: each meta-step first steps the discriminator group on the host's
loss (fakes detached), then the generator group ``generator_steps`` times.

Hosts (``algorithm.host``), both in the paper:

* ``maml``: the inner loop adapts the discriminator on the support set plus generated fakes,
  and the meta-loss is the discriminator loss of the adapted weights on the query set plus
  other fakes; at test the inner loop also sees fakes (the generator is part of the learner),
  and the fakes share the query's BatchNorm batch, as in training.
* ``protonet``: the metric host (chosen over Relation Networks, which the paper pairs with
  MetaGAN, because its logits need no extra network: the fakes' distances to the prototypes
  are the N class logits, and the fixed 0 is the (N+1)-th). Fakes are embedded in the episode's
  encoder pass; evaluation is ProtoNet's, which uses running BatchNorm statistics, so the
  fakes are not needed there.

Read for facts (no code taken): the paper, of which only the abstract and introduction could
be read here (the NeurIPS 2018 proceedings page and a pdfhost.io copy, through the search
index): the method's details used here (the N+1-way discriminator with a fixed fake logit, the
task-conditioned generator, feature matching, MAML and Relation Networks as hosts) follow its
description in the issue and Salimans et al. 2016's semi-supervised GAN, which it builds on;
and the course project ``johnperuzzi/MetaGAN`` (``MAML-FORK/meta_gan.py``), which differs from
the paper (a separate sigmoid real/fake head trained with mean squared error, the generator
stepped inside MAML's inner loop, one Adam for everything). No code of the authors' was found
(``find_repos metagan``).

Departures from the paper, and why:

* The generator's feature matching uses the discriminator's meta-parameters (for MAML, the
  initialisation, not the adapted weights of each task): it needs no second inner loop, which
  would double a meta-step's cost; the adapted weights start from those parameters.
* Its conditioning is the mean of its own Conv-4 encoder's embeddings of the support set; the
  paper's generator architecture per data set is not reproduced.
* The real/fake terms carry the same weight as the supervised one (one (N+1)-way cross-entropy,
  averaged over real and generated examples) rather than a tuned weight.
* Only supervised few-shot learning: the paper's semi-supervised settings (unlabelled
  examples and tasks) are not implemented.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metarun.algorithms.adversary import Adversary
from metarun.algorithms.base import ModelFactory, Phase, require_classification
from metarun.algorithms.episode_ways import adapts_to_support_ways, answers_episode_ways
from metarun.algorithms.fake_class import (
    FakeClassifier,
    feature_matching,
    real_probability,
    with_fake_class,
)
from metarun.algorithms.gradient import Params, key_dim
from metarun.algorithms.maml import MAML
from metarun.algorithms.protonet import ProtoNet, prototype_logits
from metarun.data.episodes import EpisodeBatch
from metarun.data.task import TaskSpec, batched_loss
from metarun.errors import ConfigError
from metarun.models import embed_episodes
from metarun.models.norm import apply_batch_norm
from metarun.randomness import fold, stream

HOSTS = ("maml", "protonet")
ADVERSARY_KEYS = ("fakes", "generator_steps", "noise_size", "generator_channels")


def with_fake_labels(y: Tensor, count: int, ways: int) -> Tensor:
    """Labels ``[B, n]`` followed by ``count`` of the fake class, ``ways``."""
    return torch.cat([y, y.new_full((y.shape[0], count), ways)], 1)


def with_fakes(x: Tensor, y: Tensor, fakes: Tensor, ways: int) -> tuple[Tensor, Tensor]:
    """An episode's set with its fakes ``[B, m, ...]`` appended, labelled ``ways``."""
    return torch.cat([x, fakes], 1), with_fake_labels(y, fakes.shape[1], ways)


def fake_metrics(real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
    """Mean ``P(real)`` the discriminator gives real and generated examples."""
    return {
        "p_real": real_probability(real_logits.detach()).mean(),
        "p_real_fakes": real_probability(fake_logits.detach()).mean(),
    }


class MetaGANMAML(MAML):
    """MAML whose network is the (N+1)-way discriminator, adapted on support and fakes."""

    acts_in_tasks = False  # its fake class is a classifier's

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        inner_lr: float = 2.0,
        *,
        adversary: dict[str, Any],
        figure_episodes: int = 4,
        **inner_loop: Any,
    ) -> None:
        require_classification(task, "metagan")
        super().__init__(model, task, inner_lr, **inner_loop)
        self.adversary = Adversary(model, task, figure_episodes=figure_episodes, **adversary)
        self.figure_episodes = figure_episodes

    def build_model(self, model: ModelFactory) -> nn.Module:
        network = FakeClassifier(model(self.task.input_shape, self.task.output_size))
        return apply_batch_norm(network, self.batch_norm, self.inner_steps)

    # -- the two groups and their phases -----------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return self.adversary.groups(self)

    def phases(self) -> list[Phase]:
        return self.adversary.phases(self.meta_loss, self.generator_loss)

    # -- the discriminator -------------------------------------------------------------------
    def _episodes(self, batch: EpisodeBatch, keys: Tensor | None) -> tuple[Tensor, ...]:
        """Support and query sets with their (detached) fakes, each labelled N: one generator
        pass makes both sets of fakes."""
        ways = batch.ways
        support_fakes, query_fakes = self.adversary.detached(batch.support_x, keys, "fakes", 2)
        return (
            *with_fakes(batch.support_x, batch.support_y, support_fakes, ways),
            *with_fakes(batch.query_x, batch.query_y, query_fakes, ways),
        )

    @answers_episode_ways
    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        support_x, support_y, query_x, query_y = self._episodes(batch, batch.keys)
        step, params = self.adapt_batch(
            support_x, support_y, self.inner_steps, not self.second_order, batch.keys
        )[-1]
        logits = self._query(params, query_x, step, batch.keys)  # [B, Q + fakes, N + 1]
        loss = batched_loss(self.task, logits, query_y)
        queries, ways = batch.query_y.shape[1], batch.ways
        real, fake = logits[:, :queries, :ways], logits[:, queries:, :ways]
        score = self.task.score(real.detach(), batch.query_y).mean()
        return loss, {"loss": loss.detach(), "acc": score, **fake_metrics(real, fake)}

    @answers_episode_ways
    @torch.no_grad()
    def predict(self, batch: EpisodeBatch) -> Tensor:
        support_x, support_y, query_x, _ = self._episodes(batch, None)
        step, params = self.adapt_batch(support_x, support_y, self.test_inner_steps, True)[-1]
        logits = self._query(params, query_x, step)
        return logits[:, : batch.query_y.shape[1], : batch.ways]

    @adapts_to_support_ways
    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        self.check_ways(support_y)
        ways = int(support_y.max()) + 1  # check_ways refused more than the head has
        with torch.no_grad():
            support = support_x.unsqueeze(0)
            fakes, query_fakes = self.adversary.detached(support, None, "fakes", 2)
            query_fakes = query_fakes[0]
            x, y = with_fakes(support, support_y.unsqueeze(0), fakes, ways)
            step, params = self.adapt_batch(x, y, self.test_inner_steps, True)[-1]
        adapted = {name: p[0].detach() for name, p in params.items()}

        def classify(query_x: Tensor) -> Tensor:
            logits = self._forward(adapted, torch.cat([query_x, query_fakes]), step)
            return logits[: len(query_x), :ways]

        return classify

    # -- the generator -----------------------------------------------------------------------
    def _features(self, params: Params, x: Tensor) -> Tensor:
        for layer in self._step_indexed().values():
            layer.step, layer.last_stats = 0, None
        return functional_call(self.model, params, (x,), {"features": True})[1]

    def _matching(self, params: Params, real: Tensor, fakes: Tensor) -> Tensor:
        """One task: real and generated images in one batch (BatchNorm sees both alike)."""
        features = self._features(params, torch.cat([real, fakes]))
        return feature_matching(features[: len(real)], features[len(real) :])

    def generator_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        fakes = self.adversary.generate(batch.support_x, batch.keys, "generator fakes")
        real = torch.cat([batch.support_x, batch.query_x], 1)
        keys = None if batch.keys is None else fold(stream(batch.keys, "generator phase"), 0)
        one_task = self._with_noise(self._matching)
        lifted = self._vmap(one_task, (None, 0, 0, key_dim(keys)))
        loss = lifted(self.inner_parameters(), real, fakes, keys).mean()
        return loss, {"feature_matching": loss.detach()}

    def figures(self, batch: EpisodeBatch) -> dict[str, bytes]:
        return self.adversary.figures(batch)


class MetaGANProtoNet(ProtoNet):
    """ProtoNet whose encoder is the discriminator: fakes are the (N+1)-th class."""

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        *,
        adversary: dict[str, Any],
        figure_episodes: int = 4,
        **protonet: Any,
    ) -> None:
        super().__init__(model, task, **protonet)
        if self.embedding != "joint":
            raise ConfigError(
                "algorithm.protonet.embedding", "MetaGAN embeds an episode in one pass: joint"
            )
        self.adversary = Adversary(model, task, figure_episodes=figure_episodes, **adversary)
        self.figure_episodes = figure_episodes

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return self.adversary.groups(self)

    def phases(self) -> list[Phase]:
        return self.adversary.phases(self.meta_loss, self.generator_loss)

    def _embed(self, batch: EpisodeBatch, fakes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Support, query and fake embeddings from one pass per episode."""
        s, q = batch.support_x.shape[1], batch.query_x.shape[1]
        images = torch.cat([batch.support_x, batch.query_x, fakes], 1)
        embeddings = embed_episodes(self.encoder, images, batch.keys)
        return embeddings[:, :s], embeddings[:, s : s + q], embeddings[:, s + q :]

    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        (fakes,) = self.adversary.detached(batch.support_x, batch.keys, "fakes")
        support, query, fake = self._embed(batch, fakes)
        logits = prototype_logits(
            support, batch.support_y, torch.cat([query, fake], 1), batch.ways, self.distance
        )
        labels = with_fake_labels(batch.query_y, fakes.shape[1], batch.ways)
        loss = F.cross_entropy(with_fake_class(logits).flatten(0, 1), labels.flatten())
        queries = batch.query_y.shape[1]
        real, generated = logits[:, :queries], logits[:, queries:]
        accuracy = self.task.score(real.detach(), batch.query_y).mean()
        return loss, {"loss": loss.detach(), "acc": accuracy, **fake_metrics(real, generated)}

    def generator_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        fakes = self.adversary.generate(batch.support_x, batch.keys, "generator fakes")
        support, query, fake = self._embed(batch, fakes)
        real = torch.cat([support, query], 1)
        loss = feature_matching(real, fake).mean()
        return loss, {"feature_matching": loss.detach()}

    def figures(self, batch: EpisodeBatch) -> dict[str, bytes]:
        return self.adversary.figures(batch)


def MetaGAN(
    model: ModelFactory,
    task: TaskSpec,
    host: str = "maml",
    maml: dict[str, Any] | None = None,
    protonet: dict[str, Any] | None = None,
    figure_episodes: int = 4,
    **shared: Any,
) -> nn.Module:
    """The learner for ``algorithm.host``: its own keys from ``algorithm.<host>``, the
    adversary's (``fakes``, ``generator_steps``, ``noise_size``, ``generator_channels``) from
    ``algorithm``, and ``meta_batch_size`` from ``algorithm`` unless None (the host's)."""
    if host not in HOSTS:
        raise ConfigError("algorithm.host", f"must be one of {', '.join(HOSTS)}, got {host!r}")
    adversary = {k: shared.pop(k) for k in ADVERSARY_KEYS if k in shared}
    own = dict((maml if host == "maml" else protonet) or {})
    if shared.get("meta_batch_size") is None:  # the host's own
        shared.pop("meta_batch_size", None)
    learner = MetaGANMAML if host == "maml" else MetaGANProtoNet
    settings = {**own, **shared}  # the top-level meta_batch_size wins over the host's
    return learner(model, task, adversary=adversary, figure_episodes=figure_episodes, **settings)


__all__ = ["HOSTS", "MetaGAN", "MetaGANMAML", "MetaGANProtoNet"]
