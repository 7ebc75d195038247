"""A tiny image data set made in memory, for tests that compose data sets (``dataset=multi``)
without files: ``classes`` classes of ``per_class`` random images per split, each pixel of
class ``c`` holding ``c`` (so an episode's images name their class)."""

from __future__ import annotations

from typing import Any

import torch

from metarun.data.episodes import ClassImages
from metarun.data.image_dataset import ImageDataset, Split
from metarun.data.images import ImageFormat


class TinyImages(ImageDataset):
    def __init__(
        self,
        classes: int = 8,
        per_class: int = 6,
        channels: int = 1,
        image_size: int = 8,
        **options: Any,
    ) -> None:
        super().__init__(ImageFormat(size=image_size, channels=channels), **options)
        self.count, self.per_class, self.channels = classes, per_class, channels

    def load_splits(self) -> dict[Split, ClassImages]:
        size = self.image_format.size
        splits = {}
        for number, split in enumerate(("train", "val", "test")):
            labels = torch.arange(self.count).repeat_interleave(self.per_class)
            images = (labels + 10 * number).to(torch.uint8)[:, None, None, None]
            images = images.expand(-1, self.channels, size, size).contiguous()
            names = [f"{split}{c}" for c in range(self.count)]
            counts = torch.full((self.count,), self.per_class)
            splits[split] = ClassImages(images, counts, names)
        return splits
