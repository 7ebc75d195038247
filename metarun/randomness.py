"""Random numbers that are a function of a key, not of a generator's history.

A meta-batch is split across processes (``hardware=ddp``), across ``vmap`` lanes, and across
evaluation batches, and the promise is that none of this changes a result: task ``i`` of a
meta-batch must draw the same support order, mini-batches and DropBlock masks whether it is
computed alone, in a batch of 32 or on process 1 of 2. A stateful generator (torch's global one,
a ``torch.Generator``) cannot keep it: the k-th caller gets the k-th numbers, so the draws of a
task depend on who drew before it. A counter-based generator (Salmon et al. 2011, "Parallel
Random Numbers: As Easy as 1, 2, 3"; JAX's PRNG keys) can: the numbers are a hash of a key and a
position, so a task that carries its own key draws its own numbers wherever it runs.

Keys are int64 tensors holding 32-bit values (any shape: one key per task, ``[B]``). The trainer
gives every training task the key of its global index in the run (``task_keys``); evaluation
draws from one fixed key (``EVALUATION_KEY``), the same for every episode, so an episode's score
never depends on its batch. The hash is pure integer arithmetic (Wellons' ``lowbias32`` mixer,
its multiplications split into 16-bit halves so that no int64 product overflows), so it runs
under ``torch.func.vmap`` with a batched key, on any device, and gives the same numbers on a CPU
and a GPU.

Modules that draw inside a forward pass (ResNet-12's DropBlock) take their numbers from the
``NoiseSource`` that the learner opens around one task's computation (``drawing_from``); a draw
with none open is an error rather than a silent fall-back to the global generator.
"""

from __future__ import annotations

import contextlib
import math
import zlib
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

MASK32 = 0xFFFFFFFF
EVALUATION_KEY = 0x5EED0E7A
"""The key every evaluation episode draws from (Reptile's mini-batch order): one constant, so
``predict`` on a batch and ``adapt`` on one episode see the same numbers."""


def _mul32(x: Tensor, constant: int) -> Tensor:
    """``x * constant mod 2**32`` for ``x`` in ``[0, 2**32)``, without overflowing int64."""
    low, high = x & 0xFFFF, x >> 16
    return (low * constant + (((high * constant) & 0xFFFF) << 16)) & MASK32


def hash32(x: Tensor) -> Tensor:
    """Wellons' lowbias32: a bijective 32-bit mixer (values in ``[0, 2**32)``, int64)."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def as_key(value: int) -> Tensor:
    """A key tensor from an int of any size (both 32-bit halves are mixed in)."""
    low, high = value & MASK32, (value >> 32) & MASK32
    return hash32(torch.tensor(low, dtype=torch.int64) ^ hash32(torch.tensor(high + 0x9E3779B9)))


def fold(key: Tensor, data: int | Tensor) -> Tensor:
    """A new key from ``key`` and ``data`` (a stream number, a step, an index), broadcast."""
    data = torch.as_tensor(data, dtype=torch.int64, device=key.device)
    return hash32(key ^ hash32(data + 0x632BE5AB))


def stream(key: Tensor | None, name: str) -> Tensor | None:
    """The key of one named use of a task's randomness (``"support order"``, ``"encoder"``),
    so that two uses never share numbers; None for no key (evaluation)."""
    return None if key is None else fold(key, zlib.crc32(name.encode()))


def bits(key: Tensor, shape: Sequence[int]) -> Tensor:
    """``key.shape + shape`` random 32-bit integers (int64): a pure function of the key."""
    shape = tuple(int(s) for s in shape)
    counter = torch.arange(math.prod(shape), dtype=torch.int64, device=key.device).view(shape)
    lanes = key.reshape(*key.shape, *([1] * len(shape)))
    return hash32(hash32(counter ^ lanes) + lanes)


def uniform(key: Tensor, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
    """``key.shape + shape`` floats in ``[0, 1)`` with 24 random bits each."""
    return (bits(key, shape) >> 8).to(dtype) * (1.0 / (1 << 24))


def normal(key: Tensor, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
    """``key.shape + shape`` standard normal floats (Box-Muller on two uniform streams)."""
    u1 = 1.0 - uniform(fold(key, 0), shape, torch.float64)  # (0, 1]: the log is finite
    u2 = uniform(fold(key, 1), shape, torch.float64)
    return ((-2.0 * u1.log()).sqrt() * torch.cos(2 * math.pi * u2)).to(dtype)


def permutation(key: Tensor, length: int) -> Tensor:
    """``key.shape + (length,)``: a random order of ``0..length-1`` per key."""
    return bits(key, (length,)).argsort(dim=-1)


def task_keys(seed: int, step: int, count: int) -> Tensor:
    """The keys of meta-step ``step``'s ``count`` training tasks (``[count]``): a function of
    the run's seed and each task's global index ``(step - 1) * count + i``, and so the same
    whichever process computes the task, and after a resume."""
    first = (step - 1) * count
    return fold(as_key(seed), torch.arange(first, first + count, dtype=torch.int64))


class NoiseSource:
    """The numbers one task's computation draws, in order: the n-th draw gets ``fold(key, n)``,
    so the same program draws the same numbers from the same key (also when a checkpointed
    step is recomputed in backward, since the source is opened anew inside the step)."""

    def __init__(self, key: Tensor) -> None:
        self.key = key
        self.draws = 0

    def uniform(self, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
        key = fold(self.key, self.draws)
        self.draws += 1
        return uniform(key, shape, dtype)


_open: list[NoiseSource] = []


@contextlib.contextmanager
def drawing_from(key: Tensor | None) -> Iterator[None]:
    """Random draws inside the block (``current_noise``) come from ``key``; ``None`` opens
    nothing (evaluation, where nothing may draw)."""
    if key is None:
        yield
        return
    _open.append(NoiseSource(key))
    try:
        yield
    finally:
        _open.pop()


def current_noise() -> NoiseSource:
    """The innermost open ``NoiseSource``; an error if none is open."""
    if not _open:
        raise RuntimeError(
            "a module drew random numbers outside a task: the learner must open "
            "metarun.randomness.drawing_from(key) around each task's forward pass"
        )
    return _open[-1]


class Draws:
    """Marks a module that draws random numbers in training (``draws`` says whether it does
    with its settings), so a learner opens a ``NoiseSource`` only where one is needed."""

    draws: bool = True


def needs_noise(module: nn.Module) -> bool:
    """Whether any submodule draws random numbers in its forward pass."""
    return any(isinstance(m, Draws) and m.draws for m in module.modules())


def noise_for(module: nn.Module, key: Tensor | None) -> contextlib.AbstractContextManager:
    """``drawing_from(key)`` when ``module`` draws in training, else nothing: networks that
    draw nothing run exactly as before (``torch.compile`` sees no extra Python)."""
    if key is not None and module.training and needs_noise(module):
        return drawing_from(key)
    return contextlib.nullcontext()


def keys_for(module: nn.Module, keys: Tensor | None, name: str) -> Tensor | None:
    """The ``name`` stream of a meta-batch's keys when ``module`` draws in training, else None:
    decided once for a loop over the batch's episodes, each then ``drawing_from(keys[i])``."""
    if keys is None or not module.training or not needs_noise(module):
        return None
    return stream(keys, name)


__all__ = [
    "EVALUATION_KEY",
    "Draws",
    "NoiseSource",
    "as_key",
    "bits",
    "current_noise",
    "drawing_from",
    "fold",
    "hash32",
    "keys_for",
    "needs_noise",
    "noise_for",
    "normal",
    "permutation",
    "stream",
    "task_keys",
    "uniform",
]
