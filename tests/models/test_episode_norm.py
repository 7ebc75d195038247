"""EpisodeBatchNorm: plain BatchNorm per call, and inside ``one_running_update`` one running
statistics update for all calls with the mean of their statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metarun.models import Conv4, EpisodeBatchNorm, one_running_update, use_episode_statistics


def make_norm(channels: int = 4, momentum: float | None = 0.1) -> EpisodeBatchNorm:
    norm = EpisodeBatchNorm(channels, momentum=momentum).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    return norm


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("shape", [(3, 5, 4), (3, 6, 4, 3, 3)])  # [episodes, n, C, ...]
def test_episodes_are_normalised_alone_and_update_the_running_statistics_once(
    shape: tuple[int, ...], momentum: float | None
) -> None:
    torch.manual_seed(0)
    episodes = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    norm = make_norm(momentum=momentum)
    start = {k: v.clone() for k, v in norm.state_dict().items()}
    with one_running_update(norm):
        ours = torch.stack([norm(episode) for episode in episodes])

    alone, means, variances = [], [], []
    for episode in episodes:
        reference = nn.BatchNorm2d(4) if len(shape) == 5 else nn.BatchNorm1d(4)
        reference = reference.double()
        reference.momentum = momentum
        reference.load_state_dict(start)
        alone.append(reference(episode))
        means.append(reference.running_mean)
        variances.append(reference.running_var)
    theirs = torch.stack(alone)
    torch.testing.assert_close(ours, theirs)
    weights = torch.randn_like(ours)
    torch.testing.assert_close(
        torch.autograd.grad((ours * weights).sum(), episodes),
        torch.autograd.grad((theirs * weights).sum(), episodes),
    )
    # One update with the mean statistics = the mean of the episodes' own updates (linear).
    torch.testing.assert_close(norm.running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(norm.running_var, torch.stack(variances).mean(0))
    assert int(norm.num_batches_tracked) == int(start["num_batches_tracked"]) + 1


def test_outside_the_context_and_in_eval_mode_it_is_plain_batch_norm() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 4, 3, 3, dtype=torch.float64)
    norm, reference = make_norm(), nn.BatchNorm2d(4).double()
    reference.load_state_dict(norm.state_dict())
    torch.testing.assert_close(norm(x), reference(x))
    torch.testing.assert_close(norm.running_var, reference.running_var)
    norm.eval(), reference.eval()
    with one_running_update(norm):
        torch.testing.assert_close(norm(x), reference(x))
    torch.testing.assert_close(norm.running_var, reference.running_var)


def test_a_failed_block_leaves_the_running_statistics_alone() -> None:
    norm = make_norm()
    before = norm.running_mean.clone()
    with pytest.raises(RuntimeError, match="boom"), one_running_update(norm):
        norm(torch.randn(5, 4, dtype=torch.float64))
        raise RuntimeError("boom")
    torch.testing.assert_close(norm.running_mean, before)
    assert norm._collected is None


def test_replacing_batch_norm_keeps_state_dict_keys_and_values() -> None:
    torch.manual_seed(0)
    model = Conv4((1, 28, 28), None, hidden_channels=4)
    model(torch.randn(5, 1, 28, 28))  # move the running statistics off their defaults
    before = {k: v.clone() for k, v in model.state_dict().items()}
    use_episode_statistics(model)
    assert all(type(m) is not nn.BatchNorm2d for m in model.modules())
    assert model.state_dict().keys() == before.keys()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
