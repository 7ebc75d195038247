"""Config values against their constructors' annotations: every shipped YAML passes, a wrong
type names its key and the type wanted."""

from __future__ import annotations

from typing import Literal

import pytest
from hydra import compose, initialize_config_dir

from metarun.cli import CONFIG_DIR, options
from metarun.config_types import check_config, describe, fits
from metarun.errors import ConfigError


def test_every_shipped_option_passes() -> None:
    """The options ``tests/test_configs.py`` does not build (``run.build`` checks types there):
    presets, and the paper and network configs, which apply by themselves to their algorithm
    and data set."""
    chosen = [[f"{g}={o}"] for g in ("experiment", "search", "debug") for o in options(g)]
    pairs = {
        (a, d)
        for a in options("algorithm")
        for d in options("dataset")
        for p in options("paper") + options("network")
        if p.startswith(f"{a}_{d}")
    }
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):  # once: fast
        for overrides in chosen + [[f"algorithm={a}", f"dataset={d}"] for a, d in sorted(pairs)]:
            check_config(compose(config_name="config", overrides=overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algorithm.inner_lr=abc"], "algorithm.inner_lr: must be a float, got 'abc'"),
        (["optimizer.lr=abc"], "optimizer.lr: must be a float, got 'abc'"),  # float | Tensor
        (["hardware.threads=x"], "hardware.threads: must be an int or null, got 'x'"),
        (["dataset.normalize=1"], "dataset.normalize: must be a bool (true or false), got 1"),
        (["trainer.max_steps=1.5"], "trainer.max_steps: must be an int, got 1.5"),
        (
            ["dataset=sinusoid", "dataset.amplitude=[1,2,3]"],
            "dataset.amplitude: must be a list of 2 (float, float), got [1, 2, 3]",
        ),
        (  # nested targets, and the sources of a multi-source data set
            ["algorithm=ucb1", "dataset=bandit", "algorithm.policy.scale=abc"],
            "algorithm.policy.scale: must be a float, got 'abc'",
        ),
        (
            ["dataset=multi", "dataset.sources.kanji.drawings=abc"],
            "dataset.sources.kanji.drawings: must be an int, got 'abc'",
        ),
        (
            ["algorithm=metagan", "optimizers.generator.optimizer.lr=abc"],
            "optimizers.generator.optimizer.lr: must be a float, got 'abc'",
        ),
    ],
)
def test_a_wrong_type_names_its_key(overrides, message, compose_config) -> None:
    with pytest.raises(ConfigError) as error:
        check_config(compose_config(overrides))
    assert str(error.value) == message


def test_what_a_value_cannot_decide_passes() -> None:
    assert fits(1, float) and not fits(True, int) and fits(None, int | None)
    assert fits([1, 2.5], list[float]) and fits("ab", Literal["ab", "c"]) and not fits("x", list)
    assert fits("anything", type(ConfigError)) and fits(object(), "Unresolved")
    assert describe(Literal["a", "b"]) == "one of 'a', 'b'"
