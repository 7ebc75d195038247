"""MANN scored as its paper scores it: accuracy at the 1st, 2nd, ..., 10th presentation of a class
in a stream of 5 classes x 10 instances (Santoro et al. 2016, Table 1), on the test split of a
run trained with ``experiment=mann_stream``; and its training curve, by presentation.

Each test episode is one stream: ``stream_instances`` images of each of ``ways`` test classes
(drawn with ``eval.seed + 1``, as metarun's test episodes), in an order drawn from the episode's
own key, every step predicted from the labels of the steps before it. The accuracy at the
``k``-th presentation is the share of an episode's classes predicted right there; the script
prints its mean and 95% interval over the episodes, beside the paper's figures, and draws the
training curve (``train/acc_sight<k>`` of ``metrics.jsonl``, a moving average) into
``sight_accuracy.png`` in the run directory.

Run from the repository root::

    python scripts/mann_by_sight.py outputs/runs/<run> [--checkpoint last|best] [--episodes 600]
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import metarun
from metarun.algorithms.mann import MANN, SIGHTS, accuracy_by_sight
from metarun.atomic import atomic_write_bytes
from metarun.data.episodes import EpisodeSpec, FixedEpisodes
from metarun.randomness import permutation, stream, task_keys
from metarun.training.evaluate import mean_and_ci95

# Santoro et al. 2016, Table 1, MANN, one-hot labels, 5 classes: 1st, 2nd, 3rd, 4th, 5th, 10th.
PAPER = {1: 36.4, 2: 82.8, 3: 91.0, 4: 92.6, 5: 94.9, 10: 98.1}


@torch.no_grad()
def sight_accuracy(learner: MANN, data, seed: int, episodes: int, batch_size: int) -> torch.Tensor:
    """``[episodes, stream_instances]``: each test stream's accuracy at each presentation."""
    spec = EpisodeSpec(learner.ways, learner.stream_instances - 1, 1)
    fixed = FixedEpisodes(data.sampler("test", spec), episodes, seed + 1)
    keys = stream(task_keys(seed, 0, episodes), "test stream order")
    length = learner.ways * learner.stream_instances
    scores = []
    for start, batch in zip(range(0, episodes, batch_size), fixed.batches(batch_size), strict=True):
        order = permutation(keys[start : start + len(batch)], length)
        logits, labels = learner.stream_logits(batch, order)
        scores.append(accuracy_by_sight(logits, labels, learner.stream_instances))
    return torch.cat(scores)


def training_curve(metrics: Path, window: int) -> dict[int, tuple[list[int], list[float]]]:
    """Per presentation, the steps and the moving average of ``train/acc_sight<k>``."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    curves = {}
    for sight in SIGHTS:
        points = [
            (r["step"], r[f"train/acc_sight{sight}"])
            for r in rows
            if f"train/acc_sight{sight}" in r
        ]
        if not points:
            continue
        steps, values = zip(*points, strict=True)
        smooth = [
            100
            * sum(values[max(0, i - window + 1) : i + 1])
            / len(values[max(0, i - window + 1) : i + 1])
            for i in range(len(values))
        ]
        curves[sight] = (list(steps), smooth)
    return curves


def draw(
    curves: dict[int, tuple[list[int], list[float]]], episodes_per_step: int, path: Path
) -> None:
    figure = Figure(figsize=(6, 3.6))
    axes = figure.add_subplot()
    for sight, (steps, values) in curves.items():
        axes.plot([s * episodes_per_step for s in steps], values, label=f"presentation {sight}")
    axes.set_xlabel("training episodes")
    axes.set_ylabel("training accuracy (%)")
    axes.set_ylim(0, 100)
    axes.legend(fontsize=7)
    figure.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    atomic_write_bytes(path, buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run directory of experiment=mann_stream")
    parser.add_argument("--checkpoint", choices=("last", "best"), default="last")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--window", type=int, default=5, help="logged points per moving average")
    args = parser.parse_args()
    loaded = metarun.load(args.run / "checkpoints" / f"{args.checkpoint}.pt")
    learner = loaded.learner
    if not isinstance(learner, MANN) or learner.protocol != "stream":
        raise SystemExit(f"{args.run}: not a MANN trained with algorithm.protocol=stream")
    seed = int(loaded.config["eval"]["seed"])
    scores = sight_accuracy(learner, loaded.data, seed, args.episodes, args.batch_size)
    print(
        f"{args.run} ({args.checkpoint} checkpoint), {args.episodes} test streams of "
        f"{learner.ways} classes x {learner.stream_instances}"
    )
    print("presentation | metarun (95% CI) | paper")
    for sight in SIGHTS:
        if sight <= learner.stream_instances:
            mean, ci = mean_and_ci95(100 * scores[:, sight - 1])
            print(f"{sight:>12} | {mean:5.1f} ± {ci:.1f}     | {PAPER[sight]}")
    metrics = args.run / "metrics.jsonl"
    if metrics.exists():
        per_step = int(loaded.config["algorithm"]["meta_batch_size"])
        draw(training_curve(metrics, args.window), per_step, args.run / "sight_accuracy.png")
        print(f"training curve: {args.run / 'sight_accuracy.png'}")


if __name__ == "__main__":
    main()
