from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, vmap

from metarun.models import MLP, Conv4


@pytest.mark.parametrize(("size", "embedding"), [(28, 64), (84, 1600)])
def test_conv4_embedding_size_follows_the_input(size: int, embedding: int) -> None:
    model = Conv4((1 if size == 28 else 3, size, size), None)
    assert model.embedding_size == embedding
    x = torch.rand(2, 1 if size == 28 else 3, size, size)
    assert model(x).shape == (2, embedding)
    assert model.head is None


def test_conv4_is_four_conv_bn_relu_pool_blocks_with_a_head() -> None:
    model = Conv4((1, 28, 28), 5)
    assert len(model.features) == 4
    for block in model.features:
        kinds = [type(layer).__name__ for layer in block]
        assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
        assert block[0].kernel_size == (3, 3) and block[0].out_channels == 64
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 5)


def test_conv4_rejects_images_too_small_for_four_poolings() -> None:
    with pytest.raises(ValueError, match="16 pixels"):
        Conv4((1, 8, 8), 5)


def test_mlp_matches_maml_sinusoid_regressor() -> None:
    model = MLP((1,), 1, hidden=(40, 40))
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    sizes = [(m.in_features, m.out_features) for m in linears]
    assert sizes == [(1, 40), (40, 40), (40, 1)]
    assert model(torch.rand(7, 1)).shape == (7, 1)
    assert MLP((1,), None).embedding_size == 40


@pytest.mark.parametrize("model", [Conv4((1, 16, 16), 3, hidden_channels=4), MLP((4,), 2)])
def test_backbones_run_functionally_under_vmap(model: torch.nn.Module) -> None:
    """Functional use is what MAML needs: per-task parameters through functional_call + vmap."""
    model.eval()  # running statistics: nothing is written in place under vmap
    params = {k: torch.stack([v.detach()] * 3) for k, v in model.named_parameters()}
    shape = (5, 1, 16, 16) if isinstance(model, Conv4) else (5, 4)
    x = torch.rand(3, *shape)
    batched = vmap(lambda p, xi: functional_call(model, p, (xi,)))(params, x)
    for t in range(3):
        single = functional_call(model, {k: v[t] for k, v in params.items()}, (x[t],))
        torch.testing.assert_close(batched[t], single, atol=1e-5, rtol=1e-5)
