"""Several optimisers as a trainer capability: a learner that declares parameter groups and
phases (``Phased``) gets one optimiser per group, stepped in the declared order, each in the
checkpoint; a learner that declares none trains, saves and logs exactly as with one optimiser."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from every_learner import EVALUATION, SyntheticEpisodes
from torch import Tensor, nn

from metarun.algorithms.base import Phase, Phased
from metarun.data.episodes import EpisodeBatch, EpisodeSpec, FixedEpisodes
from metarun.data.task import TaskSpec
from metarun.errors import CheckpointError
from metarun.hardware import Hardware
from metarun.tracking.console import NullReporter
from metarun.tracking.null import NullLogger
from metarun.training.checkpoint import Checkpoints, load_checkpoint
from metarun.training.optimisers import (
    DEFAULT_GROUP,
    Optimisers,
    build_optimisers,
    parameter_groups,
)
from metarun.training.trainer import Trainer, TrainerConfig

TASK = TaskSpec("classification", (1, 28, 28), EVALUATION.ways)


class Toy(nn.Module):
    """A nearest-class-mean classifier ``a`` and a second head ``b`` that imitates it; each
    phase's loss reaches both, so only the optimisers keep the other group still."""

    meta_batch_size = 2
    autocast_safe = True

    def __init__(self, order: tuple[str, ...] = ("a", "b", "b")) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(28 * 28, EVALUATION.ways).double()
        self.b = nn.Linear(28 * 28, EVALUATION.ways).double()
        self.order = order
        self.seen: list[tuple[str, Tensor]] = []  # (phase, a copy of a's weight) as it ran

    def training_episodes(self, evaluation: EpisodeSpec) -> EpisodeSpec:
        return evaluation

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"a": list(self.a.parameters()), "b": list(self.b.parameters())}

    def phases(self) -> list[Phase]:
        losses = {"a": self.loss_a, "b": self.loss_b}
        return [Phase(group, losses.get(group, self.loss_b)) for group in self.order]

    def loss_a(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        self.seen.append(("a", self.b.weight.detach().clone()))
        x = batch.query_x.flatten(2)
        loss = F.cross_entropy((self.a(x) + self.b(x)).flatten(0, 1), batch.query_y.flatten())
        return loss, {"loss": loss.detach()}

    def loss_b(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        self.seen.append(("b", self.a.weight.detach().clone()))
        x = batch.query_x.flatten(2)
        loss = ((self.b(x) - self.a(x)) ** 2).mean()
        return loss, {"imitation": loss.detach()}

    def meta_loss(self, batch: EpisodeBatch) -> tuple[Tensor, dict[str, Tensor]]:
        return self.loss_a(batch)

    def predict(self, batch: EpisodeBatch) -> Tensor:
        return self.a(batch.query_x.flatten(2))

    def adapt(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], Tensor]:
        return lambda query_x: self.a(query_x.flatten(1))


class Recorder(NullLogger):
    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.records.append((step, dict(metrics)))


def logged(run: Trainer) -> list[tuple[int, dict[str, float]]]:
    """What a run logged, less the timings."""
    return [
        (step, {k: v for k, v in record.items() if not k.startswith("perf/")})
        for step, record in run.logger.records
    ]


def adam(group: str, params: list[nn.Parameter]):
    """Adam per group, the second halved every step: a scheduler whose state matters."""
    optimizer = torch.optim.Adam(params, lr=0.01 if group == "a" else 0.02)
    if group == "a":
        return optimizer, None
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)


def trainer(
    learner: nn.Module, directory: Path, steps: int, optimizer: Any = None, **config
) -> Trainer:
    return Trainer(
        learner=learner,
        optimizer=optimizer if optimizer is not None else build_optimisers(learner, adam),
        scheduler=None,
        sampler=SyntheticEpisodes(EVALUATION),
        val_episodes=FixedEpisodes(SyntheticEpisodes(EVALUATION), 2, seed=3),
        task=TASK,
        runtime=Hardware(device="cpu", precision="fp32").setup(),
        generator=torch.Generator().manual_seed(0),
        seed=0,
        checkpoints=Checkpoints(directory),
        logger=Recorder(),
        reporter=NullReporter(),
        config=TrainerConfig(max_steps=steps, val_every=2, log_every=1, **config),
        eval_batch_size=2,
        run_state={},
    )


def test_a_learner_without_groups_is_one_default_group() -> None:
    learner = nn.Linear(2, 2)
    assert list(parameter_groups(learner)) == [DEFAULT_GROUP]
    assert not isinstance(learner, Phased) and isinstance(Toy(), Phased)


