"""The authors' settings per (algorithm, data set): every ``paper/`` and ``network/`` config
composes with the pair it is named after and builds, and the networks have exactly the weights
of the authors' code (counts worked out from cbfinn/maml, openai/supervised-reptile,
HowToTrainYourMAMLPytorch and twitter/meta-learning-lstm; see configs/network/)."""

from __future__ import annotations

import pytest

from metarun.cli import CONFIG_DIR, options
from metarun.models.norm import NORMALISATION_LAYERS
from metarun.run import build

ALGORITHMS, DATASETS = options("algorithm"), options("dataset")


def pair(name: str, suffixes: tuple[str, ...]) -> tuple[str, str, str]:
    """``(algorithm, dataset, suffix)`` that a config's file name is made of."""
    for algorithm in ALGORITHMS:
        for dataset in DATASETS:
            for suffix in suffixes:
                if name == f"{algorithm}_{dataset}{suffix}":
                    return algorithm, dataset, suffix
    raise AssertionError(f"{name} is not <algorithm>_<dataset>{suffixes}")


def overrides_for(group: str, name: str) -> list[str]:
    if group == "network":
        algorithm, dataset, _ = pair(name, ("_conv4",))
        return [f"algorithm={algorithm}", f"dataset={dataset}"]
    algorithm, dataset, suffix = pair(name, ("", "_20way"))
    chosen = [f"paper={name}"] if suffix else []  # the 5-way ones apply by themselves
    return [f"algorithm={algorithm}", f"dataset={dataset}", *chosen]


def build_learner(cfg):
    data = build(cfg, "dataset")
    return build(cfg, "algorithm", model=build(cfg, "model"), task=data.task)


CONFIGS = [
    (group, p.stem)
    for group in ("paper", "network")
    for p in sorted((CONFIG_DIR / group).glob("*.yaml"))
]


@pytest.mark.parametrize(("group", "name"), CONFIGS)
def test_every_paper_and_network_config_builds_for_its_pair(group, name, compose_config) -> None:
    build_learner(compose_config(overrides_for(group, name)))


def test_a_network_config_applies_to_conv4_only(compose_config) -> None:
    cfg = compose_config(["algorithm=maml", "dataset=omniglot", "model=resnet12"])
    assert "downsample" not in cfg.model
    build_learner(compose_config(["algorithm=reptile", "dataset=mini_imagenet", "model=resnet12"]))


# (overrides, output map of the last block, weights of the classifier network)
AUTHORS_NETWORKS = [
    (["algorithm=maml", "dataset=omniglot"], (64, 2, 2), 112_005),
    (["algorithm=maml", "dataset=kanji"], (64, 2, 2), 112_005),
    (["algorithm=maml", "dataset=omniglot", "paper=maml_omniglot_20way"], (64, 2, 2), 112_980),
    (["algorithm=maml", "dataset=mini_imagenet"], (32, 5, 5), 32_773),
    (["algorithm=anil", "dataset=omniglot"], (64, 2, 2), 112_005),
    (["algorithm=metasgd", "dataset=mini_imagenet"], (32, 5, 5), 32_773),
    (["algorithm=reptile", "dataset=omniglot"], (64, 2, 2), 113_221),
    (
        ["algorithm=reptile", "dataset=omniglot", "paper=reptile_omniglot_20way"],
        (64, 2, 2),
        117_076,
    ),
    (["algorithm=reptile", "dataset=mini_imagenet"], (32, 6, 6), 34_661),
    (["algorithm=meta_lstm", "dataset=mini_imagenet"], (32, 5, 5), 32_901),
    # MAML++: 111,749 conv and linear weights plus BatchNorm's per-step (5) scales and offsets
    (["algorithm=mamlpp", "dataset=omniglot"], (64, 1, 1), 111_749 + 2 * 5 * 4 * 64),
    (["algorithm=mamlpp", "dataset=mini_imagenet"], (48, 5, 5), 69_701 + 2 * 5 * 4 * 48),
]


@pytest.mark.parametrize(("overrides", "maps", "weights"), AUTHORS_NETWORKS)
def test_the_authors_networks_have_their_shapes_and_weights(
    overrides, maps, weights, compose_config
) -> None:
    network = build_learner(compose_config(overrides)).model
    body = network.body if hasattr(network, "body") else network
    assert body.output_shape == maps
    assert sum(p.numel() for p in network.parameters()) == weights


def test_maml_adapts_no_normalisation_weights_as_its_code(compose_config) -> None:
    maml = build_learner(compose_config(["algorithm=maml", "dataset=omniglot"]))
    norms = {
        f"{prefix}.{name}"
        for prefix, module in maml.model.named_modules()
        if isinstance(module, NORMALISATION_LAYERS)
        for name, _ in module.named_parameters(recurse=False)
    }
    assert len(norms) == 4  # one offset per block, no scale
    adapted = set(maml.inner_parameters())
    assert not adapted & norms
    assert adapted | norms == {name for name, _ in maml.model.named_parameters()}
    mean_adapted = build_learner(
        compose_config(["algorithm=maml", "dataset=omniglot", "algorithm.adapt_norm=true"])
    )
    assert norms <= set(mean_adapted.inner_parameters())


def test_maml_on_mini_imagenet_clips_each_entry_as_its_code(compose_config) -> None:
    """cbfinn/maml clips each meta-gradient entry to 10 of its outer loss, which sums the
    N*Q query cross-entropies over K: 75 x metarun's mean loss for 5-way 1-shot, 15 queries."""
    cfg = compose_config(["algorithm=maml", "dataset=mini_imagenet"])
    ways, shots, queries = cfg.dataset.ways, cfg.dataset.shots, cfg.algorithm.train_queries
    assert (ways, shots, queries) == (5, 1, 15)
    assert cfg.trainer.grad_clip_value == pytest.approx(10 / (ways * queries / shots), abs=1e-4)
    assert compose_config(["algorithm=maml"]).trainer.grad_clip_value is None
