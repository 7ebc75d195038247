"""Episode sampling from class-indexed images: shapes, labels, seeding and fixed sets."""

from __future__ import annotations

import pytest
import torch

from metarun.data.episodes import (
    ClassImages,
    EpisodeBatch,
    EpisodeSampler,
    EpisodeSpec,
    FixedEpisodes,
    FixedTrainingEpisodes,
    check_episode_fits,
    sample,
)
from metarun.data.images import ImageFormat
from metarun.errors import ConfigError

DECODE = ImageFormat(size=4, channels=1, invert=True).decode


def tagged_classes(counts: list[int], size: int = 4) -> ClassImages:
    """Images whose pixels say where they come from: [0,0,0] is the class, [0,0,1] the index
    within the class and [0,1,0] the global row, so any gathered image can be traced back."""
    total = sum(counts)
    images = torch.randint(
        0, 256, (total, 1, size, size), generator=torch.Generator().manual_seed(1)
    )
    images = images.to(torch.uint8)
    row = 0
    for c, n in enumerate(counts):
        for i in range(n):
            images[row, 0, 0, 0] = c
            images[row, 0, 0, 1] = i
            images[row, 0, 1, 0] = row
            row += 1
    names = [f"Alphabet/character{c + 1:02d}" for c in range(len(counts))]
    return ClassImages(images, torch.tensor(counts), names)


def raw(decoded: torch.Tensor) -> torch.Tensor:
    """Undo ``DECODE`` (inverting) to recover the stored uint8 tags."""
    return torch.round((1.0 - decoded) * 255.0).to(torch.long)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- shapes and labels


@pytest.mark.parametrize(("ways", "shots", "queries", "batch"), [(5, 1, 15, 4), (3, 5, 2, 2)])
def test_sampler_shapes_labels_and_dtype(ways: int, shots: int, queries: int, batch: int) -> None:
    classes = tagged_classes([20] * 8)
    sampler = EpisodeSampler(classes, EpisodeSpec(ways, shots, queries), DECODE)

    episodes = sample(sampler, batch, gen(0))

    assert isinstance(episodes, EpisodeBatch)
    assert len(episodes) == batch and episodes.ways == ways
    assert episodes.support_x.shape == (batch, ways * shots, 1, 4, 4)
    assert episodes.query_x.shape == (batch, ways * queries, 1, 4, 4)
    assert episodes.support_y.shape == (batch, ways * shots)
    assert episodes.query_y.shape == (batch, ways * queries)
    for x in (episodes.support_x, episodes.query_x):
        assert x.dtype == torch.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
    for y, per_class in ((episodes.support_y, shots), (episodes.query_y, queries)):
        assert y.dtype == torch.long
        for b in range(batch):
            assert torch.equal(torch.bincount(y[b], minlength=ways), torch.full((ways,), per_class))
            assert int(y[b].min()) == 0 and int(y[b].max()) == ways - 1


def test_gathered_images_are_the_planned_rows_decoded() -> None:
    classes = tagged_classes([6, 6, 6, 6])
    spec = EpisodeSpec(ways=3, shots=2, queries=1)
    sampler = EpisodeSampler(classes, spec, DECODE)

    plan = sampler.draw(5, gen(3))
    episodes = sampler.gather(plan)

    expected = DECODE(classes.images[plan])  # [B, N, K+Q, C, H, W]
    assert torch.equal(episodes.support_x, expected[:, :, :2].reshape(5, 6, 1, 4, 4))
    assert torch.equal(episodes.query_x, expected[:, :, 2:].reshape(5, 3, 1, 4, 4))


