"""Where the decoded images live (``dataset.placement``) and what ``EpisodeSampler.gather`` then
does: on the device, episodes are indexed there; on the host, each episode's pixels are gathered
into pinned memory and copied asynchronously. Either way the episodes must be the CPU's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from metarun.data.episodes import ClassImages, EpisodeBatch, EpisodeSampler, EpisodeSpec
from metarun.data.image_dataset import ImageDataset, keeps_on_host
from metarun.data.images import ImageFormat

SPEC = EpisodeSpec(ways=3, shots=1, queries=2)
AUGMENT = {"flip": True, "crop_padding": 2}
FIELDS = ("support_x", "support_y", "query_x", "query_y", "classes")

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# "cuda" is what hardware=gpu and hardware=auto hand the data (Runtime.device has no index).
GPU_DEVICES = pytest.mark.parametrize("device", ["cuda", "cuda:0"])


class Synthetic(ImageDataset):
    """Random 8x8 RGB images, 5 classes of 4 per split; normalised with measured statistics."""

    def __init__(self, **options: object) -> None:
        super().__init__(ImageFormat(size=8, channels=3), **options)

    def load_splits(self) -> dict[str, ClassImages]:
        g = torch.Generator().manual_seed(0)

        def split() -> ClassImages:
            images = torch.randint(0, 256, (20, 3, 8, 8), generator=g, dtype=torch.uint8)
            return ClassImages(images, torch.full((5,), 4), [f"c{i}" for i in range(5)])

        return {"train": split(), "val": split(), "test": split()}


def samplers(data: Synthetic, device: str) -> tuple[EpisodeSampler, EpisodeSampler]:
    """The training sampler placed for ``device`` by the data set's rule, and one left on the
    CPU as the reference (same images, same normalisation)."""
    placed = data.place(data.sampler("train", SPEC), torch.device(device))
    return placed, data.sampler("train", SPEC)


def plan_of(sampler: EpisodeSampler, count: int = 8) -> Tensor:
    return sampler.draw(count, torch.Generator().manual_seed(0))


def assert_same_episodes(batch: EpisodeBatch, reference: EpisodeBatch, device: str) -> None:
    """``batch`` holds ``reference``'s episodes with every tensor on ``device``. Pixels agree to
    rounding, not bit for bit: CUDA divides by a scalar (``/ 255``) as a multiplication by its
    reciprocal; one intensity level apart is 1/255/std, over 1000 times the tolerance."""
    where = torch.empty(0, device=device).device  # "cuda" resolved to the current GPU
    for name in FIELDS:
        got, want = getattr(batch, name), getattr(reference, name)
        assert got.device == where, (name, got.device)
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if got.is_floating_point():
            torch.testing.assert_close(got.cpu(), want, rtol=0, atol=1e-5, msg=name)
        else:
            assert torch.equal(got.cpu(), want), name


def spy_on_pinning(monkeypatch: pytest.MonkeyPatch) -> list[Tensor]:
    """Every tensor that ``Tensor.pin_memory`` returns from now on, behaviour unchanged."""
    pinned: list[Tensor] = []
    pin_memory = torch.Tensor.pin_memory

    def spy(self: Tensor, *args, **kwargs) -> Tensor:
        result = pin_memory(self, *args, **kwargs)
        pinned.append(result)
        return result

    monkeypatch.setattr(torch.Tensor, "pin_memory", spy)
    return pinned


def fake_device_memory(monkeypatch: pytest.MonkeyPatch, total: int) -> list:
    """Make every device report ``total`` bytes of memory; returns the devices asked about."""
    asked: list = []

    def properties(device):
        asked.append(device)
        return SimpleNamespace(total_memory=total)

    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    return asked


# -- The rule and the host path, on the CPU ------------------------------------------------


def test_auto_keeps_the_images_on_the_host_only_past_a_quarter_of_device_memory(
    monkeypatch,
) -> None:
    """``auto`` puts a split's images on the GPU while they take at most a quarter of its
    memory, asking about the run's own GPU; ``device`` and ``host`` are what they say, and a
    CPU run keeps its images where they are, asking nothing."""
    sampler = Synthetic().sampler("train", SPEC)
    size = sampler.nbytes
    assert size == 20 * 3 * 8 * 8
    second_gpu = torch.device("cuda", 1)
    asked = fake_device_memory(monkeypatch, total=4 * size)
    assert not keeps_on_host("auto", sampler, second_gpu)  # exactly a quarter still fits
    assert asked == [second_gpu]
    fake_device_memory(monkeypatch, total=4 * size - 1)
    assert keeps_on_host("auto", sampler, second_gpu)
    assert not keeps_on_host("device", sampler, second_gpu)
    assert keeps_on_host("host", sampler, second_gpu)
    asked = fake_device_memory(monkeypatch, total=0)
    assert not keeps_on_host("auto", sampler, torch.device("cpu"))
    assert not keeps_on_host("device", sampler, torch.device("cpu")) and asked == []


def test_host_placement_on_the_cpu_gives_the_same_augmented_episodes_unpinned(
    monkeypatch,
) -> None:
    """On a CPU run ``placement: host`` leaves the cache as it is and changes no episode, and
    nothing is pinned: pinned buffers only serve copies to a GPU."""
    pinned = spy_on_pinning(monkeypatch)
    data = Synthetic(placement="host", augment=AUGMENT)
    host, reference = samplers(data, "cpu")
    assert host._images is data.classes("train").images
    plan = plan_of(reference)
    assert plan.shape[-1] == 4  # index, flip, crop offsets
    assert_same_episodes(host.gather(plan), reference.gather(plan), "cpu")
    on_device = Synthetic(placement="device", augment=AUGMENT)
    assert_same_episodes(samplers(on_device, "cpu")[0].gather(plan), host.gather(plan), "cpu")
    assert pinned == []


# -- On a GPU --------------------------------------------------------------------------------


@needs_gpu
@pytest.mark.gpu
@GPU_DEVICES
@pytest.mark.parametrize("placement", ["device", "auto"])
def test_device_placement_keeps_the_uint8_cache_on_the_gpu_and_gathers_the_cpu_episodes(
    placement: str, device: str
) -> None:
    """``placement: device``, and ``auto`` for a cache of a few KiB, move the uint8 images to
    the GPU once; episodes are gathered and normalised there, to the CPU's values."""
    data = Synthetic(placement=placement)
    sampler, reference = samplers(data, device)
    assert sampler._images.device.type == "cuda" and sampler._images.dtype == torch.uint8
    assert data.classes("train").images.device.type == "cpu"  # the reference stays put
    plan = plan_of(reference)
    batch = sampler.gather(plan)
    torch.cuda.synchronize()
    expected = reference.gather(plan)
    assert_same_episodes(batch, expected, device)
    norm = data.normalization  # measured on the training split, so not the identity
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (norm.mean, norm.std))
    raw = data.classes("train").images[plan[:, :, 0]].float() / 255  # each class's support
    torch.testing.assert_close(batch.support_x.cpu(), (raw - mean) / std, rtol=0, atol=1e-5)


