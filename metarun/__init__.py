"""metarun: config-driven meta-learning experiments in PyTorch.

From Python, a trained run is one call away::

    learner = metarun.load("outputs/runs/<run>")
    classify = learner.adapt(support_x, support_y)
    labels = classify(query_x)
"""

from importlib.metadata import PackageNotFoundError, version

from metarun.api import FewShotLearner, load

try:
    __version__ = version("metarun")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["FewShotLearner", "__version__", "load"]
