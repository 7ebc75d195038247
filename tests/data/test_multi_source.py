"""``dataset=multi`` (``metarun.data.multi_source``): sources keep their splits and
normalisation, held-out sources only test, every source gets its own balanced fixed episodes, the
shared channels and global class numbers hold, and bad compositions are one line."""

from __future__ import annotations

import pytest
import torch
from tiny_images import TinyImages

from metarun.data.episodes import EpisodeList, FixedEpisodes
from metarun.data.multi_source import MultiSource, to_channels
from metarun.errors import ConfigError
from metarun.training.evaluate import per_source

TINY = "tiny_images.TinyImages"
SHAPE = {"min_ways": 2, "max_ways": 4, "max_query": 2, "max_support": 8}


def multi(**changes) -> MultiSource:
    settings = {
        "sources": {
            "grey": {"_target_": TINY, "classes": 8, "image_size": 8, "normalize": False},
            "colour": {
                "_target_": TINY,
                "classes": 5,
                "channels": 3,
                "image_size": 8,
                "normalize": False,
            },
        },
        "held_out": ["colour"],
        "image_size": 8,
        "channels": 1,
        "variable": SHAPE,
    }
    return MultiSource(**{**settings, **changes})


def test_held_out_sources_never_train_or_validate_but_test() -> None:
    data = multi()
    train = data.sampler("train", data.episodes)
    plan = train.draw(40, torch.Generator().manual_seed(0))
    assert set(train.source_of(plan).tolist()) == {0}
    val = FixedEpisodes(data.sampler("val", data.episodes), 5, seed=0)
    assert len(val) == 5 and set(val.sampler.source_of(val.plan).tolist()) == {0}
    test = FixedEpisodes(data.sampler("test", data.episodes), 5, seed=1)
    assert len(test) == 10  # five per source
    assert test.sampler.source_of(test.plan).tolist() == [0] * 5 + [1] * 5
    assert data.class_count("train") == 8 and data.class_count("test") == 13


def test_training_draws_the_source_of_each_episode_uniformly() -> None:
    data = multi(held_out=[])
    train = data.sampler("train", data.episodes)
    sources = train.source_of(train.draw(2000, torch.Generator().manual_seed(1)))
    assert abs(float(sources.float().mean()) - 0.5) < 0.04


def test_episodes_are_in_the_shared_channels_with_global_classes() -> None:
    data = multi(held_out=[])
    test = data.sampler("test", data.episodes)
    batch = test.gather(test.draw(3, torch.Generator().manual_seed(2)))
    assert isinstance(batch, EpisodeList) and len(batch) == 6
    for number, episode in enumerate(batch.episodes):
        assert episode.support_x.shape[2:] == (1, 8, 8)
        pixel = episode.support_x[0, :, 0, 0, 0]  # class c: 20 + c in 1/255 (test split)
        own = episode.classes[0][episode.support_y[0]]
        offset = 0 if number < 3 else 8  # the colour source's classes follow the grey ones
        assert torch.equal((pixel * 255).round().long(), own - offset + 20)


def test_fixed_shapes_gather_one_batch() -> None:
    data = multi(variable=False, ways=3, shots=1, queries=2, held_out=[])
    test = data.sampler("test", data.episodes)
    batch = test.gather(test.draw(2, torch.Generator().manual_seed(3)))
    assert batch.support_x.shape == (4, 3, 1, 8, 8) and batch.query_x.shape == (4, 6, 1, 8, 8)


def test_grey_is_repeated_and_colour_averaged() -> None:
    grey = torch.rand(2, 1, 4, 4)
    assert torch.equal(to_channels(grey, 3), grey.expand(2, 3, 4, 4))
    colour = torch.rand(2, 3, 4, 4)
    luma = 0.299 * colour[:, 0] + 0.587 * colour[:, 1] + 0.114 * colour[:, 2]
    torch.testing.assert_close(to_channels(colour, 1)[:, 0], luma)


def test_results_are_kept_per_source_with_the_held_out_ones_marked() -> None:
    data = multi()
    test = FixedEpisodes(data.sampler("test", data.episodes), 4, seed=0)
    scores = torch.tensor([10.0, 20, 30, 40, 50, 50, 50, 50], dtype=torch.float64)
    results = per_source(test, scores)
    assert results["grey"]["mean"] == 25.0 and not results["grey"]["held_out"]
    assert results["colour"] == {"mean": 50.0, "ci95": 0.0, "episodes": 4, "held_out": True}


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"held_out": ["sketches"]}, "dataset.held_out"),
        ({"held_out": ["grey", "colour"]}, "dataset.held_out"),
        ({"sources": {}}, "dataset.sources"),
        ({"channels": 2}, "dataset.channels"),
        (
            {
                "sources": {"grey": {"_target_": TINY, "image_size": 8, "ways": 9}},
                "held_out": [],
                "variable": False,
                "ways": 9,
            },
            "dataset.sources.grey.ways",
        ),
        ({"sources": {"grey": {"classes": 3}}, "held_out": []}, "dataset.sources.grey"),
    ],
)
def test_bad_compositions_are_one_line_naming_the_key(changes, key) -> None:
    with pytest.raises(ConfigError) as raised:
        data = multi(**changes)
        data.sampler("train", data.episodes)
    assert raised.value.key == key, raised.value


def test_augmentation_with_variable_episodes_is_one_line() -> None:
    with pytest.raises(ConfigError) as raised:
        TinyImages(variable=True, augment={"flip": True})
    assert raised.value.key == "dataset.augment"
