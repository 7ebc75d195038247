"""scripts/variable_episodes.py: its padded ProtoNet loss is ProtoNet's own where nothing is
padded, masks what is, and the benchmark runs."""

from __future__ import annotations

import torch
from script_modules import load_script

from metarun.algorithms import ProtoNet
from metarun.data.episodes import EpisodeList
from metarun.data.task import TaskSpec
from metarun.data.variable_shape import VariableShape
from metarun.models import Conv4

bench = load_script("variable_episodes")
SHAPE = VariableShape(max_ways=6, max_support=12, max_query=2)


def learner() -> ProtoNet:
    torch.manual_seed(0)
    task = TaskSpec("classification", (1, 28, 28), SHAPE.max_ways)
    return ProtoNet(lambda shape, out: Conv4(shape, out, hidden_channels=8), task).eval()


def test_the_padded_loss_is_protonets_on_one_episode_and_ignores_padding() -> None:
    episodes = bench.sampler(SHAPE, torch.device("cpu"))
    batch = episodes.gather(episodes.draw(3, torch.Generator().manual_seed(1)))
    net = learner()
    with torch.no_grad():
        for episode in batch.episodes:
            alone = bench.padded_loss(net, EpisodeList([episode]))
            torch.testing.assert_close(alone, net.meta_loss(episode)[0])
        # Padded together, the loss is the mean over every real query of the meta-batch.
        together = bench.padded_loss(net, batch)
        per_query = [net.meta_loss(e)[0] * e.query_y.shape[1] for e in batch.episodes]
        queries = sum(e.query_y.shape[1] for e in batch.episodes)
        torch.testing.assert_close(together, torch.stack(per_query).sum() / queries)


def test_the_benchmark_runs(capsys) -> None:
    bench.main(
        [
            "--episodes",
            "2",
            "--batches",
            "1",
            "--max-ways",
            "5",
            "--max-support",
            "10",
            "--max-query",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert "padded / per-episode" in out and "padding:" in out
