"""The sequence learners' evaluation order: one seeded permutation, whatever the batch."""

from __future__ import annotations

import torch

from metarun.algorithms.sequences import fixed_order


def test_the_evaluation_order_is_a_permutation_fixed_by_its_seed() -> None:
    order = fixed_order(10, seed=3)
    assert sorted(order.tolist()) == list(range(10))
    torch.manual_seed(0)  # the global generator plays no part
    assert torch.equal(fixed_order(10, seed=3), order)
    assert not torch.equal(fixed_order(10, seed=4), order)