def test_support_and_query_of_a_label_share_one_class_without_repeats() -> None:
    counts = [7, 7, 7, 7, 7, 7]
    classes = tagged_classes(counts)
    spec = EpisodeSpec(ways=4, shots=3, queries=4)  # K + Q = 7: every image of a class is used
    sampler = EpisodeSampler(classes, spec, DECODE)

    plan = sampler.draw(50, gen(7))
    assert plan.shape == (50, 4, 7)
    assert plan.dtype == torch.long
    for episode in plan:
        classes_used = []
        for row in episode:
            assert len(set(row.tolist())) == 7, "an image repeats within an episode"
            c = int(torch.searchsorted(classes.offsets, row[0], right=True)) - 1
            start, stop = int(classes.offsets[c]), int(classes.offsets[c] + classes.counts[c])
            assert all(start <= i < stop for i in row.tolist()), "row leaves its class"
            classes_used.append(c)
        assert len(set(classes_used)) == 4, "a class appears twice in one episode"

    # The same holds for the tensors: every label's support and query carry one class tag.
    episodes = sampler.gather(plan)
    for b in range(50):
        support_tags = raw(episodes.support_x[b, :, 0, 0, 0]).view(4, 3)
        query_tags = raw(episodes.query_x[b, :, 0, 0, 0]).view(4, 4)
        for label in range(4):
            tags = set(support_tags[label].tolist()) | set(query_tags[label].tolist())
            assert len(tags) == 1
        rows = torch.cat(
            [raw(episodes.support_x[b, :, 0, 1, 0]), raw(episodes.query_x[b, :, 0, 1, 0])]
        )
        assert len(set(rows.tolist())) == rows.numel()
        # Labels follow the class order of the plan.
        assert support_tags[:, 0].tolist() == [
            int(torch.searchsorted(classes.offsets, plan[b, j, 0], right=True)) - 1
            for j in range(4)
        ]


def test_episodes_name_the_split_class_of_each_way() -> None:
    classes = tagged_classes([3, 5, 4, 6, 5])  # ragged, so offsets are not multiples
    sampler = EpisodeSampler(classes, EpisodeSpec(ways=3, shots=1, queries=2), DECODE)

    episodes = sample(sampler, 20, gen(4))

    assert episodes.classes is not None and episodes.classes.shape == (20, 3)
    support_tags = raw(episodes.support_x[:, :, 0, 0, 0])  # [B, N] with one shot
    assert torch.equal(episodes.classes, support_tags)
    moved = episodes.to("cpu")
    assert torch.equal(moved.classes, episodes.classes)


def test_sampling_covers_every_class_and_image() -> None:
    classes = tagged_classes([5, 5, 5, 5, 5, 5, 5, 5])
    sampler = EpisodeSampler(classes, EpisodeSpec(ways=2, shots=1, queries=1), DECODE)
    plan = sampler.draw(2000, gen(0))
    assert set(plan.flatten().tolist()) == set(range(40))
    # Support position 0 is not always the first image of its class.
    within = (
        plan[:, :, 0]
        - classes.offsets[
            torch.searchsorted(classes.offsets, plan[:, :, 0].contiguous(), right=True) - 1
        ]
    )
    assert set(within.flatten().tolist()) == set(range(5))


