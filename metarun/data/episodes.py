"""Episodes: the one unit of data every meta-learner consumes.

An episode is an N-way K-shot task: a support set to adapt on and a query set to be judged on,
labels 0..N-1. Episodes are drawn in two steps so evaluation can be fixed: ``draw`` returns a
compact plan (image indices, or task parameters for synthetic tasks) from a seeded generator, and
``gather`` turns a slice of the plan into tensors. A fixed evaluation set is a plan drawn once
from a seed in the config, so every algorithm and every batch size sees the same episodes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import torch
from torch import Tensor

from metarun.data.augment import Augmentation
from metarun.data.variable_shape import VariableShape
from metarun.errors import ConfigError


@dataclass(frozen=True)
class EpisodeSpec:
    """Shape of an episode: classes, support examples and query examples per class."""

    ways: int
    shots: int
    queries: int

    def replace(self, **changes: int | None) -> EpisodeSpec:
        """A copy with the given fields changed; ``None`` keeps the current value."""
        fields = {"ways": self.ways, "shots": self.shots, "queries": self.queries}
        fields.update({k: v for k, v in changes.items() if v is not None})
        return EpisodeSpec(**fields)


@dataclass
class Episode:
    """One task: support set to adapt on, query set to evaluate on."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor


@dataclass
class EpisodeBatch:
    """A meta-batch of episodes: every tensor has a leading dimension of size B."""

    support_x: Tensor  # [B, N*K, ...]
    support_y: Tensor  # [B, N*K]
    query_x: Tensor  # [B, N*Q, ...]
    query_y: Tensor  # [B, N*Q]
    ways: int
    classes: Tensor | None = None
    """``[B, N]``: each episode's way ``n`` is class ``classes[b, n]`` of the split (global
    labels, for learners that pre-train on all training classes); None for synthetic tasks."""
    keys: Tensor | None = None
    """``[B]`` int64: each training task's random key (``metarun.randomness.task_keys``, a
    function of its global index), which every random draw of its training computation comes
    from; None for evaluation episodes, which draw nothing that depends on them."""

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def __getitem__(self, index: int) -> Episode:
        return Episode(
            self.support_x[index], self.support_y[index], self.query_x[index], self.query_y[index]
        )

    def select(self, part: slice | Tensor) -> EpisodeBatch:
        """The episodes in ``part`` (a slice or indices) as a meta-batch of their own (leading
        dimension kept)."""
        return self._map(lambda t: t[part])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> EpisodeBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def with_keys(self, keys: Tensor) -> EpisodeBatch:
        """The same episodes carrying the random keys of their tasks (``[B]``)."""
        if keys.shape != (len(self),):
            raise ValueError(f"need one key per episode ({len(self)}), got {tuple(keys.shape)}")
        return dataclasses.replace(self, keys=keys.to(self.support_y.device))

    def training_keys(self) -> Tensor:
        """The tasks' keys, for a learner that draws random numbers in training."""
        if self.keys is None:
            raise ValueError(
                "these training episodes carry no random keys (EpisodeBatch.keys); the trainer "
                "sets them with metarun.randomness.task_keys, and so must a caller of meta_loss"
            )
        return self.keys

    def _map(self, change: Callable[[Tensor], Tensor]) -> EpisodeBatch:
        optional = lambda t: None if t is None else change(t)  # noqa: E731
        return EpisodeBatch(
            change(self.support_x),
            change(self.support_y),
            change(self.query_x),
            change(self.query_y),
            self.ways,
            optional(self.classes),
            optional(self.keys),
        )


