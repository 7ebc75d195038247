"""Generalised advantage estimation (Schulman, Moritz, Levine, Jordan & Abbeel 2016, "High-
Dimensional Continuous Control Using Generalized Advantage Estimation", ICLR) over whole trials.

In RL² (Duan et al. 2016, arXiv 1611.02779) the "episode" of the slow learner is the trial: the
agent's memory runs through all episodes of one task, and what it does in episode 1 (explore)
pays off in episode 5 (exploit). So an episode boundary inside a trial must not cut the
advantage, as it would in CleanRL's ``ppo.py`` (``vwxyzjn/cleanrl``, ``cleanrl/ppo.py``: the
``nextnonterminal`` mask zeroes the bootstrap at every ``done``); the only terminal step is the
trial's last, after which nothing is bootstrapped. ``done`` flags are therefore not an argument.
"""

from __future__ import annotations

import torch
from torch import Tensor


def trial_advantages(rewards: Tensor, values: Tensor, gamma: float, lam: float) -> Tensor:
    """GAE(gamma, lambda) advantages ``[B, T]`` for trials of ``T`` steps.

    ``A_t = sum_l (gamma * lam)^l delta_{t+l}`` with ``delta_t = r_t + gamma V_{t+1} - V_t`` and
    ``V_T = 0``: every trial ends at step ``T`` (rewards and values ``[B, T]``, computed without
    a graph). The value targets are ``advantages + values`` (the lambda-returns).
    """
    if rewards.shape != values.shape or rewards.dim() != 2:
        raise ValueError(f"rewards and values are [B, T], got {rewards.shape}, {values.shape}")
    steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    following = torch.zeros_like(rewards[:, 0])  # A_{t+1}; 0 after the trial
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(steps)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        following = delta + gamma * lam * following
        advantages[:, t] = following
        next_value = values[:, t]
    return advantages
