"""Training augmentation on uint8 tensors: random crops of the zero-padded image and flips.

The random choices are part of an episode's plan (drawn by the trainer's generator with the
image indices), so augmented training is reproducible, resumes exactly from a checkpoint, and
is identical on every process of a multi-GPU run. Crops pad with zeros before decoding, as
torchvision's ``RandomCrop(size, padding)`` does on the raw image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from metarun.errors import ConfigError


@dataclass(frozen=True)
class Augmentation:
    """``flip``: mirror left-right with probability 1/2; ``crop_padding``: pad every side by
    this many pixels and crop back to the original size at a random offset."""

    flip: bool = False
    crop_padding: int = 0

    @staticmethod
    def from_config(value: object) -> Augmentation | None:
        """``dataset.augment``: null, or a mapping with ``flip`` and ``crop_padding``."""
        if value is None or value is False:
            return None
        if not hasattr(value, "items"):
            raise ConfigError(
                "dataset.augment",
                f"must be null or a mapping like {{flip: true, crop_padding: 8}}, got {value!r}",
            )
        options = dict(value.items())  # type: ignore[union-attr]
        unknown = set(options) - {"flip", "crop_padding"}
        if unknown:
            raise ConfigError(
                f"dataset.augment.{sorted(unknown)[0]}",
                "is not an augmentation; valid keys are flip and crop_padding",
            )
        padding = options.get("crop_padding", 0)
        if not isinstance(padding, int) or isinstance(padding, bool) or padding < 0:
            raise ConfigError(
                "dataset.augment.crop_padding", f"must be an integer >= 0, got {padding!r}"
            )
        augmentation = Augmentation(flip=bool(options.get("flip", False)), crop_padding=padding)
        return augmentation if augmentation.active else None

    @property
    def active(self) -> bool:
        return self.flip or self.crop_padding > 0

    def draw(self, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """Per-image choices ``[*shape, 3]``: flip (0/1), then the crop's row and column offset."""
        flips = torch.randint(0, 2 if self.flip else 1, shape, generator=generator)
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (*shape, 2), generator=generator)
        return torch.cat([flips[..., None], offsets], dim=-1)

    def apply(self, images: Tensor, choices: Tensor) -> Tensor:
        """``images`` ``[M, C, H, W]`` (any dtype) transformed by ``choices`` ``[M, 3]``."""
        choices = choices.to(images.device)
        if self.crop_padding:
            p = self.crop_padding
            m, _, h, w = images.shape
            padded = torch.nn.functional.pad(images, (p, p, p, p))
            rows = choices[:, 1, None] + torch.arange(h, device=images.device)  # [M, H]
            cols = choices[:, 2, None] + torch.arange(w, device=images.device)  # [M, W]
            batch = torch.arange(m, device=images.device)[:, None, None]
            # [M, H, W, C] -> [M, C, H, W]
            images = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
            images = images.permute(0, 3, 1, 2)
        if self.flip:
            flipped = choices[:, 0].bool().view(-1, 1, 1, 1)
            images = torch.where(flipped, images.flip(-1), images)
        return images.contiguous()


__all__ = ["Augmentation"]
