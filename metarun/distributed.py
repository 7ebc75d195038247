"""Several processes training one learner (``hardware=ddp`` under ``torchrun``): the process
group and the few collectives a run needs.

Each process draws the same global meta-batch, adapts its own share of the tasks and averages
its meta-gradient with the others' (``all_reduce_mean_``), so every process applies the same
update and the learner stays identical everywhere without ``DistributedDataParallel`` (which
cannot wrap MAML's ``functional_call`` + ``vmap``). Rank 0 alone writes files; decisions that
depend on them (resume, the best checkpoint) are made there and broadcast (``decide_on_main``).

Every function here takes the world size and is a no-op (or the identity) in a world of one, so
a single-process run goes through the same code without touching ``torch.distributed``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from metarun.errors import MetarunError

T = TypeVar("T")

LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE")


class RaisedOnMain(MetarunError):
    """Rank 0 stopped with an error it reports itself; the other ranks stop quietly with this."""


def launched() -> bool:
    """Whether a launcher (``torchrun``, or anything that sets the ``env://`` variables)
    started this process as one rank of a group."""
    return all(name in os.environ for name in LAUNCH_VARIABLES)


def env_rank() -> int:
    """This process's rank from the launcher's environment; 0 when not launched."""
    return int(os.environ.get("RANK", "0"))


@dataclass(frozen=True)
class Placement:
    """Where this process sits: its rank among all, and on its machine (which GPU it takes)."""

    rank: int
    world_size: int
    local_rank: int

    @staticmethod
    def from_env() -> Placement:
        return Placement(
            int(os.environ["RANK"]),
            int(os.environ["WORLD_SIZE"]),
            int(os.environ.get("LOCAL_RANK", "0")),
        )


def init_process_group(backend: str, device: torch.device) -> None:
    """Join the group the launcher describes (``env://``); nothing if already joined."""
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)  # NCCL collectives and barriers use the current device
    dist.init_process_group(backend=backend, init_method="env://")


def shutdown() -> None:
    """Leave the process group, if this process joined one, once every rank has got here.

    For the end of a successful run only: after a failure another rank may be stuck in a
    collective and never arrive; exiting is enough then, torchrun stops the others.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean_(tensors: Sequence[Tensor], world_size: int) -> None:
    """Replace each tensor, in place, by its mean over all processes.

    Tensors are flattened into one buffer per (device, dtype), so a step costs one collective
    (usually) however many parameters the learner has.
    """
    if world_size == 1 or not tensors:
        return
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = defaultdict(list)
    for tensor in tensors:
        groups[(tensor.device, tensor.dtype)].append(tensor)
    for members in groups.values():
        flat = torch.cat([t.reshape(-1) for t in members])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world_size)
        offset = 0
        for tensor in members:
            tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
            offset += tensor.numel()


def concat_shards(local: Tensor, total: int, part: slice, world_size: int) -> Tensor:
    """The concatenation, in rank order, of every process's ``local`` rows, where this process
    holds rows ``part`` of ``total``. Each process contributes zeros outside its part, so the
    summing all-reduce is exact."""
    if world_size == 1:
        return local
    full = torch.zeros(total, *local.shape[1:], dtype=local.dtype, device=local.device)
    full[part] = local
    dist.all_reduce(full, op=dist.ReduceOp.SUM)
    return full


def any_rank(flag: bool, device: torch.device, world_size: int) -> bool:
    """True on every process when ``flag`` is true on at least one (e.g. a preemption signal
    that reached one process, so that all stop at the same step)."""
    if world_size == 1:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_object(value: T, world_size: int) -> T:
    """Rank 0's ``value`` on every process (any picklable object, tensors included)."""
    if world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()


def decide_on_main(decide: Callable[[], T], is_main: bool, world_size: int) -> T:
    """Run ``decide`` on rank 0 only and return its result on every process.

    For decisions that read the run directory (resume or not, from which checkpoint), which
    only rank 0 writes and which other machines may not even see. If ``decide`` fails, rank 0
    raises its error and every other rank raises ``RaisedOnMain``, so no rank waits forever
    for the others.
    """
    if world_size == 1:
        return decide()
    outcome: tuple[bool, Any] = (False, None)
    error: BaseException | None = None
    if is_main:
        try:
            outcome = (True, decide())
        except Exception as raised:
            error = raised
            outcome = (False, f"{type(raised).__name__}: {raised}")
    succeeded, payload = broadcast_object(outcome, world_size)
    if error is not None:
        raise error
    if not succeeded:
        raise RaisedOnMain(f"rank 0 stopped ({payload})")
    return payload


def check_same_everywhere(tensors: Sequence[Tensor], what: str, world_size: int) -> None:
    """Fail unless ``tensors`` hold the same values on every process (rank 0's are the
    reference): processes that start from different learners would silently train an average
    of several models."""
    if world_size == 1:
        return
    mine = torch.cat([t.detach().reshape(-1).double() for t in tensors])
    reference = mine.clone()
    dist.broadcast(reference, src=0)
    device = mine.device
    if any_rank(not torch.equal(mine, reference), device, world_size):
        raise RuntimeError(
            f"the {what} differ between processes at the start of training; every rank must "
            f"start from the same seed and checkpoint"
        )
