"""Inductive or transductive, as measured: does one query's answer depend on the others?"""

from __future__ import annotations

import torch
from every_learner import EVALUATION, TASK, SyntheticEpisodes, small_learner
from torch import nn

from metarun.data.episodes import FixedEpisodes
from metarun.training.inference import INDUCTIVE, TRANSDUCTIVE, inference_kind

EPISODES = FixedEpisodes(SyntheticEpisodes(EVALUATION), 2, seed=0)
CPU = torch.device("cpu")


class Centring(nn.Module):
    """Scores each query by its distance to the query set's mean when ``over_queries``, else
    to the support set's: the one difference between transduction and induction."""

    def __init__(self, over_queries: bool) -> None:
        super().__init__()
        self.over_queries = over_queries

    def predict(self, batch):
        reference = batch.query_x if self.over_queries else batch.support_x
        centre = reference.mean(dim=1, keepdim=True)
        distance = (batch.query_x - centre).flatten(2).pow(2).sum(-1)
        return distance[..., None].expand(-1, -1, batch.ways)


def test_a_learner_using_the_query_set_is_transductive() -> None:
    assert inference_kind(Centring(True), EPISODES, TASK, CPU) == TRANSDUCTIVE
    assert inference_kind(Centring(False), EPISODES, TASK, CPU) == INDUCTIVE


def test_maml_normalising_with_batch_statistics_is_transductive_protonet_is_not() -> None:
    maml, protonet = small_learner("maml", "default"), small_learner("protonet", "default")
    assert inference_kind(maml, EPISODES, TASK, CPU) == TRANSDUCTIVE
    assert inference_kind(protonet, EPISODES, TASK, CPU) == INDUCTIVE
    assert maml.training and protonet.training  # the probe leaves the mode as it found it
