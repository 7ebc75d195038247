"""Task families you act in (meta-RL): batched environments in torch, one trial per row.

``BernoulliBandits`` and ``RandomMDPs`` are RL²'s (Duan et al. 2016), ``PointGoals`` is the MAML
paper's 2-D navigation (Finn et al. 2017); each draws a CPU plan from a seeded generator and
makes ``[B]`` environments from it, like the image data sets' samplers (``metarun.data``).
"""

from metarun.envs.bandit import BernoulliBandits
from metarun.envs.point_nav import PointGoals
from metarun.envs.tabular_mdp import RandomMDPs

__all__ = ["BernoulliBandits", "PointGoals", "RandomMDPs"]
