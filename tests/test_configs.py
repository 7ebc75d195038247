"""Every option of every config group composes and builds; every experiment preset runs."""

from __future__ import annotations

import inspect

import pytest
import torch

from metarun.cli import CONFIG_DIR, GROUPS, options
from metarun.errors import ConfigError
from metarun.run import RunContext, build, build_optimisers, run

ALL_OPTIONS = [(group, option) for group in GROUPS for option in options(group)]


def test_every_group_has_options_and_they_are_listed_here() -> None:
    on_disk = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert on_disk == set(GROUPS) | {"hydra", "paper", "network"}
    assert all(options(group) for group in GROUPS)


# Options of tasks you act in compose with a partner of their kind (the defaults are images).
ACTING_PARTNER = {
    ("dataset", "bandit"): "algorithm=rl2",
    ("dataset", "tabular_mdp"): "algorithm=rl2",
    ("algorithm", "rl2"): "dataset=bandit",
    ("algorithm", "random"): "dataset=bandit",
    ("algorithm", "ucb1"): "dataset=bandit",
    ("algorithm", "thompson"): "dataset=bandit",
    ("algorithm", "gittins"): "dataset=bandit",
    ("algorithm", "psrl"): "dataset=tabular_mdp",
}


@pytest.mark.parametrize(("group", "option"), [o for o in ALL_OPTIONS if o[0] != "experiment"])
def test_every_option_composes_and_builds(group, option, compose_config) -> None:
    partner = ACTING_PARTNER.get((group, option))
    # Building reads no data: defaults suffice.
    cfg = compose_config([f"{group}={option}", *([partner] if partner else [])])
    if group == "hardware" and option == "gpu" and not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="hardware.device"):
            build(cfg, "hardware").setup()
        return
    if group == "hardware" and option == "ddp":  # runs under torchrun: tests/test_distributed.py
        with pytest.raises(ConfigError, match="torchrun"):
            build(cfg, "hardware").setup()
        cfg.hardware = compose_config([]).hardware
    runtime = build(cfg, "hardware").setup()
    data = build(cfg, "dataset")
    learner = build(cfg, "algorithm", model=build(cfg, "model"), task=data.task)
    runtime.place(learner)
    if not any(True for _ in learner.parameters()):  # a fixed strategy: nothing to optimise
        assert partner is not None and hasattr(learner, "policy")
        return
    for group in build_optimisers(cfg, learner).groups.values():  # one per parameter group
        assert isinstance(group.optimizer, torch.optim.Optimizer)
        group.step()  # the scheduler too, where there is one
    make_logger = build(cfg, "logger")
    signature = inspect.signature(make_logger.func)
    signature.bind(identity=None, run_dir=None, config={}, **make_logger.keywords)


def test_the_paper_settings_follow_the_algorithm_and_data_set(compose_config) -> None:
    sinusoid = compose_config(["dataset=sinusoid"])
    assert sinusoid.algorithm.inner_lr == 0.01 and sinusoid.trainer.max_steps == 70000
    omniglot = compose_config([])
    assert omniglot.algorithm.inner_lr == 2.0 and omniglot.algorithm.meta_batch_size == 32
    assert omniglot.dataset.ways == 5 and omniglot.algorithm.train_queries == 1
    protonet = compose_config(["algorithm=protonet"])
    assert protonet.scheduler.step_size == 2000 and protonet.algorithm.train_ways == 60
    assert compose_config(["algorithm=protonet", "optimizer=adam"]).scheduler is None


# Presets on their own data sets, made small: the Omniglot sample, a few rendered kanji.
SMALL_DATA = {
    "Omniglot": lambda tiny: [
        o for o in tiny if o.startswith(("dataset.root", "dataset.cache_dir"))
    ],
    "Kanji": lambda tiny: [
        "dataset.characters_per_split=24",  # the quickstart trains 20-way
        "dataset.drawings=16",  # 1 shot + 15 queries
        "dataset.workers=1",
        *[o for o in tiny if o.startswith("dataset.cache_dir")],
    ],
    "MultiSource": lambda tiny: [
        "dataset.sources.kanji.characters_per_split=24",
        "dataset.sources.kanji.drawings=16",
        "dataset.sources.kanji.workers=1",
        "dataset.variable={max_ways: 5, max_support: 10, max_query: 2}",
        *[
            o.replace("dataset.", f"dataset.sources.{source}.", 1)
            for o in tiny
            for source in ("kanji", "omniglot")
            if o.startswith("dataset.cache_dir")
            or (source == "omniglot" and o.startswith("dataset.root"))
        ],
    ],
}


@pytest.mark.usefixtures("isolated_data_cache")
@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_preset_runs(experiment, tmp_path, compose_config, tiny_overrides) -> None:
    target = compose_config([f"experiment={experiment}"]).dataset._target_.rsplit(".", 1)[-1]
    small_data = SMALL_DATA.get(target, lambda tiny: [])(tiny_overrides("maml"))
    cfg = compose_config(
        [
            f"experiment={experiment}",
            "logger=none",
            "trainer.max_steps=2",
            "trainer.val_every=1",
            "eval.val_episodes=2",
            "eval.test_episodes=2",
            "algorithm.meta_batch_size=2",
            *small_data,
        ]
    )
    run(cfg, RunContext(tmp_path, experiment))
    assert (tmp_path / "summary.json").is_file()
