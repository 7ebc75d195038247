"""How raw images become model inputs, shared by the data cache and ``learner.preprocess``.

Both paths call the same functions, so an image a user hands to a trained learner goes through
exactly the resizing, scaling and normalisation the training data did.
"""

from __future__ import annotations

from collections.abc import Sequence
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
        """Stored uint8 pixels (any leading dims) as floats in [0, 1]."""
        x = pixels.to(torch.float32).div_(255.0)
        return x.neg_().add_(1.0) if self.invert else x


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation of decoded pixels, measured on training data."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @staticmethod
    def measure(pixels: Tensor, image_format: ImageFormat, chunk: int = 4096) -> Normalization:
        """Mean and std per channel of ``image_format.decode(pixels)``, in chunks so a large
        data set never needs a float copy of itself."""
        channels = pixels.shape[1]
        total = torch.zeros(channels, dtype=torch.float64)
        squares = torch.zeros(channels, dtype=torch.float64)
        for start in range(0, len(pixels), chunk):
            x = image_format.decode(pixels[start : start + chunk]).to(torch.float64)
            total += x.sum(dim=(0, 2, 3))
            squares += (x * x).sum(dim=(0, 2, 3))
        count = pixels.numel() / channels
        mean = total / count
        std = (squares / count - mean * mean).clamp_min(1e-12).sqrt()
        return Normalization(tuple(mean.tolist()), tuple(std.tolist()))

    @staticmethod
    def of(
        mean: Sequence[float] | float, std: Sequence[float] | float, channels: int
    ) -> Normalization:
        """From config values: one number (every channel) or one per channel."""
        mean = [float(mean)] * channels if isinstance(mean, int | float) else list(mean)
        std = [float(std)] * channels if isinstance(std, int | float) else list(std)
        return Normalization(tuple(float(m) for m in mean), tuple(float(s) for s in std))


class Decoder:
    """Stored uint8 pixels to model inputs: scaled, inverted if asked, then normalised."""

    def __init__(self, image_format: ImageFormat, normalization: Normalization | None) -> None:
        self.image_format = image_format
        self.normalization = normalization
        self._constants: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def __call__(self, pixels: Tensor) -> Tensor:
        x = self.image_format.decode(pixels)
        if self.normalization is None:
            return x
        if x.device not in self._constants:
            shape = (-1, 1, 1)
            mean = torch.tensor(self.normalization.mean, device=x.device).view(shape)
            std = torch.tensor(self.normalization.std, device=x.device).view(shape)
            self._constants[x.device] = (mean, std)
        mean, std = self._constants[x.device]
        return x.sub_(mean).div_(std)


__all__ = ["Decoder", "ImageFormat", "Normalization"]
