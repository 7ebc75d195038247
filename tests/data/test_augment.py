"""Training augmentation: crops and flips pinned pixel by pixel, and drawn in the episode plan."""

from __future__ import annotations

import pytest
import torch

from metarun.data.augment import Augmentation
from metarun.data.episodes import ClassImages, EpisodeSampler, EpisodeSpec
from metarun.errors import ConfigError


def numbered(count: int, size: int = 5) -> torch.Tensor:
    """``[count, 2, size, size]`` images whose pixels are 1 + their position, per channel."""
    grid = torch.arange(1, size * size + 1).view(size, size)
    return torch.stack([torch.stack([grid, grid + 100]) for _ in range(count)])


def test_a_crop_is_a_window_of_the_zero_padded_image() -> None:
    augmentation = Augmentation(crop_padding=2)
    images = numbered(3)
    choices = torch.tensor([[0, 0, 0], [0, 2, 2], [0, 4, 1]])  # (flip, row, column)
    out = augmentation.apply(images, choices)
    padded = torch.nn.functional.pad(images, (2, 2, 2, 2))
    assert torch.equal(out[0], padded[0, :, 0:5, 0:5])
    assert torch.equal(out[1], images[1])  # offset (2, 2) is the original image
    assert torch.equal(out[2], padded[2, :, 4:9, 1:6])
    assert out[2][:, -2:].eq(0).all()  # rows from the bottom padding are zero


def test_a_flip_mirrors_left_to_right_only_where_chosen() -> None:
    augmentation = Augmentation(flip=True)
    images = numbered(2)
    out = augmentation.apply(images, torch.tensor([[1, 0, 0], [0, 0, 0]]))
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])


def test_choices_cover_the_ranges_and_follow_the_generator() -> None:
    augmentation = Augmentation(flip=True, crop_padding=3)
    choices = augmentation.draw((400,), torch.Generator().manual_seed(0))
    assert set(choices[:, 0].tolist()) == {0, 1}
    assert set(choices[:, 1].tolist()) == set(range(7)) == set(choices[:, 2].tolist())
    again = augmentation.draw((400,), torch.Generator().manual_seed(0))
    assert torch.equal(choices, again)
    assert Augmentation(crop_padding=3).draw((50,), torch.Generator())[:, 0].eq(0).all()


def test_the_sampler_augments_what_its_plan_says() -> None:
    images = numbered(12, size=6).to(torch.uint8)[:, :1]
    classes = ClassImages(images, torch.tensor([4, 4, 4]), ["a", "b", "c"])
    augmentation = Augmentation(flip=True, crop_padding=1)
    sampler = EpisodeSampler(
        classes, EpisodeSpec(2, 1, 1), lambda x: x.float(), augmentation=augmentation
    )
    plan = sampler.draw(5, torch.Generator().manual_seed(3))
    assert plan.shape == (5, 2, 2, 4)
    batch = sampler.gather(plan)
    first = plan[0, 0, 0]  # the first support image of the first episode
    expected = augmentation.apply(images[first[0] : first[0] + 1], first[None, 1:])[0].float()
    assert torch.equal(batch.support_x[0, 0], expected)
    # The same plan gives the same episodes: augmentation is reproducible and resumable.
    assert torch.equal(sampler.gather(plan).query_x, batch.query_x)


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ({"flip": True, "rotate": 3}, "dataset.augment.rotate"),
        ({"crop_padding": -1}, "dataset.augment.crop_padding"),
        ({"crop_padding": 1.5}, "dataset.augment.crop_padding"),
        ("flip", "dataset.augment"),
    ],
)
def test_bad_augmentation_settings_name_their_key(value: object, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Augmentation.from_config(value)
    assert info.value.key == key


def test_no_augmentation_is_none() -> None:
    assert Augmentation.from_config(None) is None
    assert Augmentation.from_config({"flip": False, "crop_padding": 0}) is None
    assert Augmentation.from_config({"flip": True}) == Augmentation(flip=True)
