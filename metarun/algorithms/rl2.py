"""RL² (Duan, Schulman, Chen, Bartlett, Sutskever & Abbeel 2016, "RL²: Fast Reinforcement
Learning via Slow Reinforcement Learning", arXiv 1611.02779): a recurrent policy trained across
many tasks so that its hidden state becomes a learning algorithm for a new one.

At every step the GRU reads the observation (one-hot for tabular states; empty for bandits,
whose observation is constant), the previous action (one-hot), the previous reward and the
previous done flag (``step_inputs``; all zero at a trial's first step). Its hidden state runs
through every episode of a trial and starts at zero for each new trial (``RL2Policy.start``), so
whatever the agent learns about a task lives in that state. A policy head and a value head read
the same GRU state. Default size: 256 GRU units, the paper's.

The slow learner is PPO (Schulman et al. 2017), where the paper used TRPO: PPO needs only
first-order steps with Adam, no conjugate gradient or line search, so it is a plain optimiser
step like every other learner's and batches well on a GPU; it is the usual successor to TRPO
with the same trust-region intent. Its details are named constructor arguments
(``metarun.rl.ppo`` holds the losses, read from CleanRL's ``cleanrl/ppo.py``):

- advantages: GAE(``gamma``, ``gae_lambda``) over the *whole trial* (``metarun.rl.gae``);
  episode boundaries inside a trial do not cut it, since the trial is RL²'s episode. The
  defaults, gamma 0.99 and lambda 0.3, are those of ``relearn``'s RL² bandit command (docs.rs
  relearn 0.1.0, README, a TRPO replication of the paper); the paper's own appendix could not be
  read here, so they are unchecked against it.
- ``normalise_advantages`` (True): per minibatch, as CleanRL does.
- ``clip`` (0.2): the surrogate's ratio clip.
- ``value_clip`` (None, off): CleanRL clips the value by ``clip`` around the rollout's value by
  default; our values are on the raw return scale (up to 10 for 10-pull bandits, about 200 for
  tabular MDPs), where a 0.2 clip only slows the value function down.
- ``value_coef`` (0.5) and ``entropy_coef`` (0.01): the weights of the value loss and of the
  entropy bonus in the one loss (the heads share the GRU), CleanRL's defaults.
- ``epochs`` (4) passes over the rollout, each in ``minibatches`` (4) minibatches of *whole
  trials* (the GRU needs the sequence), in a fresh order each epoch; the order of trial ``i`` is
  drawn from its own key (``fold(stream(key, "minibatches"), epoch)``), never from torch's
  global generator.
- ``max_grad_norm`` (0.5): the gradient norm is clipped before every update; in the runner
  that is ``trainer.grad_clip``, which ``rl2.yaml`` sets.
- The optimiser (Adam; CleanRL uses ``eps=1e-5``) and learning-rate annealing (CleanRL anneals
  linearly to 0 over the run) belong to the runner, as for every learner
  (``optimizer=adam_linear``).

Rollouts: ``train_step`` plays its ``[B]`` trials with ``metarun.envs.evaluate.play``, the loop
that evaluation uses, so a training trial is played exactly as a test trial would be. Actions
are drawn from ``fold(stream(env_key, "policy"), t)``, so a trial's actions are a function of
its plan row and the weights, not of which trials share its batch.

In the runner (``algorithm=rl2 dataset=bandit|tabular_mdp``): each meta-step plays
``meta_batch_size`` fresh trials and makes its ``epochs * minibatches`` updates through the
trainer's ``update`` (``Updating``), which backpropagates, averages across processes, clips the
gradient norm (``trainer.grad_clip``: CleanRL's ``max_grad_norm`` 0.5, set by ``rl2.yaml``) and
steps Adam; the scheduler steps once per meta-step (``optimizer=adam_linear``: CleanRL's linear
annealing to 0 over ``trainer.max_steps``). Validation and test play the fixed trials with
``policy()``, as for the baselines.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.base import Update
from metarun.data.task import TaskSpec
from metarun.envs.base import Environment, Step
from metarun.envs.evaluate import play
from metarun.envs.sampling import categorical
from metarun.envs.trials import Trials
from metarun.errors import ConfigError
from metarun.randomness import fold, hash32, stream
from metarun.rl.gae import trial_advantages
from metarun.rl.ppo import clipped_surrogate, explained_variance, normalise, value_loss


def family_spaces(family: object) -> tuple[int, int]:
    """``(observation_size, actions)`` of a task family with discrete actions: a bandit's
    observation is constant (size 0), a tabular MDP's is its state (one-hot, ``states``)."""
    if hasattr(family, "arms"):
        return 0, int(family.arms)
    if hasattr(family, "states") and hasattr(family, "actions"):
        return int(family.states), int(family.actions)
    raise ConfigError(
        "algorithm",
        f"rl2 acts in task families with discrete actions (dataset=bandit or tabular_mdp), "
        f"got {type(family).__name__}",
    )


