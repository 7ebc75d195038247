"""Counter-based random numbers: a pure function of the key, the same under vmap, in any batch
and (checked when a GPU is there) on any device; the hash against a plain-Python reference."""

from __future__ import annotations

import pytest
import torch

from metarun import randomness
from metarun.randomness import (
    as_key,
    bits,
    fold,
    hash32,
    normal,
    permutation,
    stream,
    task_keys,
    uniform,
)


def lowbias32(x: int) -> int:
    """Wellons' lowbias32 in Python's unbounded integers, reduced mod 2**32 by hand."""
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_the_hash_is_lowbias32_without_int64_overflow() -> None:
    values = [0, 1, 2, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, 0xFFFFFFFF]
    got = hash32(torch.tensor(values, dtype=torch.int64)).tolist()
    assert got == [lowbias32(v) for v in values]
    assert lowbias32(1) != 1 and len(set(got)) == len(values)


def test_draws_are_a_function_of_the_key_alone() -> None:
    keys = task_keys(seed=3, step=5, count=6)
    assert torch.equal(keys, task_keys(3, 5, 6))
    # Task i of step 5 is global task 4 * 6 + i, whatever the meta-batch is cut into.
    assert torch.equal(task_keys(3, 9, 3)[:3], keys[:3])  # (9 - 1) * 3 = 24 = (5 - 1) * 6
    assert not torch.equal(task_keys(4, 5, 6), keys)  # another seed, other tasks
    drawn = uniform(keys, (7,))
    assert drawn.shape == (6, 7) and drawn.dtype == torch.float32
    assert torch.equal(uniform(keys[4:5], (7,))[0], drawn[4])
    assert torch.equal(uniform(keys.flip(0), (7,)).flip(0), drawn)
    # Under vmap, with torch's generators forbidden, a lane draws what its key draws.
    lanes = torch.func.vmap(lambda key: uniform(key, (7,)), randomness="error")(keys)
    assert torch.equal(lanes, drawn)


def test_streams_and_folds_separate_uses() -> None:
    key = as_key(0)
    assert not torch.equal(uniform(stream(key, "a"), (5,)), uniform(stream(key, "b"), (5,)))
    assert not torch.equal(uniform(fold(key, 0), (5,)), uniform(fold(key, 1), (5,)))
    assert stream(None, "a") is None
    # Large seeds keep both halves: seeds that differ only above bit 32 differ.
    assert as_key(1) != as_key(1 + (1 << 32))


def test_the_numbers_look_like_what_they_claim() -> None:
    u = uniform(as_key(1), (200_000,))
    assert 0 <= u.min() and u.max() < 1
    assert u.mean().item() == pytest.approx(0.5, abs=0.005)
    assert u.var().item() == pytest.approx(1 / 12, abs=0.002)
    # Neighbours are uncorrelated (a bad counter hash shows here first).
    assert abs(torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1].item()) < 0.01
    for bit in (0, 15, 31):  # every bit of the raw integers is fair
        assert ((bits(as_key(2), (100_000,)) >> bit) & 1).double().mean() == pytest.approx(
            0.5, abs=0.01
        )
    z = normal(as_key(3), (200_000,))
    assert z.mean().item() == pytest.approx(0.0, abs=0.01)
    assert z.std().item() == pytest.approx(1.0, abs=0.01)
    orders = permutation(task_keys(0, 1, 50), 6)
    assert all(sorted(row) == list(range(6)) for row in orders.tolist())
    assert len({tuple(row) for row in orders.tolist()}) > 40  # of 720 orders


def test_a_draw_outside_a_task_is_an_error_and_sources_nest() -> None:
    with pytest.raises(RuntimeError, match="drawing_from"):
        randomness.current_noise()
    outer, inner = as_key(1), as_key(2)
    with randomness.drawing_from(outer):
        first = randomness.current_noise().uniform((3,))
        with randomness.drawing_from(inner):
            assert torch.equal(
                randomness.current_noise().uniform((3,)), uniform(fold(inner, 0), (3,))
            )
        second = randomness.current_noise().uniform((3,))
    assert torch.equal(first, uniform(fold(outer, 0), (3,)))
    assert torch.equal(second, uniform(fold(outer, 1), (3,)))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_gpu_draws_the_same_numbers_as_the_cpu() -> None:
    keys = task_keys(0, 1, 8)
    on_gpu = uniform(keys.cuda(), (64, 5, 5))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), uniform(keys, (64, 5, 5)))
    assert torch.equal(permutation(keys.cuda(), 30).cpu(), permutation(keys, 30))
