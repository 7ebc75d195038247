"""Meta-learners: one module per algorithm, all satisfying ``MetaLearner``."""

from metarun.algorithms.base import MetaLearner, ModelFactory
from metarun.algorithms.maml import MAML
from metarun.algorithms.protonet import ProtoNet

__all__ = ["MAML", "MetaLearner", "ModelFactory", "ProtoNet"]
