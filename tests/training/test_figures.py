from __future__ import annotations

import io

import torch
from PIL import Image

from metarun.algorithms.base import Illustrated
from metarun.data.episodes import EpisodeBatch, EpisodeSpec, FixedEpisodes
from metarun.data.sinusoid import SinusoidTasks
from metarun.hardware import Runtime
from metarun.pictures import new_figure, png_bytes
from metarun.tracking.figure_files import FigureFiles
from metarun.tracking.logger import LoggerGroup
from metarun.training.figures import illustrate


class Drawing(torch.nn.Module):
    """A learner that plots its episodes' support points and draws one random number."""

    figure_episodes = 2

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[EpisodeBatch] = []
        self.modes: list[bool] = []

    def figures(self, batch: EpisodeBatch) -> dict[str, bytes]:
        self.seen.append(batch)
        self.modes.append(self.training)
        torch.rand(3)  # must not move the trainer's generator
        figure = new_figure(2, 2)
        figure.add_subplot().plot(batch.support_x[0, :, 0], batch.support_y[0, :, 0], "o")
        return {"support": png_bytes(figure, dpi=40)}


class Recorder:
    def __init__(self) -> None:
        self.images: list[tuple[str, int]] = []

    def image(self, name: str, png: bytes, step: int) -> None:
        self.images.append((name, step))


def episodes(count: int = 5) -> FixedEpisodes:
    tasks = SinusoidTasks(EpisodeSpec(1, 4, 4), (0.1, 5.0), (0.0, 3.0), (-5.0, 5.0))
    return FixedEpisodes(tasks, count, seed=3)


def test_pictures_are_drawn_on_the_first_fixed_episodes_in_eval_mode_without_moving_rng(
    tmp_path,
) -> None:
    learner, recorder, fixed = Drawing(), Recorder(), episodes()
    files = FigureFiles(tmp_path / "figures")
    runtime = Runtime(torch.device("cpu"), None)
    learner.train()
    assert isinstance(learner, Illustrated)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    illustrate(learner, fixed, runtime, LoggerGroup([recorder, files]), 40, "val")
    illustrate(learner, fixed, runtime, LoggerGroup([recorder, files]), 80, "val")
    assert torch.equal(torch.get_rng_state(), before)
    assert learner.training and learner.modes == [False, False]
    first = next(fixed.batches(2))
    for seen in learner.seen:
        assert len(seen) == 2 and torch.equal(seen.support_x, first.support_x)
    assert recorder.images == [("val/support", 40), ("val/support", 80)]
    written = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert written == [
        "val_support.png",
        "val_support_step0000040.png",
        "val_support_step0000080.png",
    ]
    assert Image.open(io.BytesIO((tmp_path / "figures" / "val_support.png").read_bytes())).size


def test_learners_without_pictures_and_other_ranks_draw_nothing() -> None:
    recorder, fixed = Recorder(), episodes()
    runtime = Runtime(torch.device("cpu"), None)
    illustrate(torch.nn.Linear(1, 1), fixed, runtime, recorder, 1, "val")
    assert recorder.images == []
    learner = Drawing()
    other_rank = Runtime(torch.device("cpu"), None, rank=1, world_size=2)
    illustrate(learner, fixed, other_rank, recorder, 1, "val")
    assert learner.seen == [] and recorder.images == []
