"""An LSTM controller with an external memory written by Least Recently Used Access (LRUA),
the memory-augmented cell of Santoro et al. (2016, ICML), "Meta-Learning with Memory-Augmented
Neural Networks".

One time step, every tensor batched over sequences (``B``), ``H`` heads, ``S`` slots of width
``W``:

1. controller: ``h_t, c_t = LSTM([z_t, r_{t-1}], (h_{t-1}, c_{t-1}))`` (the read vectors are
   "an additional input for the next controller state");
2. each head ``i`` emits a key ``k_t^i = tanh(W_k h_t)`` and a gate ``alpha_t^i``;
3. write weights ``w^w_t = sigmoid(alpha) w^r_{t-1} + (1 - sigmoid(alpha)) w^lu_{t-1}``,
   where ``w^lu_{t-1}`` marks the ``n = H`` slots of smallest usage ``w^u_{t-1}``: head ``i``
   takes the ``i``-th least used one, so the heads' least-used terms add up to the paper's
   vector with ``n`` ones and each head's write weights sum to one;
4. the least used slot is zeroed, then ``M_t = M_{t-1} + sum_i w^w_t^i (a_t^i)^T`` with
   ``a_t = k_t`` as in the paper (``add_vector=True``: a separate ``a_t = tanh(W_a h_t)``, as
   in the NTM);
5. read weights ``w^r_t = softmax_slots(cos(k_t, M_t))``, read vectors ``r_t = w^r_t M_t``;
6. usage ``w^u_t = gamma w^u_{t-1} + sum_i w^r_t^i + sum_i w^w_t^i``.

The paper leaves the key's nonlinearity, how ``alpha`` is produced and the initial state
open: here ``tanh`` keys, ``alpha`` from the controller at every step (like the NTM's gates),
memory starting at a small constant (cosine similarity needs non-zero rows) and zero usage,
read weights and read vectors. Ties in usage go to the lower slot index (a stable sort).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INITIAL_MEMORY = 1e-6
"""Every memory cell's value at the start of a sequence (rows must not be zero vectors)."""


@dataclass
class LRUAState:
    """Everything one sequence carries from step to step; each field has a leading ``B``."""

    hidden: Tensor  # [B, C] controller output h
    cell: Tensor  # [B, C] controller cell c
    memory: Tensor  # [B, S, W]
    usage: Tensor  # [B, S]
    read_weights: Tensor  # [B, H, S]
    reads: Tensor  # [B, H * W]

    def repeat_each(self, count: int) -> LRUAState:
        """Each sequence's state ``count`` times in a row (``[B * count, ...]``): one copy per
        query, so queries step on from the same state without seeing one another."""
        return LRUAState(
            *(getattr(self, f.name).repeat_interleave(count, dim=0) for f in fields(self))
        )


def cosine_read_weights(
    keys: Tensor, memory: Tensor, strength: float | None = None, eps: float = 1e-8
) -> Tensor:
    """``softmax_s beta cos(keys[b, h], memory[b, s])``: keys ``[B, H, W]``, memory
    ``[B, S, W]``, returns ``[B, H, S]``. The paper has no key strength (``strength=None``,
    beta 1): cosines in [-1, 1] over 128 slots give nearly uniform reads, where even a key equal
    to a stored row gets about 2% of the weight; the NTM's key strength (Graves et al. 2014)
    sharpens them."""
    keys = keys / keys.norm(dim=-1, keepdim=True).clamp_min(eps)
    rows = memory / memory.norm(dim=-1, keepdim=True).clamp_min(eps)
    similarity = keys @ rows.transpose(1, 2)
    return torch.softmax(similarity if strength is None else strength * similarity, dim=-1)


def least_used(usage: Tensor, count: int) -> Tensor:
    """Indices ``[B, count]`` of the ``count`` slots of smallest usage ``[B, S]``, least used
    first (ties: lower index first)."""
    return torch.argsort(usage, dim=-1, stable=True)[:, :count]


