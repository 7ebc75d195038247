"""A data set made of other data sets (``dataset=multi``): Meta-Dataset's multi-source episodes.

Every source is one of metarun's data set configs (kanji, omniglot, cub, a folder, ...) and keeps
its own split, cache and normalisation; the composition fixes what a network needs to be shared,
the input size (each source caches its images at ``image_size``) and the channels (grey sources
are repeated to three channels, colour ones averaged to one, after each source's own
normalisation). Each training episode comes from one source drawn uniformly, as Meta-Dataset
trains (Triantafillou et al. 2020; ``google-research/meta-dataset``, ``meta_dataset/data/
pipeline.py``, ``make_multisource_episode_pipeline``: uniform source weights); the fixed
validation and test sets hold ``eval.*_episodes`` episodes of every source, so every source is
scored on its own (``EvalResult.sources``). ``held_out`` names sources that never train and are
never validated on: they are tested only, as out-of-domain sources. ``within_group`` names sources
whose episodes keep within one group of classes (Meta-Dataset's Omniglot: one alphabet).

A plan row of a multi-source episode is its source's plan row with one leading row that holds the
source's index, so fixed episodes stay one tensor (identical across learners and processes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from metarun.data.episodes import (
    ClassImages,
    EpisodeBatch,
    EpisodeList,
    EpisodeSampler,
    EpisodeSpec,
    one_at_a_time,
)
from metarun.data.image_dataset import ImageDataset, Split, keeps_on_host
from metarun.data.images import ImageFormat
from metarun.data.task import TaskSpec
from metarun.data.variable_shape import VariableShape
from metarun.errors import ConfigError

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's convert("L")


def to_channels(images: Tensor, channels: int) -> Tensor:
    """``[..., C, H, W]`` floats with ``channels`` channels: grey repeated, colour averaged."""
    have = images.shape[-3]
    if have == channels:
        return images
    if have == 1:
        return images.expand(*images.shape[:-3], channels, *images.shape[-2:])
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device)
    return (images * weights[:, None, None]).sum(-3, keepdim=True)


class MultiSourceSampler:
    """Episodes from several sources' samplers: training draws the source of each episode
    uniformly, evaluation (``balanced``) draws ``count`` episodes of every source in turn."""

    def __init__(
        self,
        samplers: Sequence[EpisodeSampler],
        sources: Sequence[int],
        channels: int,
        class_offsets: Sequence[int],
        balanced: bool,
        source_names: Sequence[str] = (),
        held_out: Sequence[str] = (),
    ) -> None:
        self.source_names = list(source_names)  # of every source, by index
        self.held_out = list(held_out)
        self.samplers = list(samplers)
        self.sources = list(sources)  # each sampler's index among the data set's sources
        self.channels = channels
        self.class_offsets = list(class_offsets)
        self.balanced = balanced
        self.spec = samplers[0].spec
        self.variable = samplers[0].variable
        self.device = torch.device("cpu")

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.samplers)

    def to(self, device: torch.device | str, keep_on_host: bool = False) -> MultiSourceSampler:
        for sampler in self.samplers:
            sampler.to(device, keep_on_host=keep_on_host)
        self.device = self.samplers[0].device
        return self

    def draw(self, count: int, generator: torch.Generator) -> Tensor:
        if self.balanced:
            which = torch.arange(len(self.samplers)).repeat_interleave(count)
        else:
            which = torch.randint(len(self.samplers), (count,), generator=generator)
        parts = {
            i: self.samplers[i].draw(int((which == i).sum()), generator)
            for i in range(len(self.samplers))
            if (which == i).any()
        }
        width = max(p.shape[2] for p in parts.values())
        shape = next(iter(parts.values())).shape
        plan = torch.full((len(which), shape[1] + 1, width, *shape[3:]), -1, dtype=torch.long)
        for i, part in parts.items():
            rows = torch.nonzero(which == i).flatten()
            plan[rows, 1:, : part.shape[2]] = part
            plan[rows, 0] = self.sources[i]
        return plan

    @property
    def class_names(self) -> dict[int, str]:
        """``<source>/<class>`` for each class index episodes give (numbered among all
        sources', as ``_shared`` numbers them)."""
        return {
            offset + index: f"{self.source_names[source]}/{name}"
            for sampler, source, offset in zip(
                self.samplers, self.sources, self.class_offsets, strict=True
            )
            for index, name in sampler.class_names.items()
        }

    def source_of(self, plan: Tensor) -> Tensor:
        """Each episode's source (its index among the data set's sources)."""
        return plan[:, 0].flatten(1)[:, 0]

    def gather(self, plan: Tensor) -> EpisodeBatch | EpisodeList:
        """Each source's episodes gathered in one call to its sampler, in the plan's order."""
        which = self.source_of(plan)
        parts, positions = [], []
        for i, source in enumerate(self.sources):
            rows = torch.nonzero(which == source).flatten()
            if len(rows) == 0:
                continue
            own = plan[rows, 1:]
            if self.variable is None:
                own = own[:, :, : self.spec.shots + self.spec.queries]
            offset = self.class_offsets[i]
            parts.extend(
                self._shared(e, offset) for e in one_at_a_time(self.samplers[i].gather(own))
            )
            positions.append(rows)
        order = torch.cat(positions).argsort()
        if self.variable is not None:
            return EpisodeList([parts[j] for j in order.tolist()])
        batch = EpisodeBatch(
            torch.cat([e.support_x for e in parts]),
            torch.cat([e.support_y for e in parts]),
            torch.cat([e.query_x for e in parts]),
            torch.cat([e.query_y for e in parts]),
            parts[0].ways,
            torch.cat([e.classes for e in parts]),  # type: ignore[misc]
        )
        return batch.select(order.to(batch.support_x.device))

    def _shared(self, episode: EpisodeBatch, class_offset: int) -> EpisodeBatch:
        """An episode in the shared channels, its classes numbered among all sources'."""
        return EpisodeBatch(
            to_channels(episode.support_x, self.channels),
            episode.support_y,
            to_channels(episode.query_x, self.channels),
            episode.query_y,
            episode.ways,
            None if episode.classes is None else episode.classes + class_offset,
        )


class MultiSource:
    """Several data sets' episodes as one data set (see the module docstring)."""

    def __init__(
        self,
        sources: Mapping[str, Any],
        held_out: Sequence[str] | str | None = None,
        within_group: Sequence[str] | str | None = None,
        image_size: int = 28,
        channels: int = 1,
        variable: Any = True,
        ways: int = 5,
        shots: int = 1,
        queries: int = 15,
        placement: str = "auto",
    ) -> None:
        if not sources:
            raise ConfigError(
                "dataset.sources",
                "names no data set; add one, e.g. +dataset@dataset.sources.kanji=kanji",
            )
        if channels not in (1, 3):
            raise ConfigError("dataset.channels", f"must be 1 or 3, got {channels}")
        held = named_sources("held_out", held_out, sources)
        grouped = named_sources("within_group", within_group, sources)
        if len(held) == len(sources):
            raise ConfigError("dataset.held_out", "holds out every source; none would train")
        self.names = list(sources)
        self.held_out = held
        self.channels = channels
        self.variable = VariableShape.of(variable)
        self.episodes = EpisodeSpec(ways=ways, shots=shots, queries=queries)
        self.placement = placement
        shared = {
            "image_size": image_size,
            "variable": variable,
            "ways": ways,
            "shots": shots,
            "queries": queries,
        }
        self.sources: dict[str, ImageDataset] = {
            name: _source(name, config, {**shared, "within_group": name in grouped})
            for name, config in sources.items()
        }
        outputs = ways if self.variable is None else self.variable.max_ways
        shape = (channels, image_size, image_size)
        self.task = TaskSpec("classification", shape, outputs)
        self.image_format = ImageFormat(size=image_size, channels=channels)

    @property
    def training_sources(self) -> list[str]:
        return [name for name in self.names if name not in self.held_out]

    def sources_of(self, split: Split) -> list[str]:
        """Sources that train and validate; every source tests."""
        return self.names if split == "test" else self.training_sources

    def class_count(self, split: Split) -> int:
        """Every source's classes of ``split`` together, numbered in source order: the numbers
        of ``EpisodeBatch.classes`` (a Baseline's pre-training labels)."""
        return sum(self.classes_of(name, split).num_classes for name in self.sources_of(split))

    def classes_of(self, source: str, split: Split) -> ClassImages:
        """One source's classes of ``split`` (its errors naming its keys)."""
        with keys_of(source):
            return self.sources[source].classes(split)

    def sampler(
        self,
        split: Split,
        spec: EpisodeSpec,
        keys: tuple[str, str, str] = ("dataset.ways", "dataset.shots", "dataset.queries"),
    ) -> MultiSourceSampler:
        names = self.sources_of(split)
        offsets, total, samplers = [], 0, []
        for name in names:
            offsets.append(total)
            total += self.classes_of(name, split).num_classes
            with keys_of(name):
                samplers.append(self.sources[name].sampler(split, spec, keys))
        return MultiSourceSampler(
            samplers,
            [self.names.index(name) for name in names],
            self.channels,
            offsets,
            balanced=split != "train",
            source_names=self.names,
            held_out=self.held_out,
        )

    def place(self, sampler: MultiSourceSampler, device: torch.device) -> MultiSourceSampler:
        return sampler.to(device, keep_on_host=keeps_on_host(self.placement, sampler, device))  # type: ignore[arg-type]

    def preprocess(self, image: Any, source: str | None = None) -> Tensor:
        """A raw image as a source's data set would give it (the first source by default), in
        the shared channels."""
        return to_channels(self.sources[source or self.names[0]].preprocess(image), self.channels)

    def state_dict(self) -> dict[str, Any]:
        return {"sources": {name: data.state_dict() for name, data in self.sources.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, own in state.get("sources", {}).items():
            if name in self.sources:
                self.sources[name].load_state_dict(own)


def named_sources(key: str, names: Sequence[str] | str | None, sources: Mapping) -> list[str]:
    """A list of source names from the config (one name or several), each a source."""
    listed = [names] if isinstance(names, str) else list(names or [])
    unknown = [name for name in listed if name not in sources]
    if unknown:
        raise ConfigError(
            f"dataset.{key}", f"{unknown[0]!r} is not a source; sources: {', '.join(sources)}"
        )
    return listed


@contextlib.contextmanager
def keys_of(name: str) -> Iterator[None]:
    """A source's errors name its keys as a user types them: ``dataset.sources.<name>.*``."""
    try:
        yield
    except ConfigError as error:
        raise ConfigError(_own_key(error.key, name), str(error).split(": ", 1)[1]) from None


def _own_key(key: str, name: str) -> str:
    if key.startswith("dataset.") and not key.startswith("dataset.sources."):
        return key.replace("dataset.", f"dataset.sources.{name}.", 1)
    return key


def _source(name: str, config: Any, shared: dict[str, Any]) -> ImageDataset:
    """One source's data set, with the composition's shared settings imposed on it."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if not isinstance(config, dict) or "_target_" not in config:
        raise ConfigError(f"dataset.sources.{name}", "must be a data set config (with _target_)")
    imposed = {k: v for k, v in shared.items() if k in config or k == "variable"}
    if not shared["within_group"]:  # unlisted: the source's own setting stays
        imposed.pop("within_group", None)
    config = {**config, **imposed}
    if "image_size" not in config:
        raise ConfigError(
            f"dataset.sources.{name}",
            "has no image_size, so it cannot be resized to the shared input size",
        )
    with keys_of(name):
        try:
            made = instantiate(config)
        except ConfigError:
            raise
        except Exception as error:
            if isinstance(error.__cause__, ConfigError):
                raise error.__cause__ from None
            raise ConfigError(f"dataset.sources.{name}", f"cannot be built ({error})") from None
    if not isinstance(made, ImageDataset):
        raise ConfigError(
            f"dataset.sources.{name}", f"is a {type(made).__name__}, not an image data set"
        )
    return made


__all__ = ["MultiSource", "MultiSourceSampler", "to_channels"]
