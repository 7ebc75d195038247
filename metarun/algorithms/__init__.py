"""Meta-learners: one module per algorithm, all satisfying ``MetaLearner``.

The optimisation-based family (MAML, ANIL, Meta-SGD, MAML++, Reptile, Meta-LSTM, PLATIPUS)
shares one functional inner loop, ``metarun.algorithms.gradient``. The metric family (ProtoNet,
Matching, Relation and Siamese networks, Baseline/Baseline++) classifies by comparing
embeddings; the memory family (MANN, SNAIL) reads an episode as a sequence. MetaGAN makes a
host of the first two families the discriminator of a task-conditioned GAN."""

from metarun.algorithms.anil import ANIL
from metarun.algorithms.base import (
    Acting,
    ClassSupervised,
    MetaLearner,
    ModelFactory,
    Scheduled,
    Updating,
)
from metarun.algorithms.baseline import Baseline
from metarun.algorithms.cnaps import CNAPs, SimpleCNAPs
from metarun.algorithms.gradient import GradientLearner, SGDStep, UpdateRule
from metarun.algorithms.maml import MAML
from metarun.algorithms.mamlpp import MAMLPlusPlus
from metarun.algorithms.mann import MANN
from metarun.algorithms.matchingnet import MatchingNet
from metarun.algorithms.meta_lstm import MetaLSTM
from metarun.algorithms.metagan import MetaGAN
from metarun.algorithms.metasgd import MetaSGD
from metarun.algorithms.platipus import PLATIPUS
from metarun.algorithms.protonet import ProtoNet
from metarun.algorithms.relationnet import RelationNet
from metarun.algorithms.reptile import Reptile
from metarun.algorithms.rl2 import RL2
from metarun.algorithms.siamese import Siamese
from metarun.algorithms.snail import SNAIL
from metarun.algorithms.trial_baselines import PolicyBaseline

__all__ = [
    "ANIL",
    "RL2",
    "Acting",
    "PolicyBaseline",
    "Updating",
    "MAML",
    "MANN",
    "PLATIPUS",
    "SNAIL",
    "Baseline",
    "CNAPs",
    "SimpleCNAPs",
    "ClassSupervised",
    "GradientLearner",
    "MAMLPlusPlus",
    "MatchingNet",
    "MetaGAN",
    "MetaLSTM",
    "MetaLearner",
    "MetaSGD",
    "ModelFactory",
    "ProtoNet",
    "RelationNet",
    "Reptile",
    "SGDStep",
    "Scheduled",
    "Siamese",
    "UpdateRule",
]
