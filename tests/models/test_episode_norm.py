"""EpisodeBatchNorm: each episode of a batch normalised with its own statistics, one running
statistics update per pass with their mean."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metarun.models import Conv4, EpisodeBatchNorm, per_episode, use_episode_statistics


def make_norm(channels: int = 4) -> EpisodeBatchNorm:
    norm = EpisodeBatchNorm(channels).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    return norm


@pytest.mark.parametrize("shape", [(3, 5, 4), (3, 6, 4, 3, 3)])  # [episodes, n, C, ...]
def test_each_episode_is_normalised_as_batch_norm_would_alone(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    episodes = torch.randn(*shape, dtype=torch.float64)
    norm = make_norm()
    start = {k: v.clone() for k, v in norm.state_dict().items()}
    with per_episode(norm, shape[0]):
        ours = norm(episodes.flatten(0, 1)).view(shape)

    alone, means, variances = [], [], []
    for episode in episodes:
        reference = nn.BatchNorm2d(4).double() if len(shape) == 5 else nn.BatchNorm1d(4).double()
        reference.load_state_dict(start)
        alone.append(reference(episode))
        means.append(reference.running_mean)
        variances.append(reference.running_var)
    torch.testing.assert_close(ours, torch.stack(alone))
    # One update with the mean statistics = the mean of the episodes' own updates (linear).
    torch.testing.assert_close(norm.running_mean, torch.stack(means).mean(0))
    torch.testing.assert_close(norm.running_var, torch.stack(variances).mean(0))
    assert int(norm.num_batches_tracked) == 1


def test_gradients_equal_those_of_separate_batch_norms() -> None:
    torch.manual_seed(0)
    x = torch.randn(2 * 6, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    norm = make_norm()
    with per_episode(norm, 2):
        ours = norm(x)
    theirs = torch.cat(
        [
            F.batch_norm(part, None, None, norm.weight, norm.bias, training=True, eps=norm.eps)
            for part in x.split(6)
        ]
    )
    w = torch.randn_like(ours)
    g_ours = torch.autograd.grad((ours * w).sum(), [x, norm.weight, norm.bias])
    g_theirs = torch.autograd.grad((theirs * w).sum(), [x, norm.weight, norm.bias])
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_one_episode_and_eval_mode_are_plain_batch_norm() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 4, 3, 3, dtype=torch.float64)
    norm, reference = make_norm(), nn.BatchNorm2d(4).double()
    reference.load_state_dict(norm.state_dict())
    torch.testing.assert_close(norm(x), reference(x))  # outside per_episode: one episode
    torch.testing.assert_close(norm.running_var, reference.running_var)
    norm.eval(), reference.eval()
    with per_episode(norm, 2):
        torch.testing.assert_close(norm(x), reference(x))  # running statistics, however grouped


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


def test_a_batch_that_does_not_split_into_episodes_is_refused() -> None:
    norm = EpisodeBatchNorm(4)
    with per_episode(norm, 3), pytest.raises(ValueError, match="3 equal episodes"):
        norm(torch.randn(7, 4))