def encode_observation(observation: Tensor, size: int) -> Tensor:
    """``[B, size]`` float32: integer states one-hot, float observations flattened."""
    if not observation.dtype.is_floating_point:
        return F.one_hot(observation.long(), size).to(torch.float32)
    encoded = observation.reshape(observation.shape[0], -1).to(torch.float32)
    if encoded.shape[1] != size:
        raise ValueError(f"expected observations of {size} features, got {encoded.shape[1]}")
    return encoded


def step_inputs(
    observation: Tensor,
    previous_action: Tensor | None,
    previous_reward: Tensor | None,
    previous_done: Tensor | None,
    observation_size: int,
    actions: int,
) -> Tensor:
    """The GRU's input ``[B, observation_size + actions + 2]``: the encoded observation, the
    previous action one-hot, the previous reward, the previous done flag (1.0 where the last
    step ended an episode). ``None`` (a trial's first step) is all zeros."""
    batch = observation.shape[0]
    zeros = torch.zeros(batch, device=observation.device)
    action = (
        torch.zeros(batch, actions, device=observation.device)
        if previous_action is None
        else F.one_hot(previous_action.long(), actions).to(torch.float32)
    )
    reward = zeros if previous_reward is None else previous_reward.to(torch.float32)
    done = zeros if previous_done is None else previous_done.to(torch.float32)
    parts = [encode_observation(observation, observation_size), action, reward[:, None]]
    return torch.cat([*parts, done[:, None]], dim=1)


