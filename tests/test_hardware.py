from __future__ import annotations

from functools import partial

import pytest
import torch

from metarun.algorithms import MAML, ProtoNet
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.hardware import Hardware, Runtime
from metarun.models import Conv4

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cpu_runs_in_full_precision() -> None:
    runtime = Hardware(device="cpu", precision="auto").setup()
    assert runtime.device == torch.device("cpu") and runtime.autocast_dtype is None


def test_auto_picks_what_is_there() -> None:
    runtime = Hardware(device="auto").setup()
    assert runtime.device.type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_asking_for_a_missing_gpu_names_the_key() -> None:
    with pytest.raises(ConfigError, match="hardware.device: asks for a GPU"):
        Hardware(device="cuda").setup()


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"device": "tpu"}, "hardware.device"),
        ({"device": "cpu", "precision": "fp8"}, "hardware.precision"),
        ({"device": "cpu", "threads": 0}, "hardware.threads"),
    ],
)
def test_bad_settings_name_their_key(settings: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Hardware(**settings).setup()


def test_autocast_only_where_the_learner_allows_it() -> None:
    runtime = Runtime(torch.device("cpu"), torch.bfloat16)
    with runtime.autocast(True):
        assert torch.is_autocast_enabled("cpu")
    with runtime.autocast(False):
        assert not torch.is_autocast_enabled("cpu")
    with Runtime(torch.device("cpu"), None).autocast(True):
        assert not torch.is_autocast_enabled("cpu")


def test_auto_memory_format_is_the_learners_fastest() -> None:
    task = TaskSpec("classification", (1, 28, 28), 5)
    runtime = Hardware(device="cpu").setup()
    protonet = runtime.place(ProtoNet(partial(Conv4, hidden_channels=4), task))
    maml = runtime.place(MAML(partial(Conv4, hidden_channels=4), task))
    channels_last = torch.channels_last
    assert protonet.encoder.features[0][0].weight.is_contiguous(memory_format=channels_last)
    assert maml.model.features[1][0].weight.is_contiguous()
    assert not maml.model.features[1][0].weight.is_contiguous(memory_format=channels_last)
    with pytest.raises(ConfigError, match="hardware.channels_last"):
        Hardware(device="cpu", channels_last="sometimes").setup()


def test_place_moves_conv_weights_to_channels_last() -> None:
    learner = ProtoNet(
        partial(Conv4, hidden_channels=4), TaskSpec("classification", (1, 28, 28), 5)
    )
    Runtime(torch.device("cpu"), None, channels_last=True).place(learner)
    conv = learner.encoder.features[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)


@needs_gpu
@pytest.mark.gpu
def test_gpu_bf16_protonet_and_fp32_second_order_maml() -> None:
    runtime = Hardware(device="cuda", precision="auto").setup()
    task = TaskSpec("classification", (1, 28, 28), 5)
    for learner in (ProtoNet(partial(Conv4), task), MAML(partial(Conv4), task)):
        runtime.place(learner)
        from metarun.data.episodes import EpisodeBatch

        labels = torch.arange(5, device="cuda")
        batch = EpisodeBatch(
            torch.rand(2, 5, 1, 28, 28, device="cuda"),
            labels.expand(2, -1),
            torch.rand(2, 10, 1, 28, 28, device="cuda"),
            labels.repeat(2).expand(2, -1),
            5,
        )
        with runtime.autocast(learner.autocast_safe):
            loss, _ = learner.meta_loss(batch)
        loss.backward()
        assert torch.isfinite(loss)
        expected = torch.float32
        assert loss.dtype == expected  # losses are computed in fp32 even under autocast
