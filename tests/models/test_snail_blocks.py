"""SNAIL's blocks against independent per-position computations: the causal attention block
(an explicit loop over the visible positions), the dense block's gated dilated causal
convolution (explicit taps), causality of every block and of the whole network, and the
shared-prefix ``extend`` against whole sequences run one at a time."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from metarun.models.snail_blocks import (
    AttentionBlock,
    DenseBlock,
    SnailNet,
    TCBlock,
    tc_dilations,
)


def sequences(batch: int = 2, length: int = 7, channels: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, length, channels, generator=g, dtype=torch.float64)


def fresh(module: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return module.double()


def test_attention_block_equals_an_explicit_masked_loop() -> None:
    block = fresh(AttentionBlock(5, key_size=4, value_size=3))
    x = sequences()
    out = block(x)
    torch.testing.assert_close(out[..., :5], x)  # the input passes through, read appended
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            query = block.query.weight @ x[b, t] + block.query.bias
            scores = []
            for j in range(t + 1):  # positions t may see: 0 .. t
                key = block.key.weight @ x[b, j] + block.key.bias
                scores.append(query @ key / math.sqrt(4))
            weights = torch.stack(scores).softmax(0)
            read = sum(
                w * (block.value.weight @ x[b, j] + block.value.bias) for j, w in enumerate(weights)
            )
            torch.testing.assert_close(out[b, t, 5:], read)
    # Guard: the same loop over every position (no mask) disagrees before the last position.
    unmasked = (block.query(x) @ block.key(x).transpose(1, 2) / 2.0).softmax(-1) @ block.value(x)
    assert not torch.allclose(unmasked[:, :-1], out[:, :-1, 5:])
    torch.testing.assert_close(unmasked[:, -1], out[:, -1, 5:])


@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_dense_block_equals_explicit_gated_causal_taps(dilation: int) -> None:
    block = fresh(DenseBlock(5, filters=3, dilation=dilation))
    x = sequences()
    out = block(x)
    torch.testing.assert_close(out[..., :5], x)
    weight, bias = block.conv.weight, block.conv.bias  # [2F, C, 2]: [filter | gate]
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            pre = bias + weight[:, :, 1] @ x[b, t]
            if t - dilation >= 0:  # zero padding before the sequence starts
                pre = pre + weight[:, :, 0] @ x[b, t - dilation]
            expected = torch.tanh(pre[:3]) * torch.sigmoid(pre[3:])
            torch.testing.assert_close(out[b, t, 5:], expected)
    # Guard: the taps the other way round (a convolution that looks ahead) disagree.
    swapped = DenseBlock(5, 3, dilation).double()
    swapped.load_state_dict(block.state_dict())
    with torch.no_grad():
        swapped.conv.weight.copy_(block.conv.weight.flip(-1))
    assert not torch.allclose(swapped(x), out)


def test_tc_block_dilations_follow_the_papers_pseudo_code() -> None:
    # 2^i for i = 1 .. ceil(log2 T): T = 6 (5-way 1-shot), 21 (20-way 1-shot), 26 (5-way 5-shot)
    assert tc_dilations(6) == [2, 4, 8]
    assert tc_dilations(21) == [2, 4, 8, 16, 32]
    assert tc_dilations(26) == [2, 4, 8, 16, 32]
    assert tc_dilations(2) == [2]
    block = TCBlock(10, sequence_length=6, filters=4)
    assert [b.dilation for b in block.blocks] == [2, 4, 8]
    assert [b.conv.in_channels for b in block.blocks] == [10, 14, 18]
    assert block.out_channels == 22


def test_the_papers_network_has_the_papers_widths() -> None:
    # 5-way 1-shot Omniglot: 64 features + 5 label channels, T = 6, three dense blocks per TC.
    net = SnailNet(64 + 5, 5, sequence_length=6)
    widths = [block.out_channels for block in net.blocks]
    assert widths == [69 + 32, 101 + 3 * 128, 485 + 128, 613 + 3 * 128, 997 + 256]
    assert isinstance(net.blocks[0], AttentionBlock) and isinstance(net.blocks[1], TCBlock)
    assert net.head.in_features == 1253 and net.head.out_features == 5


def causal_blocks() -> dict[str, nn.Module]:
    return {
        "attention": AttentionBlock(5, 4, 3),
        "dense": DenseBlock(5, 3, dilation=2),
        "tc": TCBlock(5, sequence_length=7, filters=3),
        "network": SnailNet(
            5, 3, sequence_length=7, key_sizes=(4, 6), value_sizes=(3, 2), filters=3
        ),
    }


@pytest.mark.parametrize("name", ["attention", "dense", "tc", "network"])
def test_changing_a_later_item_leaves_earlier_outputs_alone(name: str) -> None:
    block = fresh(causal_blocks()[name])
    x = sequences()
    changed = x.clone()
    changed[:, 3] += 1.0
    before, after = block(x), block(changed)
    torch.testing.assert_close(after[:, :3], before[:, :3])  # positions 0..2 never see item 3
    # Guard: the change does reach later outputs (beyond the item's own passed-through input).
    computed = slice(5, None) if name != "network" else slice(None)
    assert not torch.allclose(after[:, 3:, computed], before[:, 3:, computed])


@pytest.mark.parametrize("name", ["attention", "dense", "tc", "network"])
def test_extend_equals_each_whole_sequence_run_alone(name: str) -> None:
    """A shared prefix computed once plus each tail's last position is exactly what each
    ``prefix + [tail]`` sequence gives at its last position."""
    block = fresh(causal_blocks()[name])
    prefix = sequences(batch=2, length=6)
    tails = sequences(batch=2, length=4, seed=1)  # 4 tails per prefix
    extended = block.extend(prefix, tails)
    if name == "network":  # the network returns the tails' logits only
        tail_out = extended
    else:
        torch.testing.assert_close(extended[0], block(prefix))
        tail_out = extended[1]
    for b in range(2):
        for m in range(4):
            whole = torch.cat([prefix[b], tails[b, m : m + 1]])[None]  # [1, 7, C]
            torch.testing.assert_close(tail_out[b, m], block(whole)[0, -1])
    # Guard: the tails depend on the prefix (item S - 2 is within every block's reach).
    changed = prefix.clone()
    changed[:, 4] += 1.0
    other = block.extend(changed, tails)
    other = other if name == "network" else other[1]
    assert not torch.allclose(other, tail_out)


def test_extend_handles_a_prefix_shorter_than_the_dilation() -> None:
    block = fresh(DenseBlock(5, 3, dilation=4))
    prefix, tails = sequences(length=2), sequences(length=3, seed=1)
    _, tail_out = block.extend(prefix, tails)
    for m in range(3):
        whole = torch.cat([prefix, tails[:, m : m + 1]], dim=1)
        torch.testing.assert_close(tail_out[:, m], block(whole)[:, -1])


def test_mismatched_attention_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="one entry per attention block"):
        SnailNet(5, 3, 7, key_sizes=(4, 6), value_sizes=(3,))
