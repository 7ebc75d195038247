"""Meta-learners: one module per algorithm, all satisfying ``MetaLearner``."""

from metarun.algorithms.base import MetaLearner, ModelFactory, Scheduled
from metarun.algorithms.gradient import GradientLearner, SGDStep, UpdateRule
from metarun.algorithms.maml import MAML
from metarun.algorithms.protonet import ProtoNet

__all__ = [
    "MAML",
    "GradientLearner",
    "MetaLearner",
    "ModelFactory",
    "ProtoNet",
    "SGDStep",
    "Scheduled",
    "UpdateRule",
]
