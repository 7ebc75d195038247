"""Conv-4's feature-map options (Relation Networks' encoder): how many blocks pool, each block's
padding, and whether the output is flattened. The defaults keep the standard Conv-4
(tests/models/test_backbones.py)."""

from __future__ import annotations

import pytest
import torch

from metarun.errors import ConfigError
from metarun.models import Conv4

RELATION_ENCODER = {"pool_blocks": 2, "padding": [0, 0, 1, 1], "flatten": False}


@pytest.mark.parametrize(
    ("shape", "maps"), [((1, 28, 28), (64, 5, 5)), ((3, 84, 84), (64, 19, 19))]
)
def test_the_relation_encoder_keeps_feature_maps(shape, maps) -> None:
    model = Conv4(shape, None, **RELATION_ENCODER)
    assert model.output_shape == maps and model.embedding_size == 64 * maps[1] * maps[2]
    assert model(torch.rand(2, *shape)).shape == (2, *maps)
    kinds = [[type(layer).__name__ for layer in block] for block in model.features]
    assert (
        kinds
        == [["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]] * 2
        + [["Conv2d", "BatchNorm2d", "ReLU"]] * 2
    )
    assert [block[0].padding for block in model.features] == [(0, 0), (0, 0), (1, 1), (1, 1)]


def test_the_defaults_are_the_standard_conv4_with_the_same_parameter_names() -> None:
    model = Conv4((1, 28, 28), None)
    assert model.output_shape == (64, 1, 1) and model(torch.rand(2, 1, 28, 28)).shape == (2, 64)
    maps = Conv4((1, 28, 28), None, **RELATION_ENCODER)
    assert model.state_dict().keys() == maps.state_dict().keys()  # checkpoints keep their keys


def test_an_unflattened_output_is_the_flattened_one_reshaped() -> None:
    torch.manual_seed(0)
    flat = Conv4((1, 16, 16), None, hidden_channels=4, pool_blocks=3).eval()
    maps = Conv4((1, 16, 16), None, hidden_channels=4, pool_blocks=3, flatten=False).eval()
    maps.load_state_dict(flat.state_dict())
    x = torch.rand(3, 1, 16, 16)
    assert maps(x).shape == (3, 4, 2, 2)
    torch.testing.assert_close(maps(x).flatten(1), flat(x))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"pool_blocks": 5}, "model.pool_blocks"),
        ({"pool_blocks": -1}, "model.pool_blocks"),
        ({"padding": [0, 1]}, "model.padding"),
        ({"padding": -1}, "model.padding"),
    ],
)
def test_bad_options_name_their_key(options, key) -> None:
    with pytest.raises(ConfigError, match=f"^{key}: "):
        Conv4((1, 28, 28), None, **options)


def test_a_classifier_head_needs_a_flat_output() -> None:
    with pytest.raises(ConfigError, match="model.flatten"):
        Conv4((1, 28, 28), 5, flatten=False)


def test_maps_that_vanish_are_refused() -> None:
    with pytest.raises(ValueError, match="vanish in block 2"):
        Conv4((1, 8, 8), None, pool_blocks=2, padding=0)
