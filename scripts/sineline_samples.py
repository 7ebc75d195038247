"""PLATIPUS's sampled functions beside MAML's single one, on ambiguous sineline test tasks (the
picture of Finn, Xu & Levine 2018, figure 2): for a few fixed tasks, half sinusoids and half
lines, the support points, the true function (from the task's plan), every function PLATIPUS
samples and MAML's adapted function, on a dense grid of inputs.

The tasks are drawn with ``--seed`` (default: the run's ``eval.seed + 2``, so they are not the
validation or test episodes) with ``--shots`` support points (default: the run's). Both runs
must be trained on ``dataset=sineline``; the PLATIPUS run supplies the data set's settings.
Run from the repository root::

    python scripts/sineline_samples.py outputs/runs/<platipus run> outputs/runs/<maml run> \\
        [--out docs/platipus_sineline.png] [--tasks 4] [--shots 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import Tensor

import metarun
from metarun.algorithms.platipus import PLATIPUS, draw_functions
from metarun.atomic import atomic_write_bytes
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.sineline import LINE, SINUSOID, Sineline, true_values
from metarun.pictures import new_figure, png_bytes


def ambiguous_tasks(data: Sineline, count: int, shots: int, seed: int) -> Tensor:
    """``count`` plan rows drawn with ``seed``: the first ``count - count // 2`` sinusoids
    and the first ``count // 2`` lines of one draw, sinusoids first."""
    sampler = data.sampler("test", EpisodeSpec(ways=1, shots=shots, queries=1))
    pool = sampler.draw(max(64, 8 * count), torch.Generator().manual_seed(seed))
    sines = pool[pool[:, 0] == SINUSOID][: count - count // 2]
    lines = pool[pool[:, 0] == LINE][: count // 2]
    return torch.cat([sines, lines])


@torch.no_grad()
def functions(
    platipus: PLATIPUS,
    maml: torch.nn.Module,
    data: Sineline,
    plan: Tensor,
    shots: int,
    grid: Tensor,
) -> dict[str, Tensor]:
    """On ``grid`` ``[m]``: PLATIPUS's samples ``[S, T, m]``, MAML's function ``[T, m]``, the
    true functions ``[T, m]``, and the ``shots`` support points ``[T, K]`` of each task of
    ``plan`` (drawn by ``ambiguous_tasks``)."""
    tasks = data.sampler("test", EpisodeSpec(ways=1, shots=shots, queries=1)).gather(plan)
    inputs = grid[None, :, None].expand(len(plan), -1, -1).to(tasks.support_x)
    on_grid = EpisodeBatch(
        tasks.support_x, tasks.support_y, inputs, torch.zeros_like(inputs), ways=1
    )
    return {
        "samples": platipus.sample_predictions(on_grid)[..., 0],
        "maml": maml.predict(on_grid)[..., 0],
        "truth": true_values(plan, grid),
        "support_x": tasks.support_x[..., 0],
        "support_y": tasks.support_y[..., 0],
    }


def picture(values: dict[str, Tensor], grid: Tensor, plan: Tensor) -> bytes:
    """One panel per task: PLATIPUS's samples, MAML's function, the truth, the support set."""
    count = len(plan)
    figure = new_figure(3.2 * count, 3.1)
    for i, axes in enumerate(figure.subplots(1, count, squeeze=False)[0]):
        support = (values["support_x"][i], values["support_y"][i])
        draw_functions(axes, grid, values["samples"][:, i], support, truth=values["truth"][i])
        axes.plot(grid, values["maml"][i], color="tab:orange", linewidth=1.5, label="MAML")
        kind = "line" if int(plan[i, 0]) == LINE else "sinusoid"
        axes.set_title(f"a {kind}, {support[0].numel()} points", fontsize=9)
    figure.axes[0].legend(fontsize=7)
    return png_bytes(figure)


def summary(values: dict[str, Tensor], plan: Tensor) -> list[str]:
    """Per task: each method's mean squared distance from the true function on the grid."""
    lines = []
    for i in range(len(plan)):
        kind = "line" if int(plan[i, 0]) == LINE else "sinusoid"
        truth = values["truth"][i]
        mean = values["samples"][:, i].mean(0)
        spread = float(values["samples"][:, i].std(0).mean())
        platipus = float(((mean - truth) ** 2).mean())
        maml = float(((values["maml"][i] - truth) ** 2).mean())
        lines.append(
            f"task {i} ({kind}): PLATIPUS mean {platipus:.3f}, MAML {maml:.3f} squared error "
            f"to the true function; samples' spread {spread:.3f}"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("platipus", type=Path, help="a run of algorithm=platipus dataset=sineline")
    parser.add_argument("maml", type=Path, help="a run of algorithm=maml dataset=sineline")
    parser.add_argument("--out", type=Path, default=Path("docs/platipus_sineline.png"))
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--shots", type=int, default=None, help="default: the run's")
    parser.add_argument("--seed", type=int, default=None, help="default: eval.seed + 2")
    args = parser.parse_args(argv)
    platipus, maml = metarun.load(args.platipus), metarun.load(args.maml)
    if not isinstance(platipus.learner, PLATIPUS) or not isinstance(platipus.data, Sineline):
        sys.exit(f"sineline_samples.py: {args.platipus} is not a PLATIPUS run on sineline")
    if not isinstance(maml.data, Sineline):
        sys.exit(f"sineline_samples.py: {args.maml} is not a run on sineline")
    data = platipus.data
    shots = args.shots or data.episodes.shots
    seed = int(platipus.config["eval"]["seed"]) + 2 if args.seed is None else args.seed
    plan = ambiguous_tasks(data, args.tasks, shots, seed)
    low, high = data.sineline_ranges["x_range"]
    grid = torch.linspace(low, high, 200)
    values = functions(platipus.learner, maml.learner, data, plan, shots, grid)
    print("\n".join(summary(values, plan)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(args.out, picture(values, grid, plan))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