def test_groups_must_not_share_or_miss_a_parameter() -> None:
    shared, missing = Toy(), Toy()
    shared.parameter_groups = lambda: {"a": [shared.a.weight], "b": [shared.a.weight]}
    with pytest.raises(ValueError, match="both group 'a' and 'b'"):
        parameter_groups(shared)
    missing.parameter_groups = lambda: {"a": list(missing.a.parameters())}
    with pytest.raises(ValueError, match="never train: b.weight"):
        parameter_groups(missing)


def test_phases_run_in_order_and_step_only_their_group(tmp_path) -> None:
    learner = Toy(order=("a", "b", "b"))
    run = trainer(learner, tmp_path, steps=1)
    a0, b0 = learner.a.weight.detach().clone(), learner.b.weight.detach().clone()
    run._train_step(1)
    assert [phase for phase, _ in learner.seen] == ["a", "b", "b"]
    # b was still at its start when a's phase ran; a had moved (its one step) when b's ran,
    # and stayed there through both of b's steps.
    assert torch.equal(learner.seen[0][1], b0)
    a1 = learner.seen[1][1]
    assert not torch.equal(a1, a0) and torch.equal(learner.seen[2][1], a1)
    assert torch.equal(learner.a.weight, a1) and not torch.equal(learner.b.weight, b0)


def test_each_group_logs_its_rate_and_clipped_norm(tmp_path) -> None:
    run = trainer(Toy(), tmp_path, steps=2, grad_clip=1.0)
    run.fit()
    step_one = dict(run.logger.records)[1]
    assert step_one["train/lr"] == 0.01  # the first group's, as with one optimiser
    assert step_one["train/lr_b"] == 0.005  # 0.02, halved at each of its two steps
    assert {"train/grad_norm", "train/grad_norm_b", "train/loss", "train/imitation"} <= set(
        step_one
    )


def test_every_groups_state_is_checkpointed_and_resumed_exactly(tmp_path) -> None:
    straight = trainer(Toy(), tmp_path / "straight", steps=4)
    straight.fit()
    first = trainer(Toy(), tmp_path / "resumed", steps=2)
    first.fit()
    saved = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert set(saved["optimizers"]) == {"b"} and saved["optimizers"]["b"]["scheduler"]
    resumed = trainer(Toy(), tmp_path / "resumed", steps=4)
    resumed.load_state_dict(saved)
    resumed.fit()
    assert logged(resumed) == logged(straight)[2:]
    for name, value in straight.learner.state_dict().items():
        assert torch.equal(resumed.learner.state_dict()[name], value), name


def test_a_checkpoint_without_a_groups_state_is_refused(tmp_path) -> None:
    run = trainer(Toy(), tmp_path, steps=1)
    state = run.state_dict()
    del state["optimizers"]["b"]
    with pytest.raises(CheckpointError, match="group\\(s\\) b"):
        trainer(Toy(), tmp_path, steps=1).load_state_dict(state)


def test_one_optimiser_keeps_its_checkpoint_layout_and_loads_older_ones(tmp_path) -> None:
    learner = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(learner.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
    single = Optimisers.single(optimizer, scheduler)
    learner(torch.ones(1, 3)).sum().backward()
    single[DEFAULT_GROUP].step()
    state = single.state_dict()
    assert state.keys() == {"optimizer", "scheduler", "optimizers"} and not state["optimizers"]
    assert state["optimizer"] == optimizer.state_dict()
    older = {k: v for k, v in state.items() if k != "optimizers"}  # before several groups
    twin = copy.deepcopy(learner)
    again = torch.optim.Adam(twin.parameters(), lr=0.1)
    Optimisers.single(again, torch.optim.lr_scheduler.StepLR(again, 1)).load_state_dict(older)
    assert again.state_dict()["state"][0]["step"] == 1


def test_a_learner_with_groups_needs_an_optimiser_for_each(tmp_path) -> None:
    learner = Toy()
    one = torch.optim.SGD(learner.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="the groups are \\['a', 'b'\\]"):
        trainer(learner, tmp_path, steps=1, optimizer=one)
    with pytest.raises(ValueError, match="without an optimiser: \\['c'\\]"):
        trainer(Toy(order=("a", "c")), tmp_path, steps=1)


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_each_gradient_entry_is_clipped_to_the_value(tmp_path, clip) -> None:
    """``trainer.grad_clip_value``: SGD at rate 1 moves no weight further than the clip, and
    the largest gradients reach it (without the clip they move further)."""
    learner = Toy(order=("a", "b"))

    def sgd(group: str, params: list[nn.Parameter]):
        return torch.optim.SGD(params, lr=1.0), None

    run = trainer(learner, tmp_path, 1, build_optimisers(learner, sgd), grad_clip_value=clip)
    before = [p.detach().clone() for p in learner.parameters()]
    run._train_step(1)
    moved = max(
        (p - b).abs().max().item() for p, b in zip(learner.parameters(), before, strict=True)
    )
    if clip is None:
        assert moved > 1e-2
    else:
        assert moved == pytest.approx(clip, rel=1e-9)
