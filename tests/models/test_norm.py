from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad, vmap

from metarun.models import BatchStatsNorm, Conv4, use_batch_statistics


@pytest.mark.parametrize("shape", [(6, 4), (5, 4, 3, 3)])
def test_forward_and_gradient_equal_pytorch_training_batch_norm(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    norm = BatchStatsNorm(4).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    ours = norm(x)
    theirs = F.batch_norm(x, None, None, norm.weight, norm.bias, training=True, eps=norm.eps)
    torch.testing.assert_close(ours, theirs)
    w = torch.randn_like(ours)
    g_ours = torch.autograd.grad((ours * w).sum(), [x, norm.weight, norm.bias])
    g_theirs = torch.autograd.grad((theirs * w).sum(), [x, norm.weight, norm.bias])
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_second_order_gradients_under_vmap_are_exact() -> None:
    """The reason BatchStatsNorm exists: differentiate an inner gradient step, vmapped over
    tasks, and compare with a per-task loop (PyTorch's fused batch norm fails this)."""
    torch.manual_seed(0)
    w1 = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    gamma = (1 + 0.1 * torch.randn(8, dtype=torch.float64)).requires_grad_()
    beta = (0.1 * torch.randn(8, dtype=torch.float64)).requires_grad_()
    w2 = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
    params = {"w1": w1, "gamma": gamma, "beta": beta, "w2": w2}
    norm = BatchStatsNorm(8).double()

    def loss(p, x, y, fused):
        h = x @ p["w1"].T
        if fused:
            h = F.batch_norm(h, None, None, p["gamma"], p["beta"], training=True)
        else:
            h = torch.func.functional_call(norm, {"weight": p["gamma"], "bias": p["beta"]}, (h,))
        return F.cross_entropy(torch.tanh(h) @ p["w2"].T, y)

    def task(p, sx, sy, qx, qy, fused):
        g = grad(loss)(p, sx, sy, fused)
        return loss({k: p[k] - 0.5 * g[k] for k in p}, qx, qy, fused)

    sx, qx = torch.randn(3, 5, 6, dtype=torch.float64), torch.randn(3, 7, 6, dtype=torch.float64)
    sy, qy = torch.randint(0, 3, (3, 5)), torch.randint(0, 3, (3, 7))
    ours = torch.autograd.grad(
        vmap(task, in_dims=(None, 0, 0, 0, 0, None))(params, sx, sy, qx, qy, False).mean(),
        list(params.values()),
    )
    reference = 0
    for t in range(3):
        support_loss = loss(params, sx[t], sy[t], True)
        g = torch.autograd.grad(support_loss, list(params.values()), create_graph=True)
        fast = {k: v - 0.5 * gk for (k, v), gk in zip(params.items(), g, strict=True)}
        reference = reference + loss(fast, qx[t], qy[t], True) / 3
    expected = torch.autograd.grad(reference, list(params.values()))
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_use_batch_statistics_replaces_every_batch_norm_and_keeps_parameters() -> None:
    torch.manual_seed(0)
    model = Conv4((1, 28, 28), 5, hidden_channels=4)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
    before = {k: v.clone() for k, v in model.named_parameters()}
    use_batch_statistics(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert sum(isinstance(m, BatchStatsNorm) for m in model.modules()) == 4
    after = dict(model.named_parameters())
    assert before.keys() == after.keys()
    for name, value in before.items():
        torch.testing.assert_close(after[name], value)
    assert not list(model.buffers())


def test_non_affine_batch_norm_stays_without_parameters() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4, affine=False))
    use_batch_statistics(model)
    assert isinstance(model[1], BatchStatsNorm) and not list(model[1].parameters())
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(model[1](x), F.batch_norm(x, None, None, training=True))
