"""SNAIL's sequence model (Mishra, Rohaninejad, Chen & Abbeel 2018, ICLR): causal dense blocks,
TC blocks and causal attention blocks, interleaved.

Every block maps a sequence ``[B, T, C]`` to ``[B, T, C + growth]``, concatenating what it
computes to its input, and is causal: position ``t``'s output depends on positions ``<= t``
only. The paper's blocks:

- ``DenseBlock(R, D)``: a dilated causal convolution of kernel 2 and dilation ``R`` into ``D``
  filter and ``D`` gate channels, gated as ``tanh(filter) * sigmoid(gate)``.
- ``TCBlock(T, D)``: dense blocks of dilations ``2^i`` for ``i = 1 .. ceil(log2 T)`` (the
  paper's pseudo-code; with kernel 2 the receptive field ``2^(L+1) - 1`` covers ``T``).
- ``AttentionBlock(K, V)``: single-head soft attention, keys and queries of size ``K`` and values
  of size ``V`` from affine maps, logits scaled by ``1/sqrt(K)``, position ``t`` attending to
  positions ``<= t``.

Causality is what makes an episode cheap: the ``N*Q`` query sequences of an episode, each the
support set followed by one query, share their prefix, whose activations do not depend on the
query. ``extend(prefix, tails)`` computes the prefix once and, for each tail (a query), only
its own last position from the prefix's activations: exactly what running every
``[support..., query]`` sequence through ``forward`` gives at its last position
(``tests/models/test_snail_blocks.py`` checks it), at a cost of one prefix plus one position
per query instead of a whole sequence per query.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DenseBlock(nn.Module):
    """A gated, dilated causal convolution (kernel 2) whose ``filters`` outputs are
    concatenated to its input."""

    def __init__(self, in_channels: int, filters: int, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.out_channels = in_channels + filters
        # The filter and gate convolutions as one: output channels [filter | gate].
        self.conv = nn.Conv1d(in_channels, 2 * filters, kernel_size=2, dilation=dilation)

    def _gate(self, pre: Tensor) -> Tensor:
        filter_, gate = pre.chunk(2, dim=-1)
        return torch.tanh(filter_) * torch.sigmoid(gate)

    def forward(self, x: Tensor) -> Tensor:
        # Left padding by the dilation: position t sees x[t - dilation] (zero before the start)
        # and x[t], never a later position.
        padded = F.pad(x.transpose(1, 2), (self.dilation, 0))
        pre = self.conv(padded).transpose(1, 2)
        return torch.cat([x, self._gate(pre)], dim=-1)

    def extend(self, prefix: Tensor, tails: Tensor) -> tuple[Tensor, Tensor]:
        """Outputs for ``prefix`` ``[B, S, C]`` and, for each of ``tails`` ``[B, M, C]``, for
        the last position of the sequence ``prefix + [tail]``."""
        s = prefix.shape[1]
        # Kernel tap 0 multiplies x[t - dilation], tap 1 multiplies x[t] (cross-correlation
        # over the left-padded input); the tails sit at t = s.
        pre = F.linear(tails, self.conv.weight[..., 1], self.conv.bias)
        if s >= self.dilation:
            earlier = F.linear(prefix[:, s - self.dilation], self.conv.weight[..., 0])
            pre = pre + earlier.unsqueeze(1)
        return self(prefix), torch.cat([tails, self._gate(pre)], dim=-1)


def tc_dilations(sequence_length: int) -> list[int]:
    """The paper's TC block dilations for sequences of ``sequence_length``: ``2^i`` for
    ``i = 1 .. ceil(log2 T)``."""
    return [2**i for i in range(1, math.ceil(math.log2(sequence_length)) + 1)]


class TCBlock(nn.Module):
    """Dense blocks of growing dilation: a receptive field that covers the sequence."""

    def __init__(self, in_channels: int, sequence_length: int, filters: int) -> None:
        super().__init__()
        blocks = []
        channels = in_channels
        for dilation in tc_dilations(sequence_length):
            blocks.append(DenseBlock(channels, filters, dilation))
            channels = blocks[-1].out_channels
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return x

    def extend(self, prefix: Tensor, tails: Tensor) -> tuple[Tensor, Tensor]:
        for block in self.blocks:
            prefix, tails = block.extend(prefix, tails)
        return prefix, tails


class AttentionBlock(nn.Module):
    """Causal single-head soft attention whose read (``value_size`` channels) is concatenated
    to its input."""

    def __init__(self, in_channels: int, key_size: int, value_size: int) -> None:
        super().__init__()
        self.query = nn.Linear(in_channels, key_size)
        self.key = nn.Linear(in_channels, key_size)
        self.value = nn.Linear(in_channels, value_size)
        self.scale = 1.0 / math.sqrt(key_size)
        self.out_channels = in_channels + value_size

    def _attend(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The block's output on ``x`` ``[B, T, C]``, and the keys and values it used."""
        t = x.shape[1]
        keys, values = self.key(x), self.value(x)
        logits = self.query(x) @ keys.transpose(1, 2) * self.scale  # [B, T, T]
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(diagonal=1)
        probabilities = logits.masked_fill(future, float("-inf")).softmax(dim=-1)
        return torch.cat([x, probabilities @ values], dim=-1), keys, values

    def forward(self, x: Tensor) -> Tensor:
        return self._attend(x)[0]

    def extend(self, prefix: Tensor, tails: Tensor) -> tuple[Tensor, Tensor]:
        """As ``DenseBlock.extend``: each tail, at the last position, attends to the whole
        prefix and to itself."""
        prefix_out, keys, values = self._attend(prefix)  # keys [B, S, K], values [B, S, V]
        s = prefix.shape[1]
        tail_queries, tail_keys = self.query(tails), self.key(tails)  # [B, M, K]
        to_prefix = tail_queries @ keys.transpose(1, 2)  # [B, M, S]
        to_self = (tail_queries * tail_keys).sum(-1, keepdim=True)  # [B, M, 1]
        weights = (torch.cat([to_prefix, to_self], dim=-1) * self.scale).softmax(dim=-1)
        read = weights[..., :s] @ values + weights[..., s:] * self.value(tails)
        return prefix_out, torch.cat([tails, read], dim=-1)


