"""Episode and trial shapes refused from the config alone, before any data loads."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from metarun.errors import ConfigError
from metarun.shape_checks import check_shapes


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["dataset.ways=1"], "dataset.ways: must be at least 2 (a 1-way episode is always right)"),
        (["dataset.shots=0"], "dataset.shots: must be at least 1, got 0"),
        (["dataset.queries=-1"], "dataset.queries: must be at least 1, got -1"),
        (["dataset.shots=1.5"], "dataset.shots: must be an integer of at least 1, got 1.5"),
        (["algorithm=protonet", "algorithm.train_ways=1"], "algorithm.train_ways: must be at"),
        (["algorithm=metagan", "algorithm.protonet.train_queries=0"], "algorithm.protonet.train_q"),
        (["dataset.variable={min_ways: 1}"], "dataset.variable.min_ways: must be at least 2"),
        (["dataset.shots=10", "dataset.queries=15"], "dataset.shots + dataset.queries: 10 + 15"),
        (["dataset=sinusoid", "dataset.shots=0"], "dataset.shots: must be at least 1"),
        (["dataset=sineline", "dataset.queries=0"], "dataset.queries: must be at least 1"),
        (["dataset=bandit", "algorithm=rl2", "dataset.arms=1"], "dataset.arms: must be at least 2"),
        (["dataset=tabular_mdp", "algorithm=rl2", "dataset.actions=1"], "dataset.actions: must"),
        (["dataset=point_nav", "dataset.rollouts=0"], "dataset.rollouts: must be at least 1"),
        (["debug=overfit", "debug.overfit_episodes=0"], "debug.overfit_episodes: must be at"),
    ],
)
def test_an_impossible_shape_names_its_key(overrides, message, compose_config) -> None:
    resolved = OmegaConf.to_container(compose_config(overrides), resolve=True)
    with pytest.raises(ConfigError) as error:
        check_shapes(resolved)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("data", ["kanji", "sinusoid", "bandit", "tabular_mdp", "point_nav"])
def test_the_shipped_shapes_pass(data, compose_config) -> None:
    partner = ["algorithm=rl2"] if data in ("bandit", "tabular_mdp") else []
    check_shapes(
        OmegaConf.to_container(compose_config([f"dataset={data}", *partner]), resolve=True)
    )