@dataclass
class EpisodeList:
    """Episodes that differ in shape (variable ways and shots, ``VariableShape``), each a
    one-episode ``EpisodeBatch``: a learner sees them one at a time, and the trainer and the
    evaluation average over them (per-episode calls; ``scripts/variable_episodes.py`` measures
    them against padding with masks)."""

    episodes: list[EpisodeBatch]

    def __len__(self) -> int:
        return len(self.episodes)

    @property
    def ways(self) -> list[int]:
        return [episode.ways for episode in self.episodes]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> EpisodeList:
        return EpisodeList([e.to(device, non_blocking=non_blocking) for e in self.episodes])

    def with_keys(self, keys: Tensor) -> EpisodeList:
        if keys.shape != (len(self),):
            raise ValueError(f"need one key per episode ({len(self)}), got {tuple(keys.shape)}")
        return EpisodeList([e.with_keys(keys[i : i + 1]) for i, e in enumerate(self.episodes)])


def one_at_a_time(batch: EpisodeBatch | EpisodeList) -> list[EpisodeBatch]:
    """The batches a learner is called on: the batch itself, or each episode of a list."""
    return batch.episodes if isinstance(batch, EpisodeList) else [batch]


class TaskSampler(Protocol):
    """Anything that draws episodes: class-indexed image data or a synthetic task family."""

    spec: EpisodeSpec

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        """A compact plan of ``count`` episodes (indices or task parameters), on the CPU."""
        ...

    def gather(self, plan: Tensor) -> EpisodeBatch | EpisodeList:
        """The episodes a slice of a plan describes, as tensors on the sampler's device."""
        ...

    def to(self, device: torch.device | str) -> TaskSampler: ...


def sample(
    sampler: TaskSampler, count: int, generator: torch.Generator
) -> EpisodeBatch | EpisodeList:
    """Draw and build ``count`` fresh episodes."""
    return sampler.gather(sampler.draw(count, generator))


class ClassImages:
    """Images grouped by class, decoded once into one uint8 tensor.

    ``images`` is ``[total, C, H, W]`` sorted by class; class ``c`` owns rows
    ``offsets[c] : offsets[c] + counts[c]``. Class names travel along for split bookkeeping.
    """

    def __init__(self, images: Tensor, counts: Tensor, names: list[str]) -> None:
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        if len(names) != len(counts) or int(counts.sum()) != images.shape[0]:
            raise ValueError("counts and names must describe every image exactly once")
        self.images = images
        self.counts = counts.to(torch.long)
        self.offsets = torch.cumsum(self.counts, 0) - self.counts
        self.names = list(names)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def groups(self) -> list[str]:
        """Each class's group: its name up to the first ``/`` (an alphabet, a radical, a
        category), or the whole name for data sets without groups."""
        return [name.split("/", 1)[0] for name in self.names]

    @cached_property
    def group_index(self) -> Tensor:
        """Each class's group as an integer, groups numbered in order of first appearance."""
        numbers: dict[str, int] = {}
        return torch.tensor([numbers.setdefault(g, len(numbers)) for g in self.groups])

    def select(self, class_indices: list[int]) -> ClassImages:
        """A subset of classes, in the given order."""
        rows = [
            torch.arange(int(self.offsets[c]), int(self.offsets[c] + self.counts[c]))
            for c in class_indices
        ]
        index = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
        return ClassImages(
            self.images[index], self.counts[class_indices], [self.names[c] for c in class_indices]
        )

    @staticmethod
    def concat(parts: list[ClassImages]) -> ClassImages:
        return ClassImages(
            torch.cat([p.images for p in parts]),
            torch.cat([p.counts for p in parts]),
            [name for p in parts for name in p.names],
        )


def check_episode_fits(
    classes: ClassImages, spec: EpisodeSpec, split: str, keys: tuple[str, str, str]
) -> None:
    """Fail before training when a split cannot supply the requested episodes.

    ``keys`` name the config keys behind ways, shots and queries, so the message points at
    what the user typed.
    """
    ways_key, shots_key, queries_key = keys
    for key, value in zip(keys, (spec.ways, spec.shots, spec.queries), strict=True):
        if value < 1:
            raise ConfigError(key, f"must be at least 1, got {value}")
    if spec.ways > classes.num_classes:
        raise ConfigError(
            ways_key,
            f"{spec.ways}-way episodes need {spec.ways} classes but the {split} split has "
            f"{classes.num_classes}; use at most {classes.num_classes}",
        )
    smallest = int(classes.counts.min())
    if spec.shots + spec.queries > smallest:
        raise ConfigError(
            f"{shots_key} + {queries_key}",
            f"{spec.shots} + {spec.queries} images per class exceed the {smallest} that the "
            f"smallest class of the {split} split has; use at most {smallest} in total",
        )


