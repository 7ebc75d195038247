"""What the sequence learners (MANN, SNAIL) share when they read an episode as a sequence.

Training shows each episode's support set in a fresh random order; evaluation in one order drawn
from a fixed seed, the same for every episode, so an episode's scores never depend on the batch
or the process it is scored in.
"""

from __future__ import annotations

import torch
from torch import Tensor


def fixed_order(length: int, seed: int, device: torch.device | str = "cpu") -> Tensor:
    """The evaluation's support order: one permutation of ``length`` items from ``seed``."""
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed)).to(device)
