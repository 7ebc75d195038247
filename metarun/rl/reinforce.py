"""What MAML's policy-gradient steps need from a batch of rollouts: discounted returns, rllab's
linear feature baseline, and centred advantages, all batched over tasks with no Python loop
over rollouts.

As the authors' code computes them (``cbfinn/maml_rl``, read for these facts):
``sandbox/rocky/tf/algos/batch_maml_polopt.py`` (``discount=0.99``, ``gae_lambda=1``,
``center_adv=True``: each task's advantages standardised over its own steps), rllab's
``sampler/base.py`` ``process_samples`` (with lambda 1 the GAE advantage telescopes to the
discounted return minus the baseline) and ``baselines/linear_feature_baseline.py`` (features
``[o, o^2, t/100, (t/100)^2, (t/100)^3, 1]`` of the observation ``o`` clipped to [-10, 10]
and the step ``t``, fitted by ridge regression with ``reg_coeff=1e-5`` to the returns).

One departure: rllab predicts with the baseline fitted on the *previous* batch of paths (it
fits after predicting, and one baseline object serves every task in turn, so a task's
advantages use another task's fit); here each task's baseline is fitted on its own rollouts
before predicting, as ``tristandeleu/pytorch-maml-rl`` does (``maml_rl/samplers/
multi_task_sampler.py``: ``baseline.fit(train_episodes)``, then ``compute_advantages``).
"""

from __future__ import annotations

import torch
from torch import Tensor

BASELINE_RIDGE = 1e-5


def discounted_returns(rewards: Tensor, gamma: float) -> Tensor:
    """``R_t = sum_{k >= t} gamma^(k - t) r_k`` over the last dimension (one matrix product)."""
    steps = rewards.shape[-1]
    t = torch.arange(steps, device=rewards.device, dtype=torch.float64)
    lag = t[:, None] - t[None, :]  # [k, t]: k - t
    weights = torch.where(lag >= 0, gamma ** lag.clamp(min=0), torch.zeros_like(lag))
    return (rewards.double() @ weights).to(rewards.dtype)


def baseline_features(observations: Tensor) -> Tensor:
    """``[..., T, 2D + 4]``: rllab's ``LinearFeatureBaseline._features`` of ``[..., T, D]``."""
    o = observations.clamp(-10, 10)
    steps = observations.shape[-2]
    time = torch.arange(steps, device=o.device, dtype=o.dtype) / 100.0
    time = time.reshape(*([1] * (o.dim() - 2)), steps, 1).expand(*o.shape[:-1], 1)
    return torch.cat([o, o**2, time, time**2, time**3, torch.ones_like(time)], dim=-1)


def linear_baseline(observations: Tensor, returns: Tensor, valid: Tensor) -> Tensor:
    """Each task's baseline ``[B, R, T]``, fitted by ridge regression on the valid steps of its
    ``R`` rollouts (``observations`` ``[B, R, T, D]``, ``returns`` and ``valid`` ``[B, R, T]``),
    in float64 as rllab's numpy does."""
    features = baseline_features(observations.double()) * valid[..., None]
    flat = features.flatten(1, 2)  # [B, R*T, F]
    targets = (returns.double() * valid).flatten(1, 2)
    eye = torch.eye(flat.shape[-1], dtype=flat.dtype, device=flat.device)
    gram = flat.transpose(1, 2) @ flat + BASELINE_RIDGE * eye
    weights = torch.linalg.solve(gram, flat.transpose(1, 2) @ targets[..., None])
    return (baseline_features(observations.double()) @ weights[:, None]).squeeze(-1).float()


def centred_advantages(
    observations: Tensor, rewards: Tensor, valid: Tensor, gamma: float
) -> Tensor:
    """``[B, R, T]``: return minus baseline, standardised per task over its valid steps (numpy's
    population standard deviation, ``+ 1e-8``), zero on the steps after a path ended."""
    valid = valid.to(rewards.dtype)
    returns = discounted_returns(rewards * valid, gamma)
    advantages = returns - linear_baseline(observations, returns, valid)
    count = valid.sum((1, 2), keepdim=True).clamp(min=1)
    mean = (advantages * valid).sum((1, 2), keepdim=True) / count
    var = (((advantages - mean) * valid) ** 2).sum((1, 2), keepdim=True) / count
    return (advantages - mean) / (var.sqrt() + 1e-8) * valid


__all__ = [
    "baseline_features",
    "centred_advantages",
    "discounted_returns",
    "linear_baseline",
]
