"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales 2018, CVPR, "Learning to
Compare: Relation Network for Few-Shot Learning").

An embedding module f turns every image into a feature map; a class is represented by the
element-wise sum of its support images' maps; a relation module g takes a (class map, query
map) pair concatenated along channels and returns a relation score in (0, 1). Training regresses
the scores onto one-hot targets with a mean squared error (1 for the query's class, 0 for the
others): the metric itself is learned. Adapting to a new task is summing support maps, with no
gradient steps; the prediction is the class with the highest score.

Paper defaults (and the authors' code, github.com/floodsung/LearningToCompare_FSL): f is four
[3x3 conv with 64 filters, BatchNorm, ReLU] blocks, max-pooling after the first two only; in the
code those two are unpadded and the last two padded (28x28 Omniglot -> 64x5x5 maps, 84x84
miniImageNet -> 64x19x19): ``model.pool_blocks=2 model.padding=[0,0,1,1] model.flatten=false``,
set by ``configs/algorithm/relationnet.yaml``. g is two [3x3 conv with 64 filters, BatchNorm,
ReLU, 2x2 max-pool] blocks, then FC 8 + ReLU and FC 1 + sigmoid; its convolutions are padded for
Omniglot (code) and unpadded for miniImageNet (``relation_padding``). Training episodes have the
test's ways and shots, with 19 / 15 / 10 / 5 queries per class for Omniglot 5-way 1-shot /
5-way 5-shot / 20-way 1-shot / 20-way 5-shot and 15 / 10 for miniImageNet 5-way 1- / 5-shot;
one episode per update; Adam 1e-3 halved every 100,000 episodes.

Departures, and why:

* BatchNorm. The authors' code uses ``momentum=1`` and never switches to eval mode, so its test
  scores use each test batch's statistics, and it embeds support and query images in separate
  calls. Here, as in ProtoNet, an episode's support and query images share one encoder pass,
  each training episode is normalised with its own statistics (``EpisodeBatchNorm``, one
  running update per meta-batch), and evaluation uses the running statistics, so an episode's
  scores never depend on the episodes that share its batch.
* The code's custom initialisation (He-normal convolutions, N(0, 0.01) linear weights with bias
  1) and its per-module gradient-norm clipping at 0.5 are not in the paper and not used here
  (``trainer.grad_clip`` clips the global norm if wanted).

Speed: g's first convolution is linear in its input, so conv(cat[class, query]) is computed as
conv_class(class) + conv_query(query): N + N*Q convolutions per episode instead of N*N*Q, with
the same result (``RelationModule.compare``; ``forward`` takes concatenated pairs). The pairs of
all episodes x queries x classes go through the rest of g in one pass (one per episode in
training, for the per-episode statistics).
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
from metarun.models import one_running_update, use_episode_statistics
from metarun.models.conv4 import conv_block
from metarun.randomness import drawing_from, keys_for


class RelationModule(nn.Module):
    """g: two conv blocks with max-pooling, FC + ReLU, FC + sigmoid; maps a concatenated pair
    ``[n, 2C, H, W]`` to relation scores ``[n]`` in (0, 1)."""

    def __init__(
        self, map_shape: tuple[int, int, int], channels: int, hidden: int, padding: int
    ) -> None:
        super().__init__()
        in_channels, height, width = map_shape
        self.in_channels = in_channels
        self.blocks = nn.Sequential(
            conv_block(2 * in_channels, channels, padding=padding),
            conv_block(channels, channels, padding=padding),
        )
        for _ in range(2):
            height, width = (height + 2 * padding - 2) // 2, (width + 2 * padding - 2) // 2
        if height < 1 or width < 1:
            raise ConfigError(
                "algorithm.relation_padding",
                f"feature maps of {map_shape[1]}x{map_shape[2]} vanish in the relation module "
                f"with padding {padding}; use 1",
            )
        self.fc = nn.Linear(channels * height * width, hidden)
        self.out = nn.Linear(hidden, 1)

    def _head(self, first_conv: Tensor) -> Tensor:
        """Everything after the first convolution's output, for ``[n, channels, H, W]``."""
        first = self.blocks[0]
        z = first[1:](first_conv)  # BatchNorm, ReLU, max-pool
        z = self.blocks[1](z).flatten(1)
        return torch.sigmoid(self.out(F.relu(self.fc(z)))).squeeze(-1)

    def forward(self, pairs: Tensor) -> Tensor:
        return self._head(self.blocks[0][0](pairs))

    def compare(self, classes: Tensor, queries: Tensor) -> Tensor:
        """Scores ``[..., M, N]`` of every query map ``[..., M, C, H, W]`` against every class
        map ``[..., N, C, H, W]``: ``forward(cat([class, query]))`` for each pair, with the first
        convolution split into its class and query halves."""
        conv = self.blocks[0][0]
        c = self.in_channels
        lead, n, m = classes.shape[:-4], classes.shape[-4], queries.shape[-4]
        on_classes = F.conv2d(classes.flatten(0, -4), conv.weight[:, :c], None, 1, conv.padding)
        on_queries = F.conv2d(
            queries.flatten(0, -4), conv.weight[:, c:], conv.bias, 1, conv.padding
        )
        on_classes = on_classes.view(*lead, 1, n, *on_classes.shape[1:])
        on_queries = on_queries.view(*lead, m, 1, *on_queries.shape[1:])
        first_conv = (on_classes + on_queries).flatten(0, -4)  # [... * M * N, channels, h, w]
        return self._head(first_conv).view(*lead, m, n)


