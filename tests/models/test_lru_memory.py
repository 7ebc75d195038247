"""The LRUA memory's defining computation (Santoro et al. 2016): writes go to the least used
slot (after zeroing it) or to the last read slots, usage decays and accumulates read and write
weights, reads are a softmax over cosine similarities."""

from __future__ import annotations

import math

import pytest
import torch

from metarun.models.lru_memory import (
    LRUAMemoryCell,
    LRUAState,
    cosine_read_weights,
    least_used,
    write_weights,
)


def cell_and_state(
    heads: int = 2, slots: int = 6, width: int = 3, seed: int = 0
) -> tuple[LRUAMemoryCell, LRUAState]:
    """A small float64 cell with a random mid-sequence state (distinct usages)."""
    torch.manual_seed(seed)
    cell = LRUAMemoryCell(4, 5, slots, width, heads, usage_decay=0.9).double()
    g = torch.Generator().manual_seed(seed)
    b = 2
    state = LRUAState(
        hidden=torch.randn(b, 5, generator=g, dtype=torch.float64),
        cell=torch.randn(b, 5, generator=g, dtype=torch.float64),
        memory=torch.randn(b, slots, width, generator=g, dtype=torch.float64),
        usage=torch.rand(b, slots, generator=g, dtype=torch.float64) * 3,
        read_weights=torch.softmax(torch.randn(b, heads, slots, generator=g), -1).double(),
        reads=torch.randn(b, heads * width, generator=g, dtype=torch.float64),
    )
    return cell, state


@torch.no_grad()
def reference_step(cell: LRUAMemoryCell, x: torch.Tensor, state: LRUAState) -> dict:
    """One LRUA step written as the paper's equations, slot by slot and head by head."""
    hidden, _ = cell.controller(torch.cat([x, state.reads], -1), (state.hidden, state.cell))
    h, w, n = cell.read_heads, cell.memory_width, cell.memory_slots
    out = {"memory": [], "read_weights": [], "usage": [], "write_weights": []}
    for b in range(x.shape[0]):
        emitted = cell.heads(hidden[b])
        keys = [torch.tanh(emitted[i * w : (i + 1) * w]) for i in range(h)]
        alphas = [emitted[h * w + i] for i in range(h)]
        usage = state.usage[b].tolist()
        by_usage = sorted(range(n), key=lambda s: (usage[s], s))
        write = []
        for i in range(h):
            least = torch.zeros(n, dtype=torch.float64)
            least[by_usage[i]] = 1.0
            sigma = 1 / (1 + math.exp(-float(alphas[i])))
            write.append(sigma * state.read_weights[b, i] + (1 - sigma) * least)
        memory = state.memory[b].clone()
        memory[by_usage[0]] = 0.0  # the least used slot is zeroed before writing
        for i in range(h):
            for s in range(n):
                memory[s] = memory[s] + write[i][s] * keys[i]
        reads = []
        for i in range(h):
            sims = [
                float(keys[i] @ memory[s]) / (float(keys[i].norm()) * float(memory[s].norm()))
                for s in range(n)
            ]
            total = sum(math.exp(v) for v in sims)
            reads.append(torch.tensor([math.exp(v) / total for v in sims], dtype=torch.float64))
        usage_t = cell.usage_decay * state.usage[b] + sum(reads) + sum(write)
        out["memory"].append(memory)
        out["read_weights"].append(torch.stack(reads))
        out["usage"].append(usage_t)
        out["write_weights"].append(torch.stack(write))
    return {k: torch.stack(v) for k, v in out.items()}


def test_a_step_matches_the_papers_equations_slot_by_slot() -> None:
    cell, state = cell_and_state()
    x = torch.randn(2, 4, dtype=torch.float64)
    features, new = cell.step(x, state)
    expected = reference_step(cell, x, state)
    torch.testing.assert_close(new.memory, expected["memory"])
    torch.testing.assert_close(new.read_weights, expected["read_weights"])
    torch.testing.assert_close(new.usage, expected["usage"])
    reads = torch.einsum("bhs,bsw->bhw", expected["read_weights"], expected["memory"])
    torch.testing.assert_close(new.reads, reads.flatten(1))
    torch.testing.assert_close(features, torch.cat([new.hidden, new.reads], -1))
    # Guard: the reference is sensitive to the usage it starts from.
    state.usage = state.usage.flip(-1)
    assert not torch.allclose(reference_step(cell, x, state)["memory"], new.memory)


