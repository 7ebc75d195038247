"""A pretrained encoder as a stage: a finished run's encoder starts the next run's, frozen or
fine-tuned, across families; the source is recorded, a resumed or loaded run never reads it
again, and a mismatched or missing source is one line naming ``pretrained.from``."""

from __future__ import annotations

import functools
import json
import shutil

import pytest
import torch

import metarun
from metarun.algorithms import MAML, ProtoNet
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import Conv4
from metarun.pretrained import (
    PretrainedSource,
    encoder_place,
    freeze_encoder,
    load_encoder,
    read_source,
)
from metarun.run import RunContext, run
from metarun.training.checkpoint import load_checkpoint

TASK = TaskSpec("classification", (1, 28, 28), 5)


def conv4(width: int = 8) -> functools.partial:
    return functools.partial(Conv4, hidden_channels=width)


def source_of(learner: torch.nn.Module, tmp_path) -> PretrainedSource:
    return PretrainedSource(tmp_path / "source.pt", {"learner": learner.state_dict()})


def test_an_encoder_moves_between_families_parameters_by_name(tmp_path) -> None:
    torch.manual_seed(0)
    protonet = ProtoNet(conv4(), TASK)
    maml = MAML(conv4(), TASK)
    head = maml.model.head.weight.clone()
    load_encoder(maml, source_of(protonet, tmp_path))
    for name, p in protonet.encoder.named_parameters():
        assert torch.equal(dict(maml.model.named_parameters())[name], p), name
    assert torch.equal(maml.model.head.weight, head)  # the head is the learner's own
    back = ProtoNet(conv4(), TASK)
    running = back.state_dict()["encoder.features.0.1.running_mean"].clone()
    load_encoder(back, source_of(maml, tmp_path))  # MAML keeps no running statistics
    assert torch.equal(back.state_dict()["encoder.features.0.1.running_mean"], running)
    assert encoder_place(list(maml.state_dict())).excluded == "model.head."


def test_freezing_stops_the_optimiser_and_the_inner_loop(tmp_path) -> None:
    maml = MAML(conv4(), TASK)
    frozen = freeze_encoder(maml)
    assert frozen == len([n for n, _ in maml.model.named_parameters() if "head" not in n])
    assert set(maml.inner_parameters()) == {"head.weight", "head.bias"}


def test_a_mismatched_encoder_is_one_line_naming_the_key(tmp_path) -> None:
    with pytest.raises(ConfigError, match="^pretrained.from: .*features.0.0.weight of shape"):
        load_encoder(ProtoNet(conv4(16), TASK), source_of(ProtoNet(conv4(8), TASK), tmp_path))


def test_a_missing_source_is_one_line_before_any_data(tmp_path, compose_config) -> None:
    cfg = compose_config([f"pretrained.from={tmp_path / 'nowhere'}"])
    with pytest.raises(ConfigError, match="^pretrained.from: checkpoint .* does not exist"):
        read_source(cfg)


def test_a_run_starts_from_a_finished_runs_encoder_and_needs_it_no_more(
    tmp_path, tiny_overrides, compose_config
) -> None:
    first = tmp_path / "baseline"
    run(compose_config(tiny_overrides("protonet")), RunContext(first, "source"))
    best = load_checkpoint(first / "checkpoints" / "best.pt")
    source = best["learner"]
    second = tmp_path / "frozen"
    overrides = tiny_overrides("protonet", f"pretrained.from={first}", "pretrained.freeze=true")
    run(compose_config(overrides), RunContext(second, "frozen"))
    summary = json.loads((second / "summary.json").read_text())
    assert summary["pretrained"]["checkpoint"] == str((first / "checkpoints/best.pt").resolve())
    assert summary["pretrained"]["step"] == best["step"]
    trained = load_checkpoint(second / "checkpoints" / "last.pt")["learner"]
    parameters = dict(ProtoNet(conv4(), TASK).named_parameters())  # not BatchNorm's buffers
    for name, value in source.items():
        if name in parameters:  # frozen: as the source's best left them
            assert torch.equal(trained[name], value), name
    shutil.rmtree(first)  # the new run is self-contained
    assert isinstance(metarun.load(second), metarun.FewShotLearner)


def test_freezing_without_a_source_is_one_line(compose_config) -> None:
    with pytest.raises(ConfigError, match="^pretrained.freeze: freezes the encoder"):
        read_source(compose_config(["pretrained.freeze=true"]))
