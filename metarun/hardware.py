"""``hardware=auto|cpu|gpu``: where a run computes and in which precision.

``auto`` takes the GPU when one is visible. Mixed precision is bf16 autocast on a GPU that
supports it, applied only to learners that declare it safe (``MetaLearner.autocast_safe``):
ProtoNet and first-order MAML yes, second-order MAML no, because the Hessian-vector products of
its meta-gradient lose their small terms in bf16. Evaluation follows the same rule.

Conv weights take the memory format each learner declares fastest (``channels_last: auto``):
channels-last for ProtoNet (1.3-1.4x on a 2-core CPU), contiguous for vmapped MAML, whose grouped
convolutions are slower channels-last (0.76-0.92x); ``scripts/benchmark.py`` measures both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from metarun.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool | str = "auto"

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """Move a learner to the device, its conv weights in the memory format that is fastest
        for it (its ``memory_format`` attribute) unless ``channels_last`` forces one."""
        module.to(self.device)
        if self.channels_last == "auto":
            memory_format = getattr(module, "memory_format", torch.contiguous_format)
        else:
            memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return module.to(memory_format=memory_format)

    @contextlib.contextmanager
    def autocast(self, allowed: bool) -> Iterator[None]:
        if allowed and self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                yield
        else:
            yield


@dataclass
class Hardware:
    device: str = "auto"
    precision: str = "auto"
    cudnn_benchmark: bool = True
    matmul_precision: str = "high"
    channels_last: bool | str = "auto"
    threads: int | None = None

    def setup(self) -> Runtime:
        device = self._device()
        if self.precision not in PRECISIONS:
            choices = ", ".join(PRECISIONS)
            raise ConfigError(
                "hardware.precision", f"must be one of {choices}, got {self.precision!r}"
            )
        if self.channels_last not in ("auto", True, False):
            raise ConfigError(
                "hardware.channels_last", f"must be auto, true or false, got {self.channels_last!r}"
            )
        if self.threads is not None:
            if self.threads < 1:
                raise ConfigError("hardware.threads", f"must be null or >= 1, got {self.threads}")
            torch.set_num_threads(self.threads)
        torch.set_float32_matmul_precision(self.matmul_precision)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        return Runtime(device, self._autocast_dtype(device), self.channels_last)

    def _device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise ConfigError(
                "hardware.device", f"must be auto, cpu, cuda or cuda:N, got {self.device!r}"
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "hardware.device", "asks for a GPU but PyTorch sees none; use hardware=auto or cpu"
            )
        return device

    def _autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        if self.precision == "fp32":
            return None
        if self.precision == "bf16":
            return torch.bfloat16
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
