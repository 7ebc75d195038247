"""metarun: config-driven meta-learning experiments in PyTorch.

From Python, a trained run is one call away::

    learner = metarun.load("outputs/runs/<run>")
    classify = learner.adapt(support_x, support_y)
    labels = classify(query_x)
"""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarun.api import ActingLearner, FewShotLearner, Transitions, load

try:
    __version__ = version("metarun")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["ActingLearner", "FewShotLearner", "Transitions", "__version__", "load"]


def __getattr__(name: str) -> Any:
    """``metarun.load`` imports PyTorch on first use, so ``metarun-report`` starts fast."""
    if name in ("ActingLearner", "FewShotLearner", "Transitions", "load"):
        from metarun import api

        return getattr(api, name)
    raise AttributeError(f"module 'metarun' has no attribute {name!r}")
