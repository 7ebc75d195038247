"""CNAPs and Simple CNAPs: FiLM starts as the identity, the set encoder ignores order, the
Mahalanobis head against an explicit per-class inverse (with the authors' one-shot covariance
computed their way), and with no covariance it is ProtoNet's."""

from __future__ import annotations

import functools

import pytest
import torch

from metarun.algorithms import CNAPs, ProtoNet, SimpleCNAPs
from metarun.algorithms import cnaps as cnaps_module
from metarun.algorithms.protonet import prototype_logits
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import Conv4
from metarun.models.set_encoder import SetEncoder
from metarun.pretrained import PretrainedSource, load_encoder

TASK = TaskSpec("classification", (1, 28, 28), 3)
SMALL = functools.partial(Conv4, hidden_channels=8)


def images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_film_is_the_identity_at_initialisation() -> None:
    torch.manual_seed(0)
    learner = CNAPs(SMALL, TASK, set_channels=8).eval()
    x = images(6)
    plain = learner.encoder(x)
    z = learner.set_encoder(x).unsqueeze(0)
    modulations = [(g[0], b[0]) for g, b in learner.adaptation(z)]
    with learner.film.conditioned(modulations):
        adapted = learner.encoder(x)
    assert not torch.equal(adapted, plain)  # the regularisers start at N(0, 0.001), not 0
    assert torch.allclose(adapted, plain, atol=0.05 * plain.abs().max().item())
    for layer in learner.adaptation.layers:
        layer.gamma_regulariser.data.zero_()
        layer.beta_regulariser.data.zero_()
    modulations = [(g[0], b[0]) for g, b in learner.adaptation(z)]
    with learner.film.conditioned(modulations):
        assert torch.equal(learner.encoder(x), plain)  # zero regularisers: exactly


def test_the_set_encoder_is_permutation_invariant() -> None:
    torch.manual_seed(0)
    encoder = SetEncoder((1, 28, 28), channels=8)
    x = images(7)
    order = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    for mode in (True, False):
        encoder.train(mode)
        assert torch.allclose(encoder(x[order]), encoder(x), atol=1e-5)


def authors_covariance(examples: torch.Tensor) -> torch.Tensor:
    """``estimate_cov`` of simple_cnaps.py, as written: rows are examples, transposed only
    when there is more than one, divided by ``columns - 1``, squeezed."""
    if examples.size(0) != 1:
        examples = examples.t()
    factor = 1.0 / (examples.size(1) - 1)
    examples = examples - examples.mean(dim=1, keepdim=True)
    return (factor * examples.matmul(examples.t())).squeeze()


def explicit_logits(support, labels, query, ways) -> torch.Tensor:
    task = authors_covariance(support)
    rows = []
    for x in query:
        row = []
        for k in range(ways):
            own = support[labels == k]
            share = own.shape[0] / (own.shape[0] + 1)
            q = share * authors_covariance(own) + (1 - share) * task + torch.eye(support.shape[1])
            difference = x - own.mean(0)
            row.append(-(difference @ torch.inverse(q) @ difference))
        rows.append(torch.stack(row))
    return torch.stack(rows)


@pytest.mark.parametrize("shots", [1, 3])
def test_the_mahalanobis_logits_equal_an_explicit_inverse_per_class(shots) -> None:
    generator = torch.Generator().manual_seed(shots)
    support = torch.randn(2, 3 * shots, 5, generator=generator, dtype=torch.float64)
    labels = torch.arange(3).repeat_interleave(shots).expand(2, -1)
    query = torch.randn(2, 4, 5, generator=generator, dtype=torch.float64)
    logits = cnaps_module.mahalanobis_logits(support, labels, query, 3)
    for episode in range(2):
        expected = explicit_logits(support[episode], labels[episode], query[episode], 3)
        assert torch.allclose(logits[episode], expected, atol=1e-8)


def test_with_no_covariance_the_logits_are_protonets(monkeypatch) -> None:
    generator = torch.Generator().manual_seed(0)
    support = torch.randn(2, 6, 5, generator=generator, dtype=torch.float64)
    labels = torch.arange(3).repeat_interleave(2).expand(2, -1)
    query = torch.randn(2, 4, 5, generator=generator, dtype=torch.float64)
    monkeypatch.setattr(cnaps_module, "covariance", lambda f, w: torch.zeros(*f.shape[:-2], 5, 5))
    logits = cnaps_module.mahalanobis_logits(support, labels, query, 3, one_shot="zero")
    assert torch.allclose(logits, prototype_logits(support, labels, query, 3), atol=1e-10)


def test_the_encoder_keeps_its_keys_so_a_pretrained_one_loads(tmp_path) -> None:
    protonet = ProtoNet(SMALL, TASK)
    learner = SimpleCNAPs(SMALL, TASK, set_channels=8)
    source = PretrainedSource(tmp_path / "p.pt", {"learner": protonet.state_dict()})
    assert load_encoder(learner, source) == len(protonet.state_dict())
    assert torch.equal(
        learner.encoder.features[0][0].weight, protonet.encoder.features[0][0].weight
    )


def test_bad_settings_name_their_key() -> None:
    with pytest.raises(ConfigError, match="^algorithm.one_shot_covariance: must be one of"):
        SimpleCNAPs(SMALL, TASK, one_shot_covariance="diagonal")
    with pytest.raises(ConfigError, match="^algorithm.regulariser_weight"):
        CNAPs(SMALL, TASK, regulariser_weight=-1.0)
