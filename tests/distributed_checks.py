"""Every collective of the ``Runtime`` against values computed by hand, for a world of two
processes (gloo on the CPU): run under torchrun by ``tests/distributed_learners.py``, not
collected by pytest."""

from __future__ import annotations

import torch

from metarun import distributed
from metarun.errors import ConfigError
from metarun.hardware import Runtime


def refuse() -> None:
    raise ConfigError("resume", "no checkpoint there")


def check_collectives(runtime: Runtime) -> None:
    rank = runtime.rank
    assert runtime.world_size == 2 and runtime.is_main == (rank == 0)

    # Means in place over mixed shapes and dtypes (one buffer per dtype).
    grads = [torch.full((2, 3), float(rank)), torch.arange(3.0) + 2 * rank]
    wide = torch.tensor([1.0 + rank], dtype=torch.float64)
    runtime.all_reduce_mean_([*grads, wide])
    assert torch.equal(grads[0], torch.full((2, 3), 0.5))
    assert torch.equal(grads[1], torch.arange(3.0) + 1)
    assert wide.dtype == torch.float64 and wide.item() == 1.5

    # Shards: contiguous, balanced, in rank order.
    assert runtime.shard(5) == (slice(0, 2) if rank == 0 else slice(2, 5))
    scores = torch.arange(5.0) * 10
    assert torch.equal(runtime.concat_shards(scores[runtime.shard(5)], 5), scores)

    # any_rank: one rank's flag stops everyone.
    assert runtime.any_rank(rank == 1) is True
    assert runtime.any_rank(False) is False

    # Rank 0 decides; its failure reaches every rank.
    assert runtime.broadcast_object({"from": rank}) == {"from": 0}
    assert runtime.decide_on_main(lambda: f"rank {rank}") == "rank 0"
    try:
        runtime.decide_on_main(refuse)
        raise AssertionError("decide_on_main swallowed the failure")
    except distributed.RaisedOnMain as error:
        assert rank == 1 and "no checkpoint there" in str(error)
    except ConfigError as error:
        assert rank == 0 and error.key == "resume"

    runtime.check_same_everywhere([torch.ones(3), torch.zeros(2)], "weights")
    try:
        runtime.check_same_everywhere([torch.full((3,), float(rank))], "weights")
        raise AssertionError("different weights went unnoticed")
    except RuntimeError as error:
        assert "weights differ between processes" in str(error)

    print(f"rank {rank}: collectives ok", flush=True)
