"""Point-robot paths before and after adaptation, as the MAML paper draws them (Finn et al.
2017, figure 5, right): for a few tasks, the goal, a few rollouts of the first episode of the
trial (the initialisation's policy) and of the last (after the learner's inner steps)."""

from __future__ import annotations

from torch import Tensor

from metarun.pictures import new_figure, png_bytes


def paths_before_and_after(
    goals: Tensor, positions: Tensor, steps_after: int, shown: int = 3
) -> bytes:
    """A PNG with one panel per task: ``goals`` ``[B, 2]``; ``positions`` ``[B, episodes, R,
    T + 1, 2]``, the robots' positions from the start of each episode; ``steps_after``: the
    inner steps taken before the last episode (for its legend)."""
    tasks = goals.shape[0]
    figure = new_figure(2.6 * tasks, 2.8)
    for task, axes in enumerate(figure.subplots(1, tasks, squeeze=False)[0]):
        for rollout in range(min(shown, positions.shape[2])):
            for episode, style in ((0, ":"), (-1, "-")):
                path = positions[task, episode, rollout].cpu()
                label = None
                if rollout == 0:
                    label = "before adapting" if episode == 0 else f"after {steps_after} steps"
                colour = "tab:red" if episode == 0 else "tab:blue"
                axes.plot(path[:, 0], path[:, 1], style, color=colour, lw=1.2, label=label)
        axes.plot(*goals[task].cpu().tolist(), "k*", markersize=10, label="goal")
        axes.plot(0, 0, "k.", markersize=4)
        axes.set_xlim(-0.8, 0.8)
        axes.set_ylim(-0.8, 0.8)
        axes.set_aspect("equal")
        axes.tick_params(labelsize=7)
        if task == 0:
            axes.legend(fontsize=6, loc="lower left")
    return png_bytes(figure)


__all__ = ["paths_before_and_after"]