def class_maps(support: Tensor, support_y: Tensor, ways: int) -> Tensor:
    """Each class's representation: the element-wise sum of its support maps.
    ``support`` is ``[B, S, C, H, W]`` with labels ``[B, S]``; returns ``[B, N, C, H, W]``."""
    one_hot = F.one_hot(support_y, ways).to(support.dtype)  # [B, S, N]
    summed = one_hot.transpose(1, 2) @ support.flatten(2)  # [B, N, C*H*W]
    return summed.view(*summed.shape[:2], *support.shape[2:])


class RelationNet(nn.Module):
    autocast_safe = True
    # Plain convolutions, as in ProtoNet: channels-last is the faster layout on a CPU.
    memory_format = torch.channels_last

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        meta_batch_size: int = 1,
        train_ways: int | None = None,
        train_queries: int | None = 19,
        relation_channels: int | None = None,
        relation_hidden: int = 8,
        relation_padding: int = 1,
    ) -> None:
        super().__init__()
        require_classification(task, "relationnet")
        for key, value, least in (
            ("meta_batch_size", meta_batch_size, 1),
            ("relation_hidden", relation_hidden, 1),
            ("relation_padding", relation_padding, 0),
        ):
            if value < least:
                raise ConfigError(f"algorithm.{key}", f"must be at least {least}, got {value}")
        if relation_channels is not None and relation_channels < 1:
            raise ConfigError(
                "algorithm.relation_channels",
                f"must be at least 1, or null for the encoder's channels; got {relation_channels}",
            )
        self.task = task
        try:
            self.encoder = model(task.input_shape, None)
        except TypeError as error:  # the YAML's feature-map keys on another backbone
            raise ConfigError(
                "model",
                f"relationnet compares feature maps, which this encoder cannot be asked to keep "
                f"({error}); use model=conv4 (configs/algorithm/relationnet.yaml sets its "
                f"feature-map keys)",
            ) from None
        map_shape = self._map_shape()
        self.relation = RelationModule(
            map_shape, relation_channels or map_shape[0], relation_hidden, relation_padding
        )
        use_episode_statistics(self)
        self.meta_batch_size = meta_batch_size
        self.train_ways = train_ways
        self.train_queries = train_queries

    @torch.no_grad()
    def _map_shape(self) -> tuple[int, int, int]:
        """The encoder's feature-map shape, from one blank image in eval mode (which leaves
        BatchNorm's running statistics alone)."""
        self.encoder.eval()
        out = self.encoder(torch.zeros(1, *self.task.input_shape))
        self.encoder.train()
        if out.dim() != 4:
            raise ConfigError(
                "model",
                "relationnet compares feature maps, so the encoder must return [n, C, H, W]; "
                "use model=conv4 with model.flatten=false (configs/algorithm/relationnet.yaml)",
            )
        return tuple(out.shape[1:])

    def training_episodes(self, evaluation: EpisodeSpec) -> EpisodeSpec:
        return evaluation.replace(ways=self.train_ways, queries=self.train_queries)

    def _embed(self, images: Tensor) -> Tensor:
        """Maps ``[B, n, C, H, W]`` of episodes' images ``[B, n, ...]``."""
        maps = self.encoder(images.flatten(0, 1))
        return maps.view(*images.shape[:2], *maps.shape[1:])

    def _episode_scores(self, batch: EpisodeBatch) -> Tensor:
        """Scores ``[B, N*Q, N]`` with the current BatchNorm mode, all episodes in one pass."""
        s = batch.support_y.shape[1]
        maps = self._embed(torch.cat([batch.support_x, batch.query_x], dim=1))
        classes = class_maps(maps[:, :s], batch.support_y, batch.ways)
        return self.relation.compare(classes, maps[:, s:])

    def _scores(self, batch: EpisodeBatch) -> Tensor:
        """In training, one pass per episode, so BatchNorm normalises each episode with its own
        statistics; in eval (running statistics), one pass for the whole batch."""
        if not self.training:
            return self._episode_scores(batch)
        keys = keys_for(self.encoder, batch.keys, "encoder")
        scores = []
        with one_running_update(self):
            for i in range(len(batch)):
                with drawing_from(None if keys is None else keys[i]):
                    scores.append(self._episode_scores(batch.select(slice(i, i + 1))))
        return torch.cat(scores)

    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        scores = self._scores(batch)
        targets = F.one_hot(batch.query_y, batch.ways).to(torch.float32)
        loss = F.mse_loss(scores.float(), targets)
        accuracy = self.task.score(scores.detach(), batch.query_y).mean()
        return loss, {"loss": loss.detach(), "acc": accuracy}

    def predict(self, batch: EpisodeBatch) -> Tensor:
        return self._scores(batch)

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        ways = int(support_y.max()) + 1
        classes = class_maps(self.encoder(support_x).detach()[None], support_y[None], ways)

        def classify(query_x: Tensor) -> Tensor:
            return self.relation.compare(classes, self.encoder(query_x)[None])[0]

        return classify