class EpisodeSampler:
    """N-way K-shot Q-query episodes from class-indexed uint8 images.

    Sampling is tensor indexing only (no file or PIL work): classes are chosen by sorting random
    keys, examples within each class likewise, and images are augmented (training only) and
    converted to floats by ``decode`` on the device the episodes are for.

    ``within_group`` draws every episode's classes from one group (an Omniglot alphabet, a kanji
    radical, a tieredImageNet category): the harder, within-alphabet protocol of Lake et al.

    ``variable`` draws Meta-Dataset's episodes instead (``VariableShape``: ways, imbalanced
    shots and balanced queries vary per episode, ``spec`` is then unused), gathered as an
    ``EpisodeList``. Its plan is ``[count, max_ways, 2 + P]``: per way its shots (0: no such
    way), its queries, and its image indices, support first (-1 past them).
    """

    def __init__(
        self,
        classes: ClassImages,
        spec: EpisodeSpec,
        decode: Callable[[Tensor], Tensor],
        split: str = "train",
        keys: tuple[str, str, str] = ("dataset.ways", "dataset.shots", "dataset.queries"),
        augmentation: Augmentation | None = None,
        within_group: bool = False,
        variable: VariableShape | None = None,
    ) -> None:
        if variable is None:
            check_episode_fits(classes, spec, split, keys)
        else:
            variable.check_fits(classes.counts, split)
            if augmentation is not None:
                raise ConfigError(
                    "dataset.augment", "is not available with variable episodes; set it to null"
                )
        self.classes = classes
        self.spec = spec
        self.decode = decode
        self.split = split
        self.augmentation = augmentation
        self.within_group = within_group
        self.variable = variable
        if within_group:
            least = spec.ways if variable is None else variable.min_ways
            check_groups_fit(
                classes, least, split, keys[0] if variable is None else "dataset.variable.min_ways"
            )
            self._group_sizes = torch.bincount(classes.group_index)
        self._images = classes.images
        self.device = torch.device("cpu")

    @property
    def nbytes(self) -> int:
        """Size of the stored images: what placing them on an accelerator costs."""
        return self.classes.images.numel() * self.classes.images.element_size()

    def to(self, device: torch.device | str, keep_on_host: bool = False) -> EpisodeSampler:
        """Episodes for ``device``. The images move there too unless ``keep_on_host``: then
        each episode is gathered on the host into pinned memory and copied asynchronously."""
        self.device = torch.device(device)
        self._images = self.classes.images if keep_on_host else self.classes.images.to(device)
        if not keep_on_host:
            self.device = self._images.device  # "cuda" names the current GPU: cuda:N
        return self

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        """Image indices ``[count, N, K+Q]``, support first, then query, for each class; with
        augmentation ``[count, N, K+Q, 4]``: index, flip, crop row and column offsets."""
        if self.variable is not None:
            return self._draw_variable(count, generator)
        n, per_class = self.spec.ways, self.spec.shots + self.spec.queries
        class_keys = torch.rand(count, self.classes.num_classes, generator=generator)
        if self.within_group:
            class_keys.masked_fill_(~self._members_of_drawn_groups(count, generator), 2.0)
        chosen = class_keys.argsort(dim=1)[:, :n]  # [count, N] distinct classes
        counts = self.classes.counts[chosen]
        largest = int(self.classes.counts.max())
        example_keys = torch.rand(count, n, largest, generator=generator)
        # Positions past a class's size can never be picked.
        example_keys.masked_fill_(torch.arange(largest) >= counts[..., None], float("inf"))
        within = example_keys.argsort(dim=2)[..., :per_class]
        plan = self.classes.offsets[chosen][..., None] + within
        if self.augmentation is None:
            return plan
        choices = self.augmentation.draw(tuple(plan.shape), generator)
        return torch.cat([plan[..., None], choices], dim=-1)

    def _draw_variable(self, count: int, generator: torch.Generator) -> Tensor:
        variable, counts = self.variable, self.classes.counts
        assert variable is not None
        width = variable.largest_per_class(counts)
        plan = torch.full((count, variable.max_ways, 2 + width), -1, dtype=torch.long)
        plan[..., :2] = 0
        for episode in range(count):
            candidates = torch.arange(self.classes.num_classes)
            if self.within_group:
                group = self._members_of_drawn_groups(1, generator, variable.min_ways)[0]
                candidates = candidates[group]
            ways = variable.ways(len(candidates), generator)
            order = torch.randperm(len(candidates), generator=generator)
            chosen = candidates[order[:ways]]
            shots, queries = variable.describe(counts[chosen], generator)
            largest = int(counts[chosen].max())
            keys = torch.rand(ways, largest, generator=generator)
            keys.masked_fill_(torch.arange(largest) >= counts[chosen, None], float("inf"))
            within = keys.argsort(dim=1)[:, :width]
            taken = torch.arange(within.shape[1]) < (shots + queries)[:, None]
            indices = torch.where(taken, self.classes.offsets[chosen, None] + within, -1)
            plan[episode, :ways, 0], plan[episode, :ways, 1] = shots, queries
            plan[episode, :ways, 2 : 2 + indices.shape[1]] = indices
        return plan

    def _members_of_drawn_groups(
        self, count: int, generator: torch.Generator, least: int | None = None
    ) -> Tensor:
        """``[count, classes]`` masks: the classes of one eligible group per episode (one with
        at least ``least`` classes, by default the episodes' ways)."""
        least = self.spec.ways if least is None else least
        eligible = torch.nonzero(self._group_sizes >= least).flatten()
        picks = eligible[torch.randint(len(eligible), (count,), generator=generator)]
        return self.classes.group_index[None, :] == picks[:, None]

    def gather(self, plan: Tensor) -> EpisodeBatch | EpisodeList:
        if self.variable is not None:
            return EpisodeList([self._gather_one(row) for row in plan])
        count, n = plan.shape[:2]
        k, q = self.spec.shots, self.spec.queries
        index = plan[..., 0] if plan.dim() == 4 else plan
        pixels = self._pixels(index)  # [B, N, K+Q, C, H, W]
        if self.augmentation is not None and plan.dim() == 4:
            flat = pixels.flatten(0, 2)
            choices = plan[..., 1:].reshape(-1, 3)
            pixels = self.augmentation.apply(flat, choices).view(pixels.shape)
        images = self.decode(pixels)
        shape = images.shape[3:]
        labels = torch.arange(n, device=images.device)
        return EpisodeBatch(
            support_x=images[:, :, :k].reshape(count, n * k, *shape),
            support_y=labels.repeat_interleave(k).expand(count, -1),
            query_x=images[:, :, k:].reshape(count, n * q, *shape),
            query_y=labels.repeat_interleave(q).expand(count, -1),
            ways=n,
            classes=self.class_of(index[:, :, 0]).to(images.device),
        )

    def _pixels(self, index: Tensor) -> Tensor:
        """The stored images at ``index``, on the episodes' device."""
        pixels = self._images[index.to(self._images.device)]
        if pixels.device.type == "cpu" and self.device.type != "cpu":  # kept on the host
            if self.device.type == "cuda":
                pixels = pixels.pin_memory()
            pixels = pixels.to(self.device, non_blocking=True)
        return pixels

    def _gather_one(self, row: Tensor) -> EpisodeBatch:
        """One variable-shape episode from its plan row ``[max_ways, 2 + P]``."""
        row = row[row[:, 0] > 0]
        shots, queries, index = row[:, 0], row[:, 1], row[:, 2:]
        position = torch.arange(index.shape[1])
        support = position < shots[:, None]
        query = ~support & (position < (shots + queries)[:, None])
        ways = len(row)
        images = self.decode(self._pixels(torch.cat([index[support], index[query]])))
        s = int(shots.sum())
        labels = torch.arange(ways, device=images.device)
        return EpisodeBatch(
            support_x=images[None, :s],
            support_y=labels.repeat_interleave(shots.to(images.device))[None],
            query_x=images[None, s:],
            query_y=labels.repeat_interleave(queries.to(images.device))[None],
            ways=ways,
            classes=self.class_of(index[:, 0])[None].to(images.device),
        )

    @property
    def class_names(self) -> dict[int, str]:
        """The name of each class index that episodes' ``classes`` give (``episodes.csv``)."""
        return dict(enumerate(self.classes.names))

    def class_of(self, image_index: Tensor) -> Tensor:
        """The split's class index of each image index."""
        return (
            torch.searchsorted(self.classes.offsets, image_index.cpu().contiguous(), right=True) - 1
        )