@needs_gpu
@pytest.mark.gpu
@GPU_DEVICES
@pytest.mark.parametrize(
    ("placement", "device_memory"),
    [("host", None), ("auto", 1024)],  # 1 KiB: the 11 KiB cache is over a quarter of it
    ids=["host", "auto-over-a-quarter"],
)
def test_host_placement_gathers_into_pinned_memory_and_copies_to_the_gpu(
    placement: str, device_memory: int | None, device: str, monkeypatch
) -> None:
    """``placement: host``, and ``auto`` for a cache over a quarter of the GPU's memory, keep
    the images in host memory: each episode's uint8 pixels are gathered there into a pinned
    buffer, copied asynchronously, and decoded on the GPU to the CPU's values."""
    if device_memory is not None:
        fake_device_memory(monkeypatch, total=device_memory)
    data = Synthetic(placement=placement)
    sampler, reference = samplers(data, device)
    assert sampler._images is data.classes("train").images  # never moved
    pinned = spy_on_pinning(monkeypatch)
    plan = plan_of(reference)
    batch = sampler.gather(plan)
    torch.cuda.synchronize()  # the copy was non_blocking: finish it before comparing
    assert len(pinned) == 1, "one pinned gather per episode batch"
    (copied,) = pinned
    assert copied.device.type == "cpu" and copied.is_pinned() and copied.dtype == torch.uint8
    assert torch.equal(copied, data.classes("train").images[plan])  # the episodes' raw pixels
    assert_same_episodes(batch, reference.gather(plan), device)


@needs_gpu
@pytest.mark.gpu
@GPU_DEVICES
@pytest.mark.parametrize("placement", ["device", "host"])
def test_flips_and_crops_on_the_gpu_give_the_cpu_pixels(placement: str, device: str) -> None:
    """Training augmentation runs where the episode is (on the GPU, after the copy for host
    placement) and gives the CPU's pixels for the same plan."""
    data = Synthetic(placement=placement, augment=AUGMENT)
    sampler, reference = samplers(data, device)
    plan = plan_of(reference, count=16)
    flips, offsets = plan[..., 1], plan[..., 2:]
    assert flips.any() and (offsets != AUGMENT["crop_padding"]).any()  # something to do
    batch = sampler.gather(plan)
    torch.cuda.synchronize()
    expected = reference.gather(plan)
    assert_same_episodes(batch, expected, device)
    unaugmented = reference.gather(plan[..., 0])
    assert not torch.allclose(expected.support_x, unaugmented.support_x)
