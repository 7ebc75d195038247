"""The discriminator of a semi-supervised GAN as a few-shot classifier (Salimans et al. 2016,
"Improved Techniques for Training GANs", section 5; MetaGAN, Zhang et al. 2018, section 3):
N real classes and one more, "fake", whose logit is fixed at 0.

With logits ``l`` for the N classes and 0 for the fake one, ``P(fake | x) = 1 / (1 + sum_k
exp l_k)``, so ``P(real | x) = sigmoid(logsumexp(l))``, and the (N+1)-way cross-entropy of a real
example of class y is ``CE_N(l, y) + softplus(-logsumexp(l))`` (the supervised term plus
``-log P(real)``) and of a generated one ``softplus(logsumexp(l)) = -log P(fake)``: one
cross-entropy over N+1 outputs is the discriminator's whole loss, labelled and real/fake terms
together. Fixing the extra logit loses nothing, as softmax is unchanged by a shift.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.errors import ConfigError


def with_fake_class(logits: Tensor) -> Tensor:
    """``[..., N]`` class logits to ``[..., N+1]``, the last (fake) one 0."""
    return torch.cat([logits, logits.new_zeros(*logits.shape[:-1], 1)], dim=-1)


def real_probability(logits: Tensor) -> Tensor:
    """``P(real | x)`` from the N class logits ``[..., N]`` (fake logit 0): ``[...]``."""
    return torch.sigmoid(torch.logsumexp(logits, dim=-1))


def discriminator_loss(logits: Tensor, labels: Tensor, fake_logits: Tensor) -> Tensor:
    """Mean (N+1)-way cross-entropy of real examples ``logits [n, N]`` with ``labels`` and of
    generated ones ``fake_logits [m, N]`` labelled N (the fake class)."""
    ways = logits.shape[-1]
    fake_labels = labels.new_full(fake_logits.shape[:1], ways)
    return F.cross_entropy(
        with_fake_class(torch.cat([logits, fake_logits])), torch.cat([labels, fake_labels])
    )


def feature_matching(real: Tensor, fake: Tensor) -> Tensor:
    """The generator's loss (Salimans et al. 2016, 3.1): the squared distance between the mean
    features of real ``[..., n, D]`` and generated ``[..., m, D]`` examples: ``[...]``."""
    return ((real.mean(-2) - fake.mean(-2)) ** 2).sum(-1)


class FakeClassifier(nn.Module):
    """A classifier network split at its head: ``forward(x)`` gives N+1 logits (the fake one
    0), ``forward(x, features=True)`` also the penultimate features the generator matches."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        head = getattr(network, "head", None)
        if not isinstance(head, nn.Linear):
            raise ConfigError(
                "model", "MetaGAN's discriminator needs a classifier with a linear head (conv4)"
            )
        network.head = None  # the backbone alone now returns its features
        self.body = network
        self.head = head

    def forward(self, x: Tensor, features: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        z = self.body(x).flatten(1)
        logits = with_fake_class(self.head(z))
        return (logits, z) if features else logits


__all__ = [
    "FakeClassifier",
    "discriminator_loss",
    "feature_matching",
    "real_probability",
    "with_fake_class",
]