def check_groups_fit(classes: ClassImages, ways: int, split: str, ways_key: str) -> None:
    """Within-group episodes need a group with at least N classes."""
    sizes = torch.bincount(classes.group_index)
    if int(sizes.max()) < ways:
        raise ConfigError(
            ways_key,
            f"within-group {ways}-way episodes need a group with {ways} classes, but "
            f"the largest group of the {split} split has {int(sizes.max())}; use at most "
            f"{int(sizes.max())} or set dataset.within_group=false",
        )


class FixedEpisodes:
    """The same ``count`` episodes every time: a plan drawn once from ``seed``."""

    def __init__(self, sampler: TaskSampler, count: int, seed: int) -> None:
        self.sampler = sampler
        self.seed = seed
        self.plan = sampler.draw(count, torch.Generator().manual_seed(seed))
        self.count = len(self.plan)  # a multi-source sampler draws ``count`` per source

    def __len__(self) -> int:
        return self.count

    def batches(self, batch_size: int, part: slice = slice(None)) -> Iterator[EpisodeBatch]:
        """The episodes (those in ``part`` of them, e.g. one process's share), in order."""
        plan = self.plan[part]
        for start in range(0, len(plan), batch_size):
            yield self.sampler.gather(plan[start : start + batch_size])


class FixedTrainingEpisodes:
    """A training sampler that only ever gives the same ``count`` episodes (``debug=overfit``).

    The plan is drawn once from ``seed``; each ``draw`` returns its rows cycled to the requested
    count from a start the generator picks (so the stream stays a function of the training
    seed, and resuming continues it). ``gather`` and everything else is the wrapped sampler's:
    augmentation choices are part of a plan, so an episode repeats exactly. A learner that cannot
    drive its loss on these towards zero cannot learn at all.
    """

    def __init__(self, sampler: TaskSampler, count: int, seed: int) -> None:
        if count < 1:
            raise ValueError(f"need at least one episode, got {count}")
        self.sampler = sampler
        self.plan = sampler.draw(count, torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.plan)

    def __getattr__(self, name: str) -> object:  # spec, split, device, ...: the sampler's
        if name in ("sampler", "plan"):  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.sampler, name)

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        start = int(torch.randint(len(self.plan), (1,), generator=generator))
        return self.plan[(start + torch.arange(count)) % len(self.plan)]

    def gather(self, plan: Tensor) -> EpisodeBatch | EpisodeList:
        return self.sampler.gather(plan)

    def to(self, device: torch.device | str) -> FixedTrainingEpisodes:
        self.sampler = self.sampler.to(device)
        return self
