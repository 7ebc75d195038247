"""Backbones. Each takes ``(input_shape, out_features)`` first, so an algorithm can build the
head it needs (a classifier, or none for an embedding) from a model config that holds only
architecture choices."""

from metarun.models.conv4 import Conv4
from metarun.models.embedding import embed_episodes, embedding_size
from metarun.models.episode_norm import (
    EpisodeBatchNorm,
    one_running_update,
    use_episode_statistics,
)
from metarun.models.mlp import MLP
from metarun.models.norm import (
    BATCH_NORM_MODES,
    BatchStatsNorm,
    PerStepBatchNorm,
    StepIndexed,
    apply_batch_norm,
    use_batch_statistics,
)
from metarun.models.resnet12 import DropBlock, ResNet12

__all__ = [
    "BATCH_NORM_MODES",
    "MLP",
    "PerStepBatchNorm",
    "StepIndexed",
    "apply_batch_norm",
    "BatchStatsNorm",
    "DropBlock",
    "ResNet12",
    "Conv4",
    "EpisodeBatchNorm",
    "embed_episodes",
    "embedding_size",
    "one_running_update",
    "use_batch_statistics",
    "use_episode_statistics",
]