def test_usage_decays_and_adds_the_read_and_write_weights() -> None:
    """``w^u_t = gamma w^u_{t-1} + sum_i w^r_t(i) + sum_i w^w_t(i)`` with three heads, the
    read and write weights from the slot-by-slot reference, not from the package."""
    cell, state = cell_and_state(heads=3)
    x = torch.randn(2, 4, dtype=torch.float64)
    _, new = cell.step(x, state)
    reference = reference_step(cell, x, state)
    reads, writes = reference["read_weights"].sum(1), reference["write_weights"].sum(1)
    torch.testing.assert_close(new.usage, 0.9 * state.usage + reads + writes)
    # Each term matters: without the writes, or without the decay, the usage is another.
    assert not torch.allclose(new.usage, 0.9 * state.usage + reads)
    assert not torch.allclose(new.usage, state.usage + reads + writes)


def forced_writer(gate: float, key: float = 0.5) -> LRUAMemoryCell:
    """One head whose key is the constant ``tanh(key)`` and whose gate is ``gate``."""
    cell = LRUAMemoryCell(4, 5, memory_slots=5, memory_width=3, read_heads=1).double()
    with torch.no_grad():
        cell.heads.weight.zero_()
        cell.heads.bias[:3] = key
        cell.heads.bias[3] = gate
    return cell


@pytest.mark.parametrize("gate", [-50.0, 50.0])
def test_a_closed_gate_writes_the_key_to_the_least_used_slot_only(gate: float) -> None:
    cell = forced_writer(gate)
    _, state = cell_and_state(heads=1, slots=5, width=3)
    state.usage = torch.tensor([[2.0, 0.1, 3.0, 1.0, 2.5], [0.5, 4.0, 3.0, 0.01, 1.0]]).double()
    last_read = torch.tensor([4, 0])
    state.read_weights = torch.nn.functional.one_hot(last_read, 5).double().unsqueeze(1)
    _, new = cell.step(torch.randn(2, 4, dtype=torch.float64), state)
    key = torch.full((3,), math.tanh(0.5), dtype=torch.float64)
    least = torch.tensor([1, 3])
    for b in range(2):
        if gate < 0:  # sigma(alpha) -> 0: the least used slot, zeroed, then written
            target = int(least[b])
            torch.testing.assert_close(new.memory[b, target], key)
            untouched = [s for s in range(5) if s != target]
        else:  # sigma(alpha) -> 1: the slot read last (after zeroing the least used)
            target = int(last_read[b])
            torch.testing.assert_close(new.memory[b, target], state.memory[b, target] + key)
            torch.testing.assert_close(new.memory[b, least[b]], torch.zeros(3).double())
            untouched = [s for s in range(5) if s not in (target, int(least[b]))]
        torch.testing.assert_close(new.memory[b, untouched], state.memory[b, untouched])
    weights = write_weights(torch.full((2, 1), gate), state.read_weights, least[:, None])
    expected_slot = least if gate < 0 else last_read
    torch.testing.assert_close(
        weights[:, 0], torch.nn.functional.one_hot(expected_slot, 5).double()
    )


def test_each_head_takes_its_own_least_used_slot() -> None:
    usage = torch.tensor([[3.0, 0.2, 5.0, 0.1, 4.0]])
    assert least_used(usage, 3).tolist() == [[3, 1, 0]]
    previous = torch.full((1, 3, 5), 0.2)
    weights = write_weights(torch.full((1, 3), -60.0), previous, least_used(usage, 3))
    assert weights.argmax(-1).tolist() == [[3, 1, 0]]
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 3))
    # Ties go to the lower slot.
    assert least_used(torch.zeros(1, 4), 2).tolist() == [[0, 1]]


def test_read_weights_are_a_softmax_of_cosine_similarities() -> None:
    g = torch.Generator().manual_seed(1)
    keys = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    memory = torch.randn(2, 7, 4, generator=g, dtype=torch.float64)
    weights = cosine_read_weights(keys, memory)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    cosine = torch.nn.functional.cosine_similarity(keys.unsqueeze(2), memory.unsqueeze(1), dim=-1)
    expected = cosine.exp() / cosine.exp().sum(-1, keepdim=True)
    torch.testing.assert_close(weights, expected)
    # Cosine, not dot product: scaling a memory row leaves the weights unchanged.
    scaled = memory.clone()
    scaled[:, 2] *= 10
    torch.testing.assert_close(cosine_read_weights(keys, scaled), weights)
    dot = torch.softmax(keys @ memory.transpose(1, 2), -1)
    assert not torch.allclose(dot, weights)


def test_the_initial_state_reads_uniformly_and_writes_to_slot_zero() -> None:
    cell = forced_writer(-50.0)
    state = cell.initial_state(1, torch.zeros(1, dtype=torch.float64))
    _, new = cell.step(torch.zeros(1, 4, dtype=torch.float64), state)
    torch.testing.assert_close(new.memory[0, 0], torch.full((3,), math.tanh(0.5)).double())
    assert torch.all(new.memory[0, 1:] == 1e-6)
    assert new.read_weights.shape == (1, 1, 5)
