"""How raw images become model inputs, shared by the data cache and ``learner.preprocess``.

Both paths call the same two functions, so an image a user hands to a trained learner goes
through exactly the resizing and scaling the training data did.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor


@dataclass(frozen=True)
class ImageFormat:
    """Stored size and channels, and how stored uint8 pixels map to floats.

    ``invert`` turns dark-on-light drawings (Omniglot: black strokes on white) into bright
    strokes on a zero background, which is what conv nets with zero padding want.
    """

    size: int
    channels: int = 1
    invert: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def encode(self, image: Image.Image) -> Tensor:
        """A PIL image as the uint8 ``[C, H, W]`` tensor the cache stores."""
        mode = "L" if self.channels == 1 else "RGB"
        image = image.convert(mode)
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.LANCZOS)
        data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        return data.view(self.size, self.size, self.channels).permute(2, 0, 1).contiguous()

    def decode(self, pixels: Tensor) -> Tensor:
        """Stored uint8 pixels (any leading dims) as model-ready floats in [0, 1]."""
        x = pixels.to(torch.float32).div_(255.0)
        return x.neg_().add_(1.0) if self.invert else x
