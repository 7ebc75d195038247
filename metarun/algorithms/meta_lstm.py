"""Meta-LSTM: the meta-learner LSTM of Ravi & Larochelle, "Optimization as a Model for Few-Shot
Learning" (ICLR 2017).

A learned optimiser replaces the inner SGD step. Its observation is that the LSTM cell update
``c_t = f_t * c_{t-1} + i_t * c~_t`` is gradient descent when the cell state is the learner's
weights, ``c~_t = -grad_t``, ``f_t = 1`` and ``i_t = alpha``; so the cell state *is* the learner's
weights and the gates become a learned, per-coordinate weight decay and learning rate:

    theta_t = f_t * theta_{t-1} - i_t * grad_t
    i_t = sigmoid(W_I [h_t, theta_{t-1}, i_{t-1}] + b_I)
    f_t = sigmoid(W_F [h_t, theta_{t-1}, f_{t-1}] + b_F)

where ``h_t`` is the output of an ordinary LSTM (hidden size 20) over the preprocessed support
loss and gradient of that coordinate (``preprocess``, Andrychowicz et al. 2016, p = 10). Both
layers are coordinate-wise: their parameters are shared by every weight of the learner, so the
meta-learner is small whatever the learner's size. The initial cell state ``c_0`` is the
learner's initialisation, meta-learned with the LSTM (here: the model's own parameters, which
the family's inner loop starts from).

As in the paper, second derivatives are ignored: the gradient and loss the meta-learner reads
are constants of the meta-gradient (``first_order: true``, the family's detach), while the
meta-gradient still flows through the gates and the cell state across the inner steps.

Defaults, from the paper and the authors' code (twitter-research/meta-learning-lstm):
miniImageNet 5-way, a 32-filter Conv-4 learner; T = 12 inner updates for 1-shot and 8 for 5-shot,
each on the whole support set (the same T at test); one episode per meta-update, Adam 1e-3,
meta-gradient norm clipped at 0.25; 75,000 episodes (1-shot); all meta-learner weights
initialised in U(-0.01, 0.01), the forget-gate bias in U(4, 5) and the input-gate bias in
U(-5, -4), so training starts close to plain gradient descent with a small rate. BatchNorm uses
batch statistics (``batch_norm: transductive``). Departures from the authors' Lua code, kept
because they follow the paper's equations or this package's conventions: the previous gates
fed back are the gate values (the code feeds back the pre-sigmoid activations); at meta-test
time the code normalises the query set with running averages collected on that episode's support
set, where ``transductive`` uses the query batch's own statistics.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metarun.algorithms.base import ModelFactory
from metarun.algorithms.gradient import GradientLearner, Params, State, UpdateRule
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError

PREPROCESS_P = 10.0
WEIGHT_INIT = 0.01  # U(-0.01, 0.01) for every meta-learner weight and bias ...
FORGET_BIAS_INIT = (4.0, 5.0)  # ... except the gate biases: f_0 close to 1,
INPUT_BIAS_INIT = (-5.0, -4.0)  # i_0 close to 0.01


def preprocess(x: Tensor, p: float = PREPROCESS_P) -> Tensor:
    """Andrychowicz et al. (2016): ``(log|x| / p, sign x)`` where ``|x| >= e^-p``, else
    ``(-1, e^p x)``; a trailing dimension of 2. Scale-free inputs for gradients and losses that
    span many orders of magnitude. The log branch clamps at ``e^-p`` (where it equals -1), so it
    stays finite and differentiable for x = 0."""
    threshold = math.exp(-p)
    magnitude = torch.log(x.abs().clamp_min(threshold)) / p
    direction = torch.where(x.abs() >= threshold, torch.sign(x), x * math.exp(p))
    return torch.stack([magnitude, direction], dim=-1)


def flatten(params: Params) -> Tensor:
    return torch.cat([p.reshape(-1) for p in params.values()])


def unflatten(flat: Tensor, like: Params) -> Params:
    sizes = [p.numel() for p in like.values()]
    pieces = flat.split(sizes)
    return {name: piece.view_as(p) for (name, p), piece in zip(like.items(), pieces, strict=True)}


class MetaLSTMRule(UpdateRule):
    """The coordinate-wise two-layer meta-learner. Runs inside the family's vmap, so it sees one
    task: all of that task's weights become one coordinate vector ``[P]`` and both layers run
    once per step over all P coordinates. Per-task state: the first layer's ``h`` and ``c``
    ``[P, hidden]`` and the previous gates ``f`` and ``i`` ``[P]`` (zero before the first step).
    """

    def __init__(self, hidden_size: int = 20) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        # Parameter layout of nn.LSTMCell (gates i, f, g, o), but evaluated with plain ops below:
        # the rule runs under torch.func.vmap.
        self.lstm = nn.LSTMCell(4, hidden_size)  # input: preprocessed loss (2), gradient (2)
        self.forget_gate = nn.Linear(hidden_size + 2, 1)  # W_F, b_F over [h, theta, f_prev]
        self.input_gate = nn.Linear(hidden_size + 2, 1)  # W_I, b_I over [h, theta, i_prev]
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for weight in self.parameters():
            weight.uniform_(-WEIGHT_INIT, WEIGHT_INIT)
        self.forget_gate.bias.uniform_(*FORGET_BIAS_INIT)
        self.input_gate.bias.uniform_(*INPUT_BIAS_INIT)

    def init_state(self, params: Params) -> State:
        first = next(iter(params.values()))
        tasks = first.shape[0]
        coordinates = sum(p[0].numel() for p in params.values())
        hidden = first.new_zeros(tasks, coordinates, self.hidden_size)
        gate = first.new_zeros(tasks, coordinates)
        return {"h": hidden, "c": hidden.clone(), "f": gate, "i": gate.clone()}

    def cell(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """One step of the first layer, an ordinary LSTM: ``x [P, 4]`` to ``(h, c) [P, H]``."""
        lstm = self.lstm
        z = F.linear(x, lstm.weight_ih, lstm.bias_ih) + F.linear(h, lstm.weight_hh, lstm.bias_hh)
        i, f, g, o = z.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def forward(
        self, step: int, params: Params, grads: Params, loss: Tensor, state: State
    ) -> tuple[Params, State]:
        theta, grad = flatten(params), flatten(grads)
        x = torch.cat([preprocess(loss).expand(theta.shape[0], 2), preprocess(grad)], dim=-1)
        h, c = self.cell(x, state["h"], state["c"])
        column = theta.unsqueeze(-1)
        f = torch.sigmoid(self.forget_gate(torch.cat([h, column, state["f"][:, None]], -1)))
        i = torch.sigmoid(self.input_gate(torch.cat([h, column, state["i"][:, None]], -1)))
        f, i = f.squeeze(-1), i.squeeze(-1)
        theta = f * theta - i * grad
        return unflatten(theta, params), {"h": h, "c": c, "f": f, "i": i}

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}"


class MetaLSTM(GradientLearner):
    acts_in_tasks = False  # its LSTM reads the support loss of labelled episodes

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        hidden_size: int = 20,
        inner_steps: int = 12,
        test_inner_steps: int | None = None,
        first_order: bool = True,
        **inner_loop: Any,
    ) -> None:
        """``inner_loop``: the family's other keys (``GradientLearner``)."""
        if hidden_size < 1:
            raise ConfigError("algorithm.hidden_size", f"must be at least 1, got {hidden_size}")
        self.hidden_size = hidden_size
        super().__init__(
            model,
            task,
            inner_steps=inner_steps,
            test_inner_steps=inner_steps if test_inner_steps is None else test_inner_steps,
            first_order=first_order,
            **inner_loop,
        )

    def build_rule(self, params: Params) -> UpdateRule:
        return MetaLSTMRule(self.hidden_size)

    @property
    def autocast_safe(self) -> bool:
        # The forget gate multiplies every weight at every step: a bf16 gate (8 significant bits)
        # would perturb each weight by up to ~0.4% per step, compounding over T steps.
        return False


__all__ = ["MetaLSTM", "MetaLSTMRule", "preprocess"]
