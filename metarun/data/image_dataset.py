"""What every class-indexed image data set shares: splits decoded once, normalisation,
training augmentation, within-group episodes and where the images live.

A data set module only says how to read its files into ``ClassImages`` per split
(``load_splits``); this base turns them into samplers. Constructing a data set reads nothing, so
a trained learner can be rebuilt from its config (``metarun.load``) without the data: the
normalisation measured on the training split travels in the checkpoint (``state_dict``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor

from metarun.data.augment import Augmentation
from metarun.data.episodes import ClassImages, EpisodeSampler, EpisodeSpec
from metarun.data.images import Decoder, ImageFormat, Normalization
from metarun.data.task import TaskSpec
from metarun.data.variable_shape import VariableShape
from metarun.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
PLACEMENTS = ("auto", "device", "host")
# Normalisation is measured on at most this many training images, spread evenly.
MEASURED_IMAGES = 20_000


class ImageDataset:
    """Base of the image data sets. Subclasses implement ``load_splits``."""

    def __init__(
        self,
        image_format: ImageFormat,
        ways: int = 5,
        shots: int = 1,
        queries: int = 15,
        cache_dir: str | None = None,
        normalize: bool = True,
        mean: Any = None,
        std: Any = None,
        augment: Any = None,
        within_group: bool = False,
        placement: str = "auto",
        variable: Any = None,
    ) -> None:
        if image_format.size < 1:
            raise ConfigError("dataset.image_size", f"must be positive, got {image_format.size}")
        if placement not in PLACEMENTS:
            raise ConfigError(
                "dataset.placement", f"must be one of {', '.join(PLACEMENTS)}, got {placement!r}"
            )
        if (mean is None) != (std is None):
            raise ConfigError(
                "dataset.mean" if mean is None else "dataset.std",
                "set both dataset.mean and dataset.std, or neither (measured on the training "
                "split)",
            )
        self.image_format = image_format
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.episodes = EpisodeSpec(ways=ways, shots=shots, queries=queries)
        self.variable = VariableShape.of(variable)
        if self.variable is not None and augment:
            raise ConfigError(
                "dataset.augment", "is not available with variable episodes; set it to null"
            )
        # Variable episodes: a learner with a head gives max_ways outputs, an episode reads its
        # first ways of them (Meta-Dataset's learners slice their logits the same way).
        outputs = ways if self.variable is None else self.variable.max_ways
        self.task = TaskSpec("classification", image_format.shape, outputs)
        self.normalize = normalize
        self._normalization = (
            Normalization.of(mean, std, image_format.channels) if mean is not None else None
        )
        if self._normalization is not None and min(self._normalization.std) <= 0.0:
            raise ConfigError("dataset.std", f"must be positive, got {std!r}")
        self.augmentation = Augmentation.from_config(augment)
        self.within_group = within_group
        self.placement = placement
        self._splits: dict[Split, ClassImages] | None = None

    def load_splits(self) -> dict[Split, ClassImages]:
        """Every split's classes, decoded (from the cache when it is current)."""
        raise NotImplementedError

    def classes(self, split: Split) -> ClassImages:
        if self._splits is None:
            splits = self.load_splits()
            for name, classes in splits.items():
                if classes.num_classes == 0:
                    raise DataError(f"the {name} split of {type(self).__name__} has no classes")
            self._splits = splits
        return self._splits[split]

    def class_count(self, split: Split) -> int:
        """How many classes ``split`` has (a Baseline's pre-training head)."""
        return self.classes(split).num_classes

    @property
    def normalization(self) -> Normalization | None:
        """The configured statistics, else those of the training split (measured once)."""
        if not self.normalize:
            return None
        if self._normalization is None:
            train = self.classes("train").images
            step = max(1, len(train) // MEASURED_IMAGES)
            self._normalization = Normalization.measure(train[::step], self.image_format)
            log.info(
                "normalising with the training split's mean %s and std %s",
                _rounded(self._normalization.mean),
                _rounded(self._normalization.std),
            )
        return self._normalization

    @property
    def decoder(self) -> Decoder:
        return Decoder(self.image_format, self.normalization)

    def sampler(
        self,
        split: Split,
        spec: EpisodeSpec,
        keys: tuple[str, str, str] = ("dataset.ways", "dataset.shots", "dataset.queries"),
    ) -> EpisodeSampler:
        return EpisodeSampler(
            self.classes(split),
            spec,
            self.decoder,
            split,
            keys,
            augmentation=self.augmentation if split == "train" else None,
            within_group=self.within_group,
            variable=self.variable,
        )

    def place(self, sampler: EpisodeSampler, device: torch.device) -> EpisodeSampler:
        return sampler.to(device, keep_on_host=keeps_on_host(self.placement, sampler, device))

    def preprocess(self, image: Image.Image) -> Tensor:
        """A raw image as the float ``[C, H, W]`` tensor the model was trained on."""
        return self.decoder(self.image_format.encode(image))

    def state_dict(self) -> dict[str, Any]:
        """What a trained learner needs from the data besides the config."""
        norm = self.normalization
        return {"normalization": None if norm is None else [list(norm.mean), list(norm.std)]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("normalization") is not None and self.normalize:
            mean, std = state["normalization"]
            self._normalization = Normalization(tuple(mean), tuple(std))


def keeps_on_host(placement: str, sampler: EpisodeSampler, device: torch.device) -> bool:
    """Images go on the accelerator when they fit (``auto``: a quarter of its memory), else
    stay in host memory, gathered per episode into pinned buffers."""
    if placement == "auto" and device.type == "cuda":
        return sampler.nbytes > torch.cuda.get_device_properties(device).total_memory // 4
    return placement == "host"


def _rounded(values: tuple[float, ...]) -> list[float]:
    return [round(v, 4) for v in values]


__all__ = ["SPLITS", "ImageDataset", "Split"]
