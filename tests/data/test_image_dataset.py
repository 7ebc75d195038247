"""The image data set base: normalisation, its checkpointed state, placement, group episodes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from metarun.data.episodes import ClassImages, EpisodeSpec
from metarun.data.image_dataset import ImageDataset
from metarun.data.images import ImageFormat, Normalization
from metarun.errors import ConfigError


class InMemory(ImageDataset):
    """Three splits of random RGB images; training images are brighter than the others."""

    def __init__(self, **options: object) -> None:
        super().__init__(ImageFormat(size=4, channels=3), **options)
        self.loads = 0

    def load_splits(self) -> dict[str, ClassImages]:
        self.loads += 1
        g = torch.Generator().manual_seed(0)

        def split(low: int, groups: list[str]) -> ClassImages:
            images = torch.randint(low, 256, (len(groups) * 3, 3, 4, 4), generator=g)
            names = [f"{group}/c{i}" for i, group in enumerate(groups)]
            return ClassImages(images.to(torch.uint8), torch.full((len(groups),), 3), names)

        return {
            "train": split(100, ["a", "a", "a", "b", "b", "b"]),
            "val": split(0, ["c", "c", "d"]),
            "test": split(0, ["e", "e", "f"]),
        }


def test_normalisation_is_measured_on_the_training_split() -> None:
    data = InMemory(ways=2)
    norm = data.normalization
    train = data.classes("train").images.double() / 255
    expected_mean = train.mean(dim=(0, 2, 3))
    expected_std = train.permute(1, 0, 2, 3).flatten(1).std(dim=1, unbiased=False)
    torch.testing.assert_close(torch.tensor(norm.mean, dtype=torch.float64), expected_mean)
    torch.testing.assert_close(torch.tensor(norm.std, dtype=torch.float64), expected_std)
    batch = data.sampler("train", EpisodeSpec(2, 1, 2)).gather(
        data.sampler("train", EpisodeSpec(2, 1, 2)).draw(200, torch.Generator())
    )
    assert abs(float(batch.query_x.mean())) < 0.1  # training inputs are centred ...
    test = data.sampler("test", EpisodeSpec(2, 1, 2))
    assert (
        float(test.gather(test.draw(50, torch.Generator())).query_x.mean()) < -0.5
    )  # ... test not


def test_configured_statistics_and_none() -> None:
    data = InMemory(ways=2, mean=0.5, std=[0.25, 0.5, 1.0])
    assert data.normalization == Normalization((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))
    pixels = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    torch.testing.assert_close(data.decoder(pixels)[0, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))
    assert data.loads == 0  # configured statistics need no data
    assert InMemory(ways=2, normalize=False).normalization is None


def test_the_state_carries_measured_statistics_to_a_rebuilt_data_set() -> None:
    trained = InMemory(ways=2)
    state = trained.state_dict()
    rebuilt = InMemory(ways=2)
    rebuilt.load_state_dict(state)
    assert rebuilt.normalization == trained.normalization and rebuilt.loads == 0
    image = Image.new("RGB", (8, 8), (255, 0, 128))
    assert torch.equal(rebuilt.preprocess(image), trained.preprocess(image))
    expected = trained.decoder(trained.image_format.encode(image))
    assert torch.equal(trained.preprocess(image), expected)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"mean": 0.5}, "dataset.std"),
        ({"std": 0.5}, "dataset.mean"),
        ({"mean": 0.5, "std": 0.0}, "dataset.std"),
        ({"placement": "gpu"}, "dataset.placement"),
    ],
)
def test_bad_settings_name_their_key(options: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        InMemory(**options)
    assert info.value.key == key


def test_placement_on_the_cpu_and_host_gathering() -> None:
    data = InMemory(ways=2, placement="host")
    sampler = data.place(data.sampler("train", EpisodeSpec(2, 1, 1)), torch.device("cpu"))
    assert sampler.device == torch.device("cpu")
    on_device = InMemory(ways=2).place(
        InMemory(ways=2).sampler("train", EpisodeSpec(2, 1, 1)), torch.device("cpu")
    )
    plan = sampler.draw(4, torch.Generator().manual_seed(0))
    assert torch.equal(sampler.gather(plan).support_x, on_device.gather(plan).support_x)
    assert sampler.nbytes == 18 * 3 * 4 * 4


def test_within_group_episodes_and_groups_too_small() -> None:
    data = InMemory(ways=3, within_group=True)
    sampler = data.sampler("train", EpisodeSpec(3, 1, 1))
    plan = sampler.draw(100, torch.Generator().manual_seed(0))
    groups = sampler.classes.groups
    for episode in plan:
        assert len({groups[int(row) // 3] for row in episode[:, 0]}) == 1
    assert {groups[int(e[0, 0]) // 3] for e in plan} == {"a", "b"}  # both groups drawn
    with pytest.raises(ConfigError, match=r"^dataset\.ways: within-group 3-way .* has 2"):
        data.sampler("val", EpisodeSpec(3, 1, 1))
