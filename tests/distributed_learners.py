"""Run by ``tests/test_distributed.py`` under torchrun (2 processes, gloo on the CPU), not
collected by pytest: the ``Runtime``'s collectives (``distributed_checks``), then every learner of
``every_learner.CASES`` (every algorithm YAML, with its default backbone and with ResNet-12's
DropBlock) trained by the real ``Trainer`` for two meta-steps, each process computing its half of
every meta-batch, then validated on fixed episodes that the processes share out. Rank 0 writes
each learner's final state and validation score to ``<out>/<case>.pt``; the test trains the same
cases in one process and compares."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from distributed_checks import check_collectives
from every_learner import CASES, EVALUATION, TASK, SyntheticEpisodes, small_learner

from metarun import distributed
from metarun.data.episodes import FixedEpisodes
from metarun.hardware import DistributedHardware, Runtime
from metarun.tracking.console import NullReporter
from metarun.tracking.null import NullLogger
from metarun.training.checkpoint import Checkpoints
from metarun.training.optimisers import build_optimisers
from metarun.training.trainer import Trainer, TrainerConfig


def case_name(algorithm: str, backbone: str) -> str:
    return f"{algorithm}-{backbone}"


def sgd(group: str, params: list[torch.nn.Parameter]) -> tuple[torch.optim.Optimizer, None]:
    return torch.optim.SGD(params, lr=0.05), None


def train(algorithm: str, backbone: str, runtime: Runtime, out: Path) -> dict[str, Any] | None:
    """Two meta-steps and one validation; None if the learner refuses the backbone."""
    learner = small_learner(algorithm, backbone)
    if learner is None:
        return None
    runtime.place(learner)
    name = case_name(algorithm, backbone)
    trainer = Trainer(
        learner=learner,
        # SGD, one per parameter group: Adam would turn float noise in zero gradients (conv
        # biases before BatchNorm) into full-size steps.
        optimizer=build_optimisers(learner, sgd),
        scheduler=None,
        sampler=SyntheticEpisodes(learner.training_episodes(EVALUATION)),
        val_episodes=FixedEpisodes(SyntheticEpisodes(EVALUATION), 4, seed=7),
        task=TASK,
        runtime=runtime,
        generator=torch.Generator().manual_seed(0),
        seed=0,
        checkpoints=Checkpoints(out / name),
        logger=NullLogger(),
        reporter=NullReporter(),
        config=TrainerConfig(max_steps=2, val_every=2),
        eval_batch_size=2,
        run_state={},
    )
    trainer.fit()
    return {"learner": learner.state_dict(), "val": trainer.best_score}


def main(out: Path) -> None:
    runtime = DistributedHardware(device="cpu", threads=1).setup()
    check_collectives(runtime)
    for algorithm, backbone in CASES:
        result = train(algorithm, backbone, runtime, out)
        if result is not None and runtime.is_main:
            torch.save(result, out / f"{case_name(algorithm, backbone)}.pt")
    distributed.shutdown()
    print(f"rank {runtime.rank}: trained {len(CASES)} cases", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