def _orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    """CleanRL's ``layer_init``: orthogonal weights, zero bias. A policy head of gain 0.01
    starts the policy near uniform (a random agent), a value head of gain 1 at small values."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class RecurrentActorCritic(nn.Module):
    """One GRU layer read by a policy head (logits) and a value head."""

    def __init__(self, input_size: int, actions: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.gru = nn.GRU(input_size, hidden_size, batch_first=True)
        self.policy_head = _orthogonal(nn.Linear(hidden_size, actions), 0.01)
        self.value_head = _orthogonal(nn.Linear(hidden_size, 1), 1.0)

    def initial_state(self, batch: int, device: torch.device | str) -> Tensor:
        """``[B, hidden]`` zeros: the state at a trial's first step."""
        return torch.zeros(batch, self.hidden_size, device=device)

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Inputs ``[B, T, F]`` from ``state`` (zeros if None) to logits ``[B, T, A]``, values
        ``[B, T]`` and the final state ``[B, hidden]``."""
        if state is None:
            state = self.initial_state(inputs.shape[0], inputs.device)
        outputs, final = self.gru(inputs, state[None].contiguous())
        return self.policy_head(outputs), self.value_head(outputs)[..., 0], final[0]


@dataclass
class Rollout:
    """What ``[B]`` trials of ``T`` steps recorded, every tensor ``[B, T, ...]``."""

    inputs: Tensor
    actions: Tensor
    log_probs: Tensor
    values: Tensor
    rewards: Tensor


class RL2Policy:
    """A ``TrialPolicy`` that plays with the network's current weights; with ``record`` it
    keeps what ``train_step`` needs. ``start`` begins every trial from the zero state."""

    def __init__(
        self, network: RecurrentActorCritic, observation_size: int, actions: int, record: bool
    ) -> None:
        self.network = network
        self.observation_size = observation_size
        self.actions = actions
        self.record = record

    def start(self, env: Environment, keys: Tensor) -> None:
        self.keys = keys
        self.t = 0
        device = next(self.network.parameters()).device
        self.state = self.network.initial_state(keys.shape[0], device)
        self.previous: tuple[Tensor, Tensor, Tensor] | None = None
        self.recorded: dict[str, list[Tensor]] = {
            name: [] for name in ("inputs", "actions", "log_probs", "values", "rewards")
        }

    @torch.no_grad()
    def act(self, observation: Tensor) -> Tensor:
        device = self.state.device
        previous = self.previous or (None, None, None)
        x = step_inputs(
            observation.to(device),
            *(None if p is None else p.to(device) for p in previous),
            self.observation_size,
            self.actions,
        )
        logits, values, self.state = self.network(x[:, None], self.state)
        log_probs = logits[:, 0].log_softmax(dim=-1)
        actions = categorical(fold(self.keys, self.t), log_probs.double().exp()).to(device)
        if self.record:
            self.recorded["inputs"].append(x)
            self.recorded["actions"].append(actions)
            self.recorded["log_probs"].append(log_probs.gather(1, actions[:, None])[:, 0])
            self.recorded["values"].append(values[:, 0])
        return actions

    def observe(self, actions: Tensor, step: Step) -> None:
        self.previous = (actions, step.reward, step.done)
        if self.record:
            self.recorded["rewards"].append(step.reward.to(self.state.device, torch.float32))
        self.t += 1

    def rollout(self) -> Rollout:
        return Rollout(**{name: torch.stack(v, dim=1) for name, v in self.recorded.items()})


def _positive(key: str, value: float) -> float:
    if not value > 0:
        raise ConfigError(key, f"must be positive, got {value!r}")
    return float(value)


def _count(key: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ConfigError(key, f"must be an integer of at least 1, got {value!r}")
    return int(value)


def _unit(key: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(key, f"must lie in [0, 1], got {value!r}")
    return float(value)


class RL2(nn.Module):
    """The RL² learner: a ``RecurrentActorCritic`` and the PPO update that trains it."""

    def __init__(
        self,
        actions: int,
        observation_size: int = 0,
        hidden_size: int = 256,
        gamma: float = 0.99,
        gae_lambda: float = 0.3,
        clip: float = 0.2,
        value_clip: float | None = None,
        value_coef: float = 0.5,
        entropy_coef: float = 0.01,
        normalise_advantages: bool = True,
        epochs: int = 4,
        minibatches: int = 4,
        meta_batch_size: int = 500,
    ) -> None:
        super().__init__()
        self.actions = _count("algorithm.actions", actions)
        if isinstance(observation_size, bool) or observation_size < 0:
            raise ConfigError("algorithm.observation_size", f"must be >= 0, got {observation_size}")
        self.observation_size = int(observation_size)
        self.gamma = _unit("algorithm.gamma", gamma)
        self.gae_lambda = _unit("algorithm.gae_lambda", gae_lambda)
        self.clip = _positive("algorithm.clip", clip)
        if value_clip is not None:
            value_clip = _positive("algorithm.value_clip", value_clip)
        self.value_clip = value_clip
        self.value_coef = float(value_coef)
        self.entropy_coef = float(entropy_coef)
        self.normalise_advantages = bool(normalise_advantages)
        self.epochs = _count("algorithm.epochs", epochs)
        self.minibatches = _count("algorithm.minibatches", minibatches)
        self.meta_batch_size = _count("algorithm.meta_batch_size", meta_batch_size)
        input_size = self.observation_size + self.actions + 2
        hidden_size = _count("algorithm.hidden_size", hidden_size)
        self.network = RecurrentActorCritic(input_size, self.actions, hidden_size)

    autocast_safe = False  # the rollout's sampling and the PPO ratios want float32

    @classmethod
    def for_task(cls, model: object, task: TaskSpec, **settings: object) -> RL2:
        """The runner's constructor: sizes from the data set's ``TaskSpec`` (``model`` is
        unused; the network is the GRU actor-critic, sized by ``hidden_size``)."""
        if task.kind != "control" or task.continuous_actions:
            kind = "continuous-action" if task.kind == "control" else task.kind
            raise ConfigError(
                "algorithm",
                f"rl2 acts in tasks with discrete actions (dataset=bandit or tabular_mdp), but "
                f"the data set poses {kind} tasks",
            )
        observation_size = task.input_shape[0] if task.input_shape else 0
        return cls(actions=task.output_size, observation_size=observation_size, **settings)

    @classmethod
    def for_family(cls, family: object, **settings: object) -> RL2:
        """The learner for a task family's observation and action sizes."""
        observation_size, actions = family_spaces(family)
        return cls(actions=actions, observation_size=observation_size, **settings)

    def policy(self, record: bool = False) -> RL2Policy:
        """A fresh ``TrialPolicy`` on the current weights (``evaluate_policy(learner.policy,
        trials)`` scores the learner as the baselines are scored)."""
        return RL2Policy(self.network, self.observation_size, self.actions, record)

    def collect(self, env: Environment) -> tuple[Rollout, Tensor]:
        """Play every trial of ``env`` once; the rollout and each trial's total return."""
        policy = self.policy(record=True)
        played = play(policy, env)
        return policy.rollout(), played.episode_returns.sum(dim=1)

    def _order(self, keys: Tensor, epoch: int) -> Tensor:
        """A fresh order of the trials for ``epoch``, each trial's place drawn from its key."""
        return hash32(fold(stream(keys, "minibatches"), epoch)).argsort()

    def train_step(self, trials: Trials, update: Update) -> dict[str, Tensor]:
        """One PPO iteration: play the trials, then ``epochs`` passes of ``minibatches``
        updates over whole trials. Returns detached metrics averaged over the updates
        (``return`` is the mean total return of the trials played)."""
        env = trials.make()
        if len(env.keys) < self.minibatches:
            raise ConfigError(
                "algorithm.minibatches",
                f"{self.minibatches} minibatches need at least as many trials, got {len(env.keys)}",
            )
        rollout, returns_played = self.collect(env)
        advantages = trial_advantages(rollout.rewards, rollout.values, self.gamma, self.gae_lambda)
        targets = advantages + rollout.values
        sums: dict[str, Tensor] = {}
        steps = 0
        for epoch in range(self.epochs):
            order = self._order(env.keys.to(rollout.inputs.device), epoch)
            for rows in order.tensor_split(self.minibatches):
                parts = self._losses(rollout, advantages, targets, rows)
                logged = {name: value.detach() for name, value in parts.items()}
                update(parts["loss"], logged)  # averages ``logged`` across processes
                for name, value in logged.items():
                    sums[name] = sums[name] + value if name in sums else value.clone()
                steps += 1
        metrics = {name: total / steps for name, total in sums.items()}
        metrics["return"] = returns_played.double().mean().cpu()
        metrics["explained_variance"] = explained_variance(rollout.values, targets).cpu()
        return metrics

    def _losses(
        self, rollout: Rollout, advantages: Tensor, targets: Tensor, rows: Tensor
    ) -> dict[str, Tensor]:
        logits, values, _ = self.network(rollout.inputs[rows])
        log_probs_all = logits.log_softmax(dim=-1)
        actions = rollout.actions[rows]
        log_probs = log_probs_all.gather(2, actions[..., None])[..., 0]
        entropy = -(log_probs_all.exp() * log_probs_all).sum(dim=-1).mean()
        advantage = advantages[rows]
        if self.normalise_advantages:
            advantage = normalise(advantage)
        old = rollout.log_probs[rows]
        policy_loss = clipped_surrogate(log_probs, old, advantage, self.clip)
        critic_loss = value_loss(values, rollout.values[rows], targets[rows], self.value_clip)
        loss = policy_loss + self.value_coef * critic_loss - self.entropy_coef * entropy
        with torch.no_grad():
            log_ratio = log_probs - old
            approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean()
            clip_fraction = ((log_ratio.exp() - 1).abs() > self.clip).float().mean()
        return {
            "loss": loss,
            "policy_loss": policy_loss,
            "value_loss": critic_loss,
            "entropy": entropy,
            "approx_kl": approx_kl,
            "clip_fraction": clip_fraction,
        }