class SnailNet(nn.Module):
    """The paper's few-shot classifier over sequences of ``in_channels`` features: attention and
    TC blocks alternating, starting and ending with attention, then a 1x1 convolution (a
    per-position linear map) to ``out_features`` logits.

    The paper's Omniglot and mini-ImageNet network is ``key_sizes=(64, 256, 512)``,
    ``value_sizes=(32, 128, 256)`` and ``filters=128``: AttentionBlock(64, 32), TCBlock(T, 128),
    AttentionBlock(256, 128), TCBlock(T, 128), AttentionBlock(512, 256), 1x1 conv to N.
    """

    def __init__(
        self,
        in_channels: int,
        out_features: int,
        sequence_length: int,
        key_sizes: Sequence[int] = (64, 256, 512),
        value_sizes: Sequence[int] = (32, 128, 256),
        filters: int = 128,
    ) -> None:
        super().__init__()
        if len(key_sizes) != len(value_sizes) or not key_sizes:
            raise ValueError("key_sizes and value_sizes need one entry per attention block")
        blocks: list[nn.Module] = []
        channels = in_channels
        for i, (key_size, value_size) in enumerate(zip(key_sizes, value_sizes, strict=True)):
            if i > 0:
                blocks.append(TCBlock(channels, sequence_length, filters))
                channels = blocks[-1].out_channels
            blocks.append(AttentionBlock(channels, key_size, value_size))
            channels = blocks[-1].out_channels
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(channels, out_features)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, T, out_features]`` at every position of sequences ``[B, T, C]``."""
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def extend(self, prefix: Tensor, tails: Tensor) -> Tensor:
        """Logits ``[B, M, out_features]`` at the last position of each sequence
        ``prefix[b] + [tails[b, m]]``: the prefix ``[B, S, C]`` is computed once."""
        for block in self.blocks:
            prefix, tails = block.extend(prefix, tails)
        return self.head(tails)
