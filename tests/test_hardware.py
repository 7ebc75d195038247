from __future__ import annotations

import socket
from functools import partial

import pytest
import torch

from metarun import distributed
from metarun.algorithms import MAML, ProtoNet
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.hardware import DistributedHardware, Hardware, Runtime
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


# -- Several processes (hardware=ddp); two real processes: tests/test_distributed.py --------


def test_a_world_of_one_makes_every_collective_a_no_op() -> None:
    runtime = Hardware(device="cpu").setup()
    assert (runtime.rank, runtime.world_size, runtime.is_main) == (0, 1, True)
    assert runtime.shard(7) == slice(0, 7)
    grads = [torch.ones(3), torch.zeros(2, dtype=torch.float64)]
    runtime.all_reduce_mean_(grads)
    assert torch.equal(grads[0], torch.ones(3)) and torch.equal(grads[1], torch.zeros(2).double())
    scores = torch.arange(4.0)
    assert runtime.concat_shards(scores, 4) is scores
    assert runtime.any_rank(True) and not runtime.any_rank(False)
    assert runtime.broadcast_object("mine") == "mine"
    assert runtime.decide_on_main(lambda: 3) == 3
    with runtime.main_first():
        runtime.barrier()
    runtime.check_same_everywhere([torch.ones(2)], "weights")
    assert not torch.distributed.is_initialized()  # nothing above needed a process group


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_shards_are_contiguous_balanced_and_cover_everything(world_size: int) -> None:
    for count in (0, 1, 5, 12):
        ranks = [
            Runtime(torch.device("cpu"), None, rank=r, world_size=world_size)
            for r in range(world_size)
        ]
        parts = [list(range(count))[runtime.shard(count)] for runtime in ranks]
        assert [i for part in parts for i in part] == list(range(count))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_ddp_without_a_launcher_says_how_to_start_it(monkeypatch) -> None:
    for name in distributed.LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match=r"^hardware: ddp needs .* torchrun --nproc_per_node="):
        DistributedHardware().setup()


@pytest.fixture
def world_of_one(monkeypatch: pytest.MonkeyPatch):
    """The environment torchrun gives a single process; the process group is left at the end."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_PORT": str(port)}
    for name, value in {**environment, "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, value)
    yield
    distributed.shutdown()


def test_ddp_on_a_cpu_joins_a_gloo_group(world_of_one) -> None:
    runtime = DistributedHardware(device="cpu", precision="auto").setup()
    assert runtime.device == torch.device("cpu") and runtime.autocast_dtype is None
    assert (runtime.rank, runtime.world_size, runtime.is_main) == (0, 1, True)
    assert torch.distributed.get_backend() == "gloo"
    assert DistributedHardware(device="cpu").setup() == runtime  # joining again is harmless


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the choice without a GPU")
def test_auto_ddp_without_gpus_is_the_cpu_with_gloo(world_of_one) -> None:
    assert DistributedHardware().setup().device == torch.device("cpu")
    assert torch.distributed.get_backend() == "gloo"


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"device": "cuda:1"}, "hardware.device"),
        ({"device": "cpu", "backend": "mpi"}, "hardware.backend"),
        ({"device": "cpu", "backend": "nccl"}, "hardware.backend"),
    ],
)
def test_bad_ddp_settings_name_their_key(world_of_one, settings: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        DistributedHardware(**settings).setup()
    assert not torch.distributed.is_initialized()
