"""A pretrained encoder as a stage of a run: ``pretrained.from=<run dir or .pt>`` starts this
run's encoder from a finished run's (e.g. ``algorithm=baseline`` pre-trained over every training
class), and ``pretrained.freeze=true`` keeps it as loaded.

A learner's encoder is where its state dict says: the metric and memory learners keep it as
``encoder`` (ProtoNet, Baseline, Matching Networks, ...), the gradient family as ``model``
without its ``head`` (MAML, ANIL, ...), so an encoder moves between families: Baseline's into
ProtoNet, ProtoNet's into MAML. Its parameters must match by name and shape, else the run stops
in one line naming ``pretrained.from``; its buffers (BatchNorm's running statistics) are copied
where both learners keep them (the gradient family's batch-statistics layers keep none).

The weights are copied once, into a fresh run: a resumed run continues from its own checkpoint
and never reads the source again, and ``metarun.load`` of the new run needs only its own
checkpoint. The source is recorded in ``summary.json`` (``pretrained``: the file, its run's
W&B id, step and config hash) beside ``pretrained.from`` in the composed config. Freezing
switches off the gradient of the encoder's parameters, so neither the optimiser nor an inner
loop changes them (MAML with a frozen body adapts its head alone, like ANIL).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from metarun.errors import CheckpointError, ConfigError
from metarun.training.checkpoint import checkpoint_path, load_checkpoint

KEY = "pretrained.from"


@dataclass(frozen=True)
class EncoderPlace:
    """Where a learner's encoder sits in its state dict: under ``prefix``, less ``excluded``."""

    prefix: str
    excluded: str | None = None

    def holds(self, name: str) -> bool:
        inside = name.startswith(self.prefix)
        return inside and not (self.excluded and name.startswith(self.excluded))

    def part(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The encoder's entries of ``state``, named within the encoder."""
        return {n.removeprefix(self.prefix): v for n, v in state.items() if self.holds(n)}


def encoder_place(names: list[str]) -> EncoderPlace | None:
    """The encoder of a learner with these state-dict names, or None if it keeps none."""
    if any(n.startswith("encoder.") for n in names):
        return EncoderPlace("encoder.")
    if any(n.startswith("model.") for n in names):
        return EncoderPlace("model.", "model.head.")
    return None


@dataclass(frozen=True)
class PretrainedSource:
    """A finished run's checkpoint, read before any data is loaded."""

    path: Path
    state: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """What ``summary.json`` keeps of the source."""
        config = json.dumps(self.state.get("config", {}), sort_keys=True, default=str)
        return {
            "checkpoint": str(self.path.resolve()),
            "wandb_run_id": self.state.get("wandb_run_id"),
            "step": self.state.get("step"),
            "config_hash": hashlib.sha256(config.encode()).hexdigest(),
        }


def check_settings(cfg: DictConfig) -> None:
    """``pretrained.freeze`` without ``pretrained.from`` would freeze a random encoder."""
    settings = cfg.get("pretrained") or {}
    if settings.get("freeze") and not settings.get("from"):
        raise ConfigError(
            "pretrained.freeze",
            "freezes the encoder that pretrained.from loads; give pretrained.from=<run dir or "
            ".pt> too, or drop pretrained.freeze",
        )


def read_source(cfg: DictConfig) -> PretrainedSource | None:
    """The checkpoint ``pretrained.from`` names (a run directory's best, or a ``.pt``), or None
    when unset; a missing or unreadable one is a ``ConfigError``."""
    check_settings(cfg)
    given = (cfg.get("pretrained") or {}).get("from")
    if not given:
        return None
    path = checkpoint_path(Path(str(given)).expanduser())
    try:
        state = load_checkpoint(path)
    except CheckpointError as error:
        raise ConfigError(KEY, f"{error}; give a finished run's directory or a .pt") from None
    if encoder_place(list(state.get("learner", {}))) is None:
        raise ConfigError(KEY, f"{path}'s learner has no encoder (encoder or model) to take")
    return PretrainedSource(path, state)


def learner_encoder(learner: nn.Module) -> EncoderPlace:
    place = encoder_place(list(learner.state_dict()))
    if place is None:
        raise ConfigError(KEY, f"{type(learner).__name__} has no encoder to start from it")
    return place


def load_encoder(learner: nn.Module, source: PretrainedSource) -> int:
    """Copy the source's encoder into ``learner``'s; the number of tensors copied."""
    place = learner_encoder(learner)
    theirs = encoder_place(list(source.state["learner"]))
    assert theirs is not None  # read_source checked it
    incoming = theirs.part(source.state["learner"])
    parameters = {
        n.removeprefix(place.prefix): p for n, p in learner.named_parameters() if place.holds(n)
    }
    missing = sorted(set(parameters) - set(incoming))
    if missing:
        raise ConfigError(
            KEY,
            f"{source.path}'s encoder has no {missing[0]!r} ({len(missing)} of this run's "
            f"encoder parameters are missing); pretrain with the same model settings",
        )
    own = place.part(learner.state_dict())
    copied = {}
    for name, value in own.items():
        if name not in incoming:
            continue  # a buffer only one of the learners keeps
        if incoming[name].shape != value.shape:
            raise ConfigError(
                KEY,
                f"{source.path}'s encoder has {name} of shape {tuple(incoming[name].shape)}, "
                f"this run's {tuple(value.shape)}; pretrain with the same model settings",
            )
        copied[place.prefix + name] = incoming[name]
    with torch.no_grad():
        learner.load_state_dict(copied, strict=False)
    return len(copied)


def freeze_encoder(learner: nn.Module) -> int:
    """Switch off the gradient of the encoder's parameters; how many were frozen."""
    place = learner_encoder(learner)
    frozen = [p for n, p in learner.named_parameters() if place.holds(n)]
    for p in frozen:
        p.requires_grad_(False)
    return len(frozen)


__all__ = [
    "EncoderPlace",
    "check_settings",
    "PretrainedSource",
    "encoder_place",
    "freeze_encoder",
    "load_encoder",
    "read_source",
]
