"""Meta-Dataset's episodes of variable ways and shots (Triantafillou et al. 2020,
"Meta-Dataset: A Dataset of Datasets for Learning to Learn from Few Examples").

The rules follow the authors' sampler, ``google-research/meta-dataset``,
``meta_dataset/data/sampling.py`` (``sample_num_ways_uniformly``, ``compute_num_query``,
``sample_support_set_size``, ``sample_num_support_per_class``), and its defaults
``meta_dataset/learn/gin/setups/data_config_common.gin``:

- ways uniform in ``[min_ways, min(max_ways, classes)]``, inclusive; where episodes keep within a
  group (Meta-Dataset's bi-level Omniglot: one alphabet), a group with at least ``min_ways``
  classes is drawn first and ``classes`` is its size;
- queries per class ``min(max_query, min_c floor(images_c / 2))``, the same for every class;
- support size ``min(max_support, sum_c floor(beta * min(max_support_per_class, remaining_c) + 1))``
  with ``beta ~ U[0, 1)`` and ``remaining_c = images_c - queries``;
- shots ``min(remaining_c, floor(p_c * (size - ways)) + 1)`` with
  ``p_c ∝ images_c * exp(U(min_log_weight, max_log_weight))``.

Draws come from a ``torch.Generator``, so a seed fixes the episodes on every machine; the rules
are the authors', the random stream is not numpy's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metarun.errors import ConfigError


@dataclass(frozen=True)
class VariableShape:
    """The caps of variable-shape episodes (Meta-Dataset's ``EpisodeDescriptionConfig``)."""

    min_ways: int = 5
    max_ways: int = 50
    max_query: int = 10
    max_support: int = 500
    max_support_per_class: int = 100
    min_log_weight: float = math.log(0.5)
    max_log_weight: float = math.log(2.0)

    def __post_init__(self) -> None:
        for key in ("min_ways", "max_ways", "max_query", "max_support", "max_support_per_class"):
            if not getattr(self, key) >= 1:
                raise ConfigError(
                    f"dataset.variable.{key}", f"must be at least 1, got {getattr(self, key)}"
                )
        if self.min_ways < 2:
            raise ConfigError(
                "dataset.variable.min_ways",
                f"must be at least 2 (a 1-way episode is always right), got {self.min_ways}",
            )
        if self.max_ways < self.min_ways:
            raise ConfigError(
                "dataset.variable.max_ways",
                f"{self.max_ways} is below min_ways {self.min_ways}",
            )
        if self.max_support < self.max_ways:
            raise ConfigError(
                "dataset.variable.max_support",
                f"{self.max_support} cannot give each of up to {self.max_ways} classes one "
                f"support example; use at least {self.max_ways}",
            )
        if self.max_log_weight < self.min_log_weight:
            raise ConfigError(
                "dataset.variable.max_log_weight",
                f"{self.max_log_weight} is below min_log_weight {self.min_log_weight}",
            )

    @staticmethod
    def of(settings: object) -> VariableShape | None:
        """From a config mapping (``dataset.variable``): None or false keep episodes fixed,
        true takes Meta-Dataset's defaults, a mapping overrides some of them."""
        if settings is None or settings is False:
            return None
        if settings is True:
            return VariableShape()
        try:
            return VariableShape(**dict(settings))  # type: ignore[call-overload]
        except TypeError as error:
            keys = ", ".join(VariableShape.__dataclass_fields__)
            raise ConfigError("dataset.variable", f"{error}; its keys are {keys}") from None

    def ways(self, classes: int, generator: torch.Generator) -> int:
        """Uniform in ``[min_ways, min(max_ways, classes)]``."""
        high = min(self.max_ways, classes)
        return int(torch.randint(self.min_ways, high + 1, (1,), generator=generator))

    def queries(self, images: Tensor) -> int:
        """Balanced queries: at most ``max_query``, at most half the smallest class."""
        return min(self.max_query, int((images // 2).min()))

    def support_size(self, remaining: Tensor, generator: torch.Generator) -> int:
        beta = float(torch.rand((), generator=generator, dtype=torch.float64))
        contributions = remaining.clamp(max=self.max_support_per_class).double()
        return min(int(torch.floor(beta * contributions + 1).sum()), self.max_support)

    def shots(
        self, images: Tensor, remaining: Tensor, size: int, generator: torch.Generator
    ) -> Tensor:
        """Imbalanced shots: at least one per class, proportional to the class's size times a
        log-uniform weight, at most what the class has left after its queries."""
        log_weights = torch.empty(len(images), dtype=torch.float64).uniform_(
            self.min_log_weight, self.max_log_weight, generator=generator
        )
        weights = images.double() * log_weights.exp()
        desired = torch.floor(weights / weights.sum() * (size - len(images))).long() + 1
        return torch.minimum(desired, remaining)

    def describe(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, int]:
        """Shots per class and the queries per class for an episode of classes with ``images``
        examples each."""
        queries = self.queries(images)
        remaining = images - queries
        size = self.support_size(remaining, generator)
        return self.shots(images, remaining, size, generator), queries

    def check_fits(self, counts: Tensor, split: str) -> None:
        """Every class needs two images (one support, one query), and the split ``min_ways``
        classes."""
        if len(counts) < self.min_ways:
            raise ConfigError(
                "dataset.variable.min_ways",
                f"{self.min_ways}-way episodes need {self.min_ways} classes but the {split} "
                f"split has {len(counts)}; use at most {len(counts)}",
            )
        if int(counts.min()) < 2:
            raise ConfigError(
                "dataset.variable",
                f"a class of the {split} split has {int(counts.min())} image; variable "
                f"episodes need two per class (a support and a query example)",
            )

    def largest_per_class(self, counts: Tensor) -> int:
        """The most images one class can put in an episode: what a plan row holds."""
        return min(int(counts.max()), self.max_support + self.max_query)


__all__ = ["VariableShape"]
