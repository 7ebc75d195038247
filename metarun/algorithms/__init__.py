"""Meta-learners: one module per algorithm, all satisfying ``MetaLearner``.

The optimisation-based family (MAML, ANIL, Meta-SGD, MAML++, Reptile, Meta-LSTM) shares one
functional inner loop, ``metarun.algorithms.gradient``; ProtoNet classifies by distances."""

from metarun.algorithms.anil import ANIL
from metarun.algorithms.base import MetaLearner, ModelFactory, Scheduled
from metarun.algorithms.gradient import GradientLearner, SGDStep, UpdateRule
from metarun.algorithms.maml import MAML
from metarun.algorithms.mamlpp import MAMLPlusPlus
from metarun.algorithms.meta_lstm import MetaLSTM
from metarun.algorithms.metasgd import MetaSGD
from metarun.algorithms.protonet import ProtoNet
from metarun.algorithms.reptile import Reptile

__all__ = [
    "ANIL",
    "MAML",
    "GradientLearner",
    "MAMLPlusPlus",
    "MetaLSTM",
    "MetaLearner",
    "MetaSGD",
    "ModelFactory",
    "ProtoNet",
    "Reptile",
    "SGDStep",
    "Scheduled",
    "UpdateRule",
]
