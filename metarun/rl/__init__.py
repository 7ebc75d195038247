"""Reinforcement-learning pieces the meta-RL learners share: generalised advantage estimation
over whole trials (``gae``) and PPO's losses (``ppo``)."""

from metarun.rl.gae import trial_advantages
from metarun.rl.ppo import clipped_surrogate, explained_variance, normalise, value_loss

__all__ = ["clipped_surrogate", "explained_variance", "normalise", "trial_advantages", "value_loss"]
