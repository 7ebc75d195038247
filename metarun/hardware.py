"""``hardware=auto|cpu|gpu|ddp``: where a run computes, in which precision, and with how many
processes.

``auto`` takes the GPU when one is visible. Mixed precision is bf16 autocast on a GPU that
supports it, applied only to learners that declare it safe (``MetaLearner.autocast_safe``):
ProtoNet and first-order MAML yes, second-order MAML no, because the Hessian-vector products of
its meta-gradient lose their small terms in bf16. Evaluation follows the same rule.

Conv weights take the memory format each learner declares fastest (``channels_last: auto``):
channels-last for ProtoNet (1.3-1.4x on a 2-core CPU), contiguous for vmapped MAML, whose grouped
convolutions are slower channels-last (0.76-0.92x); ``scripts/benchmark.py`` measures both.

``ddp`` is one process per GPU (or several on a CPU) under ``torchrun``: ``DistributedHardware``
joins the process group and the ``Runtime`` knows its rank and world size and offers the few
collectives the trainer needs (``metarun.distributed``). Every other option is a world of one,
where those collectives do nothing, so the trainer has one code path.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from metarun import distributed
from metarun.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
BACKENDS = ("auto", "nccl", "gloo")
TORCHRUN_HINT = "torchrun --nproc_per_node=<processes> --no-python metarun hardware=ddp ..."
T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    """Where this process computes, and which of how many processes it is (rank 0 of 1 unless
    ``hardware=ddp``). The collectives below do nothing in a world of one."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool | str = "auto"
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, checkpoints and writes the summary."""
        return self.rank == 0

    def shard(self, count: int) -> slice:
        """This process's contiguous share of ``count`` items (balanced; all in a world of 1)."""
        rank, size = self.rank, self.world_size
        return slice(count * rank // size, count * (rank + 1) // size)

    def all_reduce_mean_(self, tensors: Sequence[Tensor]) -> None:
        """Average tensors (gradients, metrics) over all processes, in place, in one buffer."""
        distributed.all_reduce_mean_(tensors, self.world_size)

    def concat_shards(self, local: Tensor, total: int) -> Tensor:
        """Every process's ``local`` rows (its ``shard(total)``), concatenated in rank order."""
        return distributed.concat_shards(local, total, self.shard(total), self.world_size)

    def any_rank(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any: to stop all at the same step."""
        return distributed.any_rank(flag, self.device, self.world_size)

    def broadcast_object(self, value: T) -> T:
        """Rank 0's ``value`` on every process."""
        return distributed.broadcast_object(value, self.world_size)

    def decide_on_main(self, decide: Callable[[], T]) -> T:
        """``decide()`` run on rank 0 only, its result (or failure) on every process."""
        return distributed.decide_on_main(decide, self.is_main, self.world_size)

    def check_same_everywhere(self, tensors: Sequence[Tensor], what: str) -> None:
        distributed.check_same_everywhere(tensors, what, self.world_size)

    def barrier(self) -> None:
        distributed.barrier(self.world_size)

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block before the others (e.g. downloads and caches data once)."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

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


@dataclass
class DistributedHardware(Hardware):
    """``hardware=ddp``: this process is one rank of a group that ``torchrun`` started.

    ``device: auto`` takes ``cuda:$LOCAL_RANK`` when GPUs are visible, else the CPU; ``cuda``
    also means ``cuda:$LOCAL_RANK``. ``backend: auto`` is NCCL on GPUs and Gloo on CPUs.
    """

    backend: str = "auto"

    def setup(self) -> Runtime:
        # Joining first makes cuda:LOCAL_RANK the current device before anything touches CUDA,
        # which would otherwise open a context on GPU 0 in every process.
        self.init_process_group()
        runtime = super().setup()  # the shared settings; the device through _device()
        place = distributed.Placement.from_env()
        return dataclasses.replace(runtime, rank=place.rank, world_size=place.world_size)

    def init_process_group(self, device: torch.device | None = None) -> None:
        """Join the launcher's process group (the CLI does this before Hydra starts, so all
        ranks can agree on one run directory); nothing if already joined."""
        device = device or self._device()
        distributed.init_process_group(self._backend(device), device)

    def _device(self) -> torch.device:
        if not distributed.launched():
            raise ConfigError(
                "hardware", f"ddp needs one process per GPU, started by torchrun: {TORCHRUN_HINT}"
            )
        local_rank = distributed.Placement.from_env().local_rank
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(
                "hardware.device",
                f"must be auto, cpu or cuda with hardware=ddp (each rank takes cuda:LOCAL_RANK), "
                f"got {self.device!r}",
            )
        if self.device == "cpu" or (self.device == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        visible = torch.cuda.device_count()
        if visible == 0:
            raise ConfigError(
                "hardware.device", "asks for GPUs but PyTorch sees none; use hardware.device=cpu"
            )
        if local_rank >= visible:
            raise ConfigError(
                "hardware.device",
                f"local rank {local_rank} needs cuda:{local_rank} but {visible} GPUs are "
                f"visible; start at most {visible} processes per node (--nproc_per_node)",
            )
        return torch.device("cuda", local_rank)

    def _backend(self, device: torch.device) -> str:
        if self.backend not in BACKENDS:
            raise ConfigError(
                "hardware.backend", f"must be one of {', '.join(BACKENDS)}, got {self.backend!r}"
            )
        if self.backend == "nccl" and device.type != "cuda":
            raise ConfigError("hardware.backend", "nccl needs GPUs; use gloo (or auto) on a CPU")
        if self.backend != "auto":
            return self.backend
        return "nccl" if device.type == "cuda" else "gloo"
