"""``hardware=auto|cpu|gpu|ddp``: where a run computes, in which precision, whether it is
compiled, and with how many processes.

``auto`` takes the GPU when one is visible.

Precision (``precision``), the policy:

* ``auto``: bf16 autocast on a GPU with native bf16 (compute capability 8.0+), and only for learners
  that declare it safe (``MetaLearner.autocast_safe``): ProtoNet and first-order gradient learners
  yes, second-order ones (MAML, and MAML++ once it turns second order) never, nor any other learner
  that declares itself unsafe; fp32 on a CPU.
* ``bf16``: what was asked for: bf16 autocast on any device (the CPU included) for every
  learner, second-order ones too, with one logged warning when a learner that is not
  ``autocast_safe`` runs under it.
* ``fp32``: never autocast.

What the policy rests on, and what it does not: it is a precaution, not a measured need. bf16
autocast moves every learner's gradient far beyond rounding error, gradient-based learners' the
most, since their inner-loop gradients are bf16 too. Measured with CPU autocast (Conv4 with 64
channels, 5-way 1-shot 28x28, 4 tasks, 3 seeds), which casts the same layers as a GPU's except one:
it has no kernel for the ``aten::convolution`` that vmap calls, so MAML's query-pass convolutions
stayed float32 there (``tests/test_hardware.py`` pins this), and a GPU, which casts them, likely
moves MAML's meta-gradient more. The relative error of the bf16 meta-gradient against fp32 is, first
/ second order, 0.18 / 0.23 with 1 inner step and 0.69 / 0.76 with 5 (ProtoNet's gradient: about
0.2). Both orders' errors grow with the inner steps (``tests/test_hardware.py`` pins the second
order's growth on a tiny net), and these figures do not separate the two orders: at a given step
count neither is consistently worse. Nor has any training run measured what either error does to the
accuracy a run reaches. So the line ``auto`` draws (first order autocast for speed, as ProtoNet is;
second order, MANN and Meta-LSTM in fp32) is a conservative choice for the learners with the most
arithmetic between the loss and the update, not one the error measurements demand. ``fp32`` is the
setting for exact reproduction; ``bf16`` for whoever wants the speed everywhere. Evaluation follows
the same rule.

Compilation (``compile: true``): ``Runtime.place`` compiles the learner's ``meta_loss`` and
``predict``, the two methods the trainer and evaluation call, with ``torch.compile`` (the
``compile_backend``, default ``inductor``, and ``compile_mode``). For the gradient-based
learners that is the whole functional inner loop, ``torch.func.grad`` and ``vmap`` included,
traced as one graph whose meta-gradient equals the eager one; for ProtoNet, the encoder and the
prototype distances. The first meta-step pays the compilation. ``algorithm.checkpoint_steps``
still works, but its recomputed steps fall outside the graph (dynamo cannot trace the side
effects of a reentrant checkpoint, and runs that part eagerly).

Conv weights take the memory format each learner declares fastest (``channels_last: auto``):
channels-last for ProtoNet (1.3-1.4x on a 2-core CPU), contiguous for vmapped MAML, whose grouped
convolutions are slower channels-last (0.76-0.92x); ``scripts/benchmarks/maml_protonet.py``
measures both.

``ddp`` is one process per GPU (or several on a CPU) under ``torchrun``: ``DistributedHardware``
joins the process group and the ``Runtime`` knows its rank and world size and offers the few
collectives the trainer needs (``metarun.distributed``). Every other option is a world of one,
where those collectives do nothing, so the trainer has one code path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import Tensor

from metarun import distributed
from metarun.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILED_METHODS = ("meta_loss", "predict")  # what the trainer and evaluation call
BACKENDS = ("auto", "nccl", "gloo")
TORCHRUN_HINT = "torchrun --nproc_per_node=<processes> --no-python metarun hardware=ddp ..."
T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Compiler:
    """``torch.compile`` settings; ``compile`` applies them to a learner."""

    backend: str = "inductor"
    mode: str = "default"

    def compile(self, learner: torch.nn.Module) -> None:
        """Replace the learner's ``meta_loss`` and ``predict`` by compiled versions, in place
        (once: a learner placed twice is not compiled twice)."""
        if getattr(learner, "_metarun_compiled", False):
            return
        mode = None if self.mode == "default" else self.mode
        log.info(
            "compiling %s.%s with torch.compile (backend %s, mode %s); the first call compiles",
            type(learner).__name__,
            "/".join(COMPILED_METHODS),
            self.backend,
            self.mode,
        )
        for name in COMPILED_METHODS:
            method = getattr(learner, name)
            setattr(learner, name, torch.compile(method, backend=self.backend, mode=mode))
        learner._metarun_compiled = True


@dataclass(frozen=True)
class Runtime:
    """Where this process computes, and which of how many processes it is (rank 0 of 1 unless
    ``hardware=ddp``). The collectives below do nothing in a world of one."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool | str = "auto"
    rank: int = 0
    world_size: int = 1
    force_autocast: bool = False
    """``precision: bf16``: autocast learners that are not ``autocast_safe`` too."""
    compiler: Compiler | None = None
    _warned: set[str] = field(default_factory=set, compare=False, repr=False)

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
        for it (its ``memory_format`` attribute) unless ``channels_last`` forces one, and
        compile it when ``hardware.compile`` is on."""
        module.to(self.device)
        if self.channels_last == "auto":
            memory_format = getattr(module, "memory_format", torch.contiguous_format)
        else:
            memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        module.to(memory_format=memory_format)
        if self.compiler is not None:
            self.compiler.compile(module)
        return module

    def autocasts(self, safe: bool) -> bool:
        """Whether a learner whose ``autocast_safe`` is ``safe`` runs under autocast (the
        precision policy in the module docstring)."""
        if self.autocast_dtype is None:
            return False
        if not safe and self.force_autocast and "unsafe" not in self._warned:
            self._warned.add("unsafe")
            log.warning(
                "hardware.precision=bf16 autocasts a learner that declares bf16 unsafe (e.g. "
                "second-order MAML, whose bf16 meta-gradient is off by tens of percent, more "
                "with more inner steps); hardware.precision=auto keeps it in fp32"
            )
        return safe or self.force_autocast

    @contextlib.contextmanager
    def autocast(self, safe: bool) -> Iterator[None]:
        """bf16 autocast for a learner whose ``autocast_safe`` is ``safe``, if the policy
        allows it; nothing otherwise."""
        if self.autocasts(safe):
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
    compile: bool = False
    compile_backend: str = "inductor"
    compile_mode: str = "default"

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
        compiler = self._compiler()
        if self.threads is not None:
            if self.threads < 1:
                raise ConfigError("hardware.threads", f"must be null or >= 1, got {self.threads}")
            torch.set_num_threads(self.threads)
        torch.set_float32_matmul_precision(self.matmul_precision)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        return Runtime(
            device,
            self._autocast_dtype(device),
            self.channels_last,
            force_autocast=self.precision == "bf16",
            compiler=compiler,
        )

    def _compiler(self) -> Compiler | None:
        if self.compile not in (True, False):
            raise ConfigError("hardware.compile", f"must be true or false, got {self.compile!r}")
        backends = torch._dynamo.list_backends(exclude_tags=())
        if self.compile_backend not in backends:
            raise ConfigError(
                "hardware.compile_backend",
                f"must be a torch.compile backend (inductor, aot_eager, eager, ...: "
                f"torch._dynamo.list_backends()), got {self.compile_backend!r}",
            )
        if self.compile_mode not in COMPILE_MODES:
            raise ConfigError(
                "hardware.compile_mode",
                f"must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}",
            )
        if self.compile_mode != "default" and self.compile_backend != "inductor":
            raise ConfigError(
                "hardware.compile_mode",
                f"{self.compile_mode} is an inductor mode; use compile_mode=default with "
                f"compile_backend={self.compile_backend}",
            )
        return Compiler(self.compile_backend, self.compile_mode) if self.compile else None

    def _device(self) -> torch.device:
        if self.device == "auto":
            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
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
        if device.type == "cuda" and device.index is None:
            # With its index, so that it compares equal to the device tensors report (cuda:0).
            device = torch.device("cuda", torch.cuda.current_device())
        return device

    def _autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        if self.precision == "fp32":
            return None
        if self.precision == "bf16":
            return torch.bfloat16
        # Native bf16 only (compute capability 8.0 and up): emulated bf16 is slower than fp32.
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported(
            including_emulation=False
        )
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