def write_weights(gates: Tensor, previous_reads: Tensor, least: Tensor) -> Tensor:
    """``sigmoid(gates) w^r_{t-1} + (1 - sigmoid(gates)) w^lu_{t-1}`` per head: gates
    ``[B, H]``, previous read weights ``[B, H, S]``, least-used indices ``[B, H]`` (head ``i``
    takes the ``i``-th least used slot); returns ``[B, H, S]``."""
    sigma = torch.sigmoid(gates).unsqueeze(-1)
    least_used_weights = F.one_hot(least, previous_reads.shape[-1]).to(previous_reads.dtype)
    return sigma * previous_reads + (1 - sigma) * least_used_weights


def write(memory: Tensor, weights: Tensor, vectors: Tensor, zeroed: Tensor) -> Tensor:
    """Zero slot ``zeroed[b]`` of ``memory`` ``[B, S, W]``, then add every head's vector
    ``[B, H, W]`` with its write weights ``[B, H, S]``."""
    keep = 1 - F.one_hot(zeroed, memory.shape[1]).to(memory.dtype)
    return memory * keep.unsqueeze(-1) + weights.transpose(1, 2) @ vectors


class LRUAMemoryCell(nn.Module):
    """The controller and its memory heads: ``step(z_t, state) -> (features, state)``, where
    ``features = [h_t, r_t]`` is what the classifier reads."""

    def __init__(
        self,
        input_size: int,
        controller_size: int = 200,
        memory_slots: int = 128,
        memory_width: int = 40,
        read_heads: int = 4,
        usage_decay: float = 0.95,
        add_vector: bool = False,
        key_strength: float | None = None,
    ) -> None:
        super().__init__()
        self.key_strength = key_strength
        self.controller_size = controller_size
        self.memory_slots = memory_slots
        self.memory_width = memory_width
        self.read_heads = read_heads
        self.usage_decay = usage_decay
        self.add_vector = add_vector
        self.controller = nn.LSTMCell(input_size + read_heads * memory_width, controller_size)
        vectors = 2 if add_vector else 1
        self.heads = nn.Linear(controller_size, read_heads * (vectors * memory_width + 1))

    @property
    def features(self) -> int:
        """Size of ``[h_t, r_t]``."""
        return self.controller_size + self.read_heads * self.memory_width

    def initial_state(self, batch: int, like: Tensor) -> LRUAState:
        def zeros(*shape: int) -> Tensor:
            return like.new_zeros(batch, *shape)

        return LRUAState(
            hidden=zeros(self.controller_size),
            cell=zeros(self.controller_size),
            memory=zeros(self.memory_slots, self.memory_width) + INITIAL_MEMORY,
            usage=zeros(self.memory_slots),
            read_weights=zeros(self.read_heads, self.memory_slots),
            reads=zeros(self.read_heads * self.memory_width),
        )

    def step(self, inputs: Tensor, state: LRUAState) -> tuple[Tensor, LRUAState]:
        hidden, cell = self.controller(
            torch.cat([inputs, state.reads], dim=-1), (state.hidden, state.cell)
        )
        h, w = self.read_heads, self.memory_width
        emitted = self.heads(hidden)
        keys = torch.tanh(emitted[:, : h * w]).view(-1, h, w)
        gates = emitted[:, -h:]
        vectors = (
            torch.tanh(emitted[:, h * w : 2 * h * w]).view(-1, h, w) if self.add_vector else keys
        )

        least = least_used(state.usage, h)
        write_w = write_weights(gates, state.read_weights, least)
        memory = write(state.memory, write_w, vectors, least[:, 0])
        read_w = cosine_read_weights(keys, memory, self.key_strength)
        reads = (read_w @ memory).flatten(1)
        usage = self.usage_decay * state.usage + read_w.sum(1) + write_w.sum(1)
        new = LRUAState(hidden, cell, memory, usage, read_w, reads)
        return torch.cat([hidden, reads], dim=-1), new
