"""scripts/maml_vs_learn2learn.py: metarun's arm is the run ``metarun algorithm=maml
dataset=omniglot`` trains, and learn2learn's loop computes the same meta-update (the timing
itself is a README command, not a test)."""

from __future__ import annotations

import argparse
import copy
from functools import partial

import pytest
import torch
from script_modules import load_script

from metarun.data.episodes import EpisodeBatch
from metarun.data.task import TaskSpec
from metarun.run import build

TASK = TaskSpec("classification", (1, 28, 28), 5)


@pytest.fixture(scope="module")
def script():
    return load_script("maml_vs_learn2learn")


def arguments(**changes) -> argparse.Namespace:
    return argparse.Namespace(
        **{"root": "/data", "inner_steps": 1, "first_order": False, **changes}
    )


def episodes(tasks: int = 3) -> EpisodeBatch:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(5).expand(tasks, -1)
    return EpisodeBatch(
        support_x=torch.rand(tasks, 5, 1, 28, 28, generator=g, dtype=torch.float64),
        support_y=labels,
        query_x=torch.rand(tasks, 5, 1, 28, 28, generator=g, dtype=torch.float64),
        query_y=labels,
        ways=5,
    )


def test_metarun_arm_is_the_authors_omniglot_run(script) -> None:
    cfg = script.configured(arguments(inner_steps=5, first_order=True))
    assert cfg.algorithm.meta_batch_size == 32 and cfg.algorithm.train_queries == 1
    assert cfg.algorithm.inner_steps == 5 and cfg.algorithm.first_order is True
    assert cfg.model.downsample == "stride" and cfg.dataset.background.endswith("small1")
    maml = build(cfg, "algorithm", model=build(cfg, "model"), task=TASK)
    assert sum(p.numel() for p in maml.parameters()) == 112_005


def test_learn2learn_loop_takes_metaruns_meta_step(script) -> None:
    pytest.importorskip("learn2learn")
    cfg = script.configured(arguments())
    torch.manual_seed(0)
    maml = build(cfg, "algorithm", model=build(cfg, "model"), task=TASK)
    maml.adapt_norm = True  # learn2learn adapts BatchNorm's offsets too
    maml.double()
    twin = copy.deepcopy(maml.model)
    batch = episodes()
    script.metarun_step(maml, torch.optim.SGD(maml.parameters(), lr=0.1))(batch)
    script.learn2learn_step(twin, maml.inner_lr, 1, False, partial(torch.optim.SGD, lr=0.1))(batch)
    for (name, ours), theirs in zip(maml.model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12, msg=name)
