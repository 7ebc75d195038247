"""CNAPs and Simple CNAPs: FiLM starts as the identity, the set encoder ignores order, the
Mahalanobis head against an explicit per-class inverse (with the authors' one-shot covariance
computed their way), and with no covariance it is ProtoNet's."""

from __future__ import annotations

import functools

import pytest
import torch
from learner_helpers import image_batch

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


def test_autoregressive_film_conditions_each_layer_on_the_adapted_layers_before_it() -> None:
    torch.manual_seed(0)
    learner = CNAPs(SMALL, TASK, set_channels=8, feature_adaptation="film+ar").eval()
    context, target = images(6, seed=1), images(4, seed=2)
    z = learner.set_encoder(context)
    support, modulations = learner._adapted_context(context, z)
    assert len(modulations) == len(learner.film.layers) == 4
    with learner.film.conditioned(modulations):  # the target pass reuses exactly these
        assert torch.equal(learner.encoder(context).flatten(1), support)
    # Layer 2's modulation is made from what layer 1, as modulated, passed on to it.
    for layer in learner.adaptation.layers[:1]:
        layer.beta_regulariser.data.fill_(1.0)
    _, changed = learner._adapted_context(context, z)
    assert torch.equal(changed[0][0], modulations[0][0])  # layer 1's gamma: unchanged
    assert not torch.equal(changed[1][0], modulations[1][0])
    support_y = torch.arange(3).repeat(2)[None]
    support, query = learner.embed(context[None], target[None])
    assert learner.logits(support, support_y, query, 3).shape == (1, 4, 3)


def test_autoregressive_film_trains_its_generators() -> None:
    torch.manual_seed(0)
    learner = SimpleCNAPs(
        SMALL, TASK, set_channels=8, meta_batch_size=2, feature_adaptation="film+ar"
    )
    loss, _ = learner.double().meta_loss(image_batch(2, 3, 2, 2, size=28))
    loss.backward()
    assert learner.adaptation.layers[2].gamma_regulariser.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="^algorithm.feature_adaptation: must be one of"):
        CNAPs(SMALL, TASK, feature_adaptation="film+lstm")