def test_ragged_classes_never_pick_beyond_a_class() -> None:
    counts = [3, 9, 4, 12, 5, 3]
    classes = tagged_classes(counts)
    sampler = EpisodeSampler(classes, EpisodeSpec(ways=4, shots=1, queries=2), DECODE)

    plan = sampler.draw(3000, gen(11))
    owner = torch.searchsorted(classes.offsets, plan, right=True) - 1  # class of every index
    assert torch.equal(owner, owner[..., :1].expand_as(owner)), "an episode row mixes classes"
    within = plan - classes.offsets[owner]
    assert bool((within >= 0).all())
    assert bool((within < classes.counts[owner]).all()), "picked past the end of a class"
    # And the large classes are used in full, not truncated to the smallest class.
    for c, n in enumerate(counts):
        assert set(within[owner == c].tolist()) == set(range(n))

    episodes = sampler.gather(plan[:100])
    tags_class = raw(episodes.support_x[..., 0, 0, 0])
    tags_within = raw(episodes.support_x[..., 0, 0, 1])
    assert bool((tags_within < torch.tensor(counts)[tags_class]).all())


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_plan_and_tensors_different_seed_different() -> None:
    classes = tagged_classes([10] * 12)
    sampler = EpisodeSampler(classes, EpisodeSpec(5, 2, 3), DECODE)

    plan_a, plan_b = sampler.draw(8, gen(42)), sampler.draw(8, gen(42))
    assert torch.equal(plan_a, plan_b)
    a, b = sample(sampler, 8, gen(42)), sample(sampler, 8, gen(42))
    for name in ("support_x", "support_y", "query_x", "query_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))

    plan_c = sampler.draw(8, gen(43))
    assert not torch.equal(plan_a, plan_c)
    assert not torch.equal(sample(sampler, 8, gen(43)).support_x, a.support_x)


def test_drawing_uses_only_the_given_generator() -> None:
    classes = tagged_classes([10] * 6)
    sampler = EpisodeSampler(classes, EpisodeSpec(3, 1, 2), DECODE)
    torch.manual_seed(0)
    first = sampler.draw(4, gen(5))
    global_after = torch.rand(3)
    torch.manual_seed(123)
    second = sampler.draw(4, gen(5))
    torch.manual_seed(0)
    assert torch.equal(first, second), "the global RNG changed the plan"
    assert torch.equal(torch.rand(3), global_after), "drawing consumed the global RNG"


def test_fixed_episodes_do_not_depend_on_batch_size() -> None:
    classes = tagged_classes([8, 10, 9, 8, 12, 8, 11])
    sampler = EpisodeSampler(classes, EpisodeSpec(4, 2, 3), DECODE)
    fixed = FixedEpisodes(sampler, count=10, seed=3)
    assert len(fixed) == 10

    def joined(batch_size: int) -> dict[str, torch.Tensor]:
        batches = list(fixed.batches(batch_size))
        assert [len(b) for b in batches] == [
            min(batch_size, 10 - start) for start in range(0, 10, batch_size)
        ]
        return {
            name: torch.cat([getattr(b, name) for b in batches])
            for name in ("support_x", "support_y", "query_x", "query_y")
        }

    by_3, by_7, by_10 = joined(3), joined(7), joined(10)
    for name in by_3:
        assert by_3[name].shape[0] == 10
        assert torch.equal(by_3[name], by_7[name]) and torch.equal(by_3[name], by_10[name])
    # Iterating again gives the same episodes (the plan is drawn once).
    assert torch.equal(joined(3)["query_x"], by_3["query_x"])


def test_fixed_episodes_reproduce_from_their_seed() -> None:
    classes = tagged_classes([10] * 9)
    sampler = EpisodeSampler(classes, EpisodeSpec(5, 1, 4), DECODE)
    a, b = FixedEpisodes(sampler, 12, seed=9), FixedEpisodes(sampler, 12, seed=9)
    assert torch.equal(a.plan, b.plan)
    assert torch.equal(next(a.batches(12)).support_x, next(b.batches(12)).support_x)
    assert torch.equal(a.plan, sampler.draw(12, gen(9)))
    assert not torch.equal(a.plan, FixedEpisodes(sampler, 12, seed=10).plan)


# --------------------------------------------------------------------------- impossible requests


def test_more_ways_than_classes_is_a_config_error() -> None:
    classes = tagged_classes([10] * 4)
    with pytest.raises(ConfigError) as info:
        EpisodeSampler(classes, EpisodeSpec(5, 1, 1), DECODE, split="val")
    assert info.value.key == "dataset.ways"
    message = str(info.value)
    assert message.startswith("dataset.ways: ")
    assert "4" in message and "5-way" in message and "val" in message
    assert "\n" not in message


def test_shots_plus_queries_beyond_smallest_class_is_a_config_error() -> None:
    classes = tagged_classes([10, 6, 12])
    with pytest.raises(ConfigError) as info:
        EpisodeSampler(classes, EpisodeSpec(2, 3, 4), DECODE)
    message = str(info.value)
    assert "dataset.shots" in info.value.key and "dataset.queries" in info.value.key
    assert "dataset.shots" in message and "dataset.queries" in message
    assert "6" in message  # the smallest class
    assert "\n" not in message
    # Exactly the smallest class size still fits.
    EpisodeSampler(classes, EpisodeSpec(2, 3, 3), DECODE)


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        (EpisodeSpec(0, 1, 1), "dataset.ways"),
        (EpisodeSpec(-2, 1, 1), "dataset.ways"),
        (EpisodeSpec(2, 0, 1), "dataset.shots"),
        (EpisodeSpec(2, 1, 0), "dataset.queries"),
        (EpisodeSpec(2, 1, -1), "dataset.queries"),
    ],
)
def test_zero_or_negative_sizes_are_config_errors(spec: EpisodeSpec, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        EpisodeSampler(tagged_classes([5] * 4), spec, DECODE)
    assert info.value.key == key
    assert "at least 1" in str(info.value)


def test_custom_keys_name_what_the_user_typed() -> None:
    keys = ("algorithm.train_ways", "algorithm.train_shots", "algorithm.train_queries")
    classes = tagged_classes([5] * 4)
    with pytest.raises(ConfigError, match=r"^algorithm\.train_ways: ") as info:
        EpisodeSampler(classes, EpisodeSpec(9, 1, 1), DECODE, keys=keys)
    assert "dataset." not in str(info.value)
    with pytest.raises(ConfigError) as info:
        EpisodeSampler(classes, EpisodeSpec(2, 3, 3), DECODE, keys=keys)
    assert "algorithm.train_shots" in str(info.value)
    assert "algorithm.train_queries" in str(info.value)
    assert "dataset." not in str(info.value)
    with pytest.raises(ConfigError, match=r"^algorithm\.train_shots: "):
        check_episode_fits(classes, EpisodeSpec(2, 0, 3), "train", keys)


# --------------------------------------------------------------------------- ClassImages


def test_class_images_offsets_select_and_concat() -> None:
    classes = tagged_classes([2, 5, 3, 4])
    assert classes.num_classes == 4
    assert classes.offsets.tolist() == [0, 2, 7, 10]

    picked = classes.select([3, 1])
    assert picked.names == [classes.names[3], classes.names[1]]
    assert picked.counts.tolist() == [4, 5]
    assert picked.offsets.tolist() == [0, 4]
    assert torch.equal(picked.images[:4], classes.images[10:14])
    assert torch.equal(picked.images[4:], classes.images[2:7])

    empty = classes.select([])
    assert empty.num_classes == 0 and empty.images.shape[0] == 0

    both = ClassImages.concat([picked, classes.select([0])])
    assert both.names == [classes.names[i] for i in (3, 1, 0)]
    assert both.counts.tolist() == [4, 5, 2]
    assert both.images.shape[0] == int(both.counts.sum()) == 11
    assert torch.equal(both.images[9:], classes.images[0:2])
    # Every class's rows carry its own tag.
    for c, name in enumerate(both.names):
        original = classes.names.index(name)
        rows = both.images[int(both.offsets[c]) : int(both.offsets[c] + both.counts[c])]
        assert set(rows[:, 0, 0, 0].tolist()) == {original}


def test_class_images_validate_their_inputs() -> None:
    images = torch.zeros(5, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(TypeError):
        ClassImages(images.float(), torch.tensor([2, 3]), ["a", "b"])
    with pytest.raises(ValueError):
        ClassImages(images, torch.tensor([2, 2]), ["a", "b"])
    with pytest.raises(ValueError):
        ClassImages(images, torch.tensor([2, 3]), ["a"])


def test_episode_batch_indexing_and_to() -> None:
    sampler = EpisodeSampler(tagged_classes([6] * 5), EpisodeSpec(3, 2, 2), DECODE)
    batch = sample(sampler, 3, gen(0))
    episode = batch[1]
    assert torch.equal(episode.support_x, batch.support_x[1])
    assert torch.equal(episode.query_y, batch.query_y[1])
    moved = batch.to("cpu")
    assert moved.ways == 3 and torch.equal(moved.query_x, batch.query_x)
    part = batch.select(slice(1, 3))  # a meta-batch of its own, split classes included
    assert len(part) == 2 and part.ways == 3
    for mine, whole in zip(
        (part.support_x, part.support_y, part.query_x, part.query_y, part.classes),
        (batch.support_x, batch.support_y, batch.query_x, batch.query_y, batch.classes),
        strict=True,
    ):
        assert torch.equal(mine, whole[1:3])


def test_episode_spec_replace_keeps_unset_fields() -> None:
    spec = EpisodeSpec(5, 1, 15)
    assert spec.replace(shots=5, ways=None) == EpisodeSpec(5, 5, 15)
    assert spec == EpisodeSpec(5, 1, 15)


def test_fixed_training_episodes_repeat_a_few_plan_rows_in_every_draw() -> None:
    sampler = EpisodeSampler(tagged_classes([10] * 9), EpisodeSpec(5, 1, 4), DECODE)
    fixed = FixedTrainingEpisodes(sampler, 3, seed=2)
    assert len(fixed) == 3 and fixed.spec == sampler.spec  # the rest is the sampler's
    generator = gen(0)
    drawn = [fixed.draw(count, generator) for count in (1, 2, 7, 7)]
    rows = {tuple(row.flatten().tolist()) for plan in drawn for row in plan}
    assert rows == {tuple(row.flatten().tolist()) for row in fixed.plan}
    assert torch.equal(drawn[2][:3], drawn[2][3:6])  # cycled to the count
    again = FixedTrainingEpisodes(sampler, 3, seed=2)  # a function of the seeds alone
    assert torch.equal(again.draw(7, gen(0)), fixed.draw(7, gen(0)))
    batch = fixed.gather(drawn[2])
    assert torch.equal(batch.query_x[0], batch.query_x[3])
