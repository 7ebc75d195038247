"""A multi-source run end to end, in process (``dataset=multi``): the Omniglot sample's small1
alphabets train as one source, its small2 folder is a second, held-out source read as a plain
image folder; variable-shape episodes. Per-source test results reach ``summary.json`` and
``metrics.jsonl``, every learner meets the same fixed episodes, and ``metarun.load`` rebuilds
the learner from its checkpoint alone."""

from __future__ import annotations

import json

import torch

import metarun
from metarun import run as run_module
from metarun.data.episodes import EpisodeList
from metarun.run import RunContext, run


def overrides(root, cache, algorithm: str, *extra: str) -> list[str]:
    return [
        "dataset=multi",
        "~dataset@dataset.sources.kanji",
        f"dataset.sources.omniglot.root={root}",
        "dataset.sources.omniglot.background=images_background_small1",
        "dataset.sources.omniglot.evaluation=images_background_small2",
        "dataset.sources.omniglot.val_alphabets=1",
        f"dataset.sources.omniglot.cache_dir={cache}",
        "+dataset@dataset.sources.glyphs=folder",
        f"dataset.sources.glyphs.root={root}/images_background_small2",
        "dataset.sources.glyphs.channels=1",
        "dataset.sources.glyphs.invert=true",
        f"dataset.sources.glyphs.cache_dir={cache}",
        "dataset.held_out=[glyphs]",
        "dataset.variable={min_ways: 3, max_ways: 5, max_support: 10, max_query: 2}",
        f"algorithm={algorithm}",
        "logger=none",
        "model.hidden_channels=8",
        "trainer.max_steps=2",
        "trainer.val_every=2",
        "eval.val_episodes=2",
        "eval.test_episodes=3",
        "eval.batch_size=2",
        *extra,
    ]


def test_a_multi_source_run_reports_each_source_on_shared_episodes(
    tmp_path, omniglot_sample_root, data_cache_dir, compose_config, fixed_plans
) -> None:
    plans = fixed_plans
    for current, extra in (("protonet", ()), ("maml", ("trainer.max_steps=0",))):
        plans.label = current
        cfg = compose_config(overrides(omniglot_sample_root, data_cache_dir, current, *extra))
        run(cfg, RunContext(tmp_path / current, current))
    assert all(map(torch.equal, plans["protonet"], plans["maml"]))  # the same fixed episodes

    summary = json.loads((tmp_path / "protonet" / "summary.json").read_text())
    sources = summary["test"]["sources"]
    assert summary["test"]["episodes"] == 6  # three per source
    assert {name: (own["episodes"], own["held_out"]) for name, own in sources.items()} == {
        "omniglot": (3, False),
        "glyphs": (3, True),
    }
    means = [own["mean"] for own in sources.values()]
    assert abs(summary["test"]["mean"] - sum(means) / 2) < 1e-6
    records = [json.loads(line) for line in (tmp_path / "protonet" / "metrics.jsonl").open()]
    assert any("test/glyphs/acc" in r and "test/omniglot/acc_ci95" in r for r in records)
    assert any("val/omniglot/acc" in r for r in records)
    assert not any("val/glyphs/acc" in r for r in records)  # a held-out source never validates

    learner = metarun.load(tmp_path / "maml")  # the checkpoint alone: a 5-output head
    episode = plans["maml"][1][:1]  # the first test episode's plan
    data = run_module.build(
        compose_config(overrides(omniglot_sample_root, data_cache_dir, "maml")), "dataset"
    )
    batch = data.sampler("test", data.episodes).gather(episode)
    assert isinstance(batch, EpisodeList)
    one = batch.episodes[0]
    adapted = learner.adapt(one.support_x[0], one.support_y[0])
    assert adapted.logits(one.query_x[0]).shape == (one.query_y.shape[1], one.ways)
