"""What MetaGAN adds to any host learner: a task-conditioned generator, its own parameter group
and phase, and pictures of what it generates. Each host (``metagan.py``) owns one ``Adversary``
and decides how the fakes enter its episode."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from metarun.algorithms.base import ModelFactory, Phase
from metarun.algorithms.gradient import check_at_least
from metarun.data.episodes import EpisodeBatch
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.models import use_episode_statistics
from metarun.models.task_generator import TaskGenerator
from metarun.pictures import new_figure, png_bytes

DISCRIMINATOR, GENERATOR = "discriminator", "generator"
Loss = Callable[[EpisodeBatch], tuple[Tensor, dict[str, Tensor]]]


class Adversary(nn.Module):
    """The generator (its own encoder of the support set included) and the settings shared by
    every host: how many fakes an episode gets (``fakes``; None: as many as support images),
    how many generator steps follow each discriminator step, how many episodes are drawn."""

    def __init__(
        self,
        model: ModelFactory,
        task: TaskSpec,
        fakes: int | None = None,
        generator_steps: int = 1,
        noise_size: int = 100,
        generator_channels: int = 32,
        figure_episodes: int = 4,
    ) -> None:
        super().__init__()
        check_at_least("generator_steps", generator_steps, 1)
        check_at_least("noise_size", noise_size, 1)
        check_at_least("generator_channels", generator_channels, 1)
        check_at_least("figure_episodes", figure_episodes, 0)
        if fakes is not None and fakes < 1:
            raise ConfigError("algorithm.fakes", f"must be null or at least 1, got {fakes}")
        encoder = use_episode_statistics(model(task.input_shape, None))
        self.generator = TaskGenerator(encoder, task.input_shape, noise_size, generator_channels)
        self.fakes = fakes
        self.generator_steps = generator_steps
        self.figure_episodes = figure_episodes

    def count(self, support_x: Tensor) -> int:
        return self.fakes if self.fakes is not None else support_x.shape[1]

    def generate(self, support_x: Tensor, keys: Tensor | None, name: str) -> Tensor:
        """``[B, fakes, C, H, W]`` from each episode's support set; differentiable."""
        return self.generator(support_x, self.count(support_x), keys, name)

    def detached(
        self, support_x: Tensor, keys: Tensor | None, name: str, sets: int = 1
    ) -> tuple[Tensor, ...]:
        """``sets`` sets of fakes for the discriminator's phase, from one generator pass: no
        gradient reaches the generator."""
        with torch.no_grad():
            count = self.count(support_x)
            fakes = self.generator(support_x, sets * count, keys, name)
        return fakes.split(count, dim=1)

    def groups(self, learner: nn.Module) -> dict[str, list[nn.Parameter]]:
        mine = {id(p) for p in self.parameters()}
        host = [p for p in learner.parameters() if id(p) not in mine]
        return {DISCRIMINATOR: host, GENERATOR: list(self.parameters())}

    def phases(self, discriminator_loss: Loss, generator_loss: Loss) -> list[Phase]:
        """A discriminator step on the host's loss, then ``generator_steps`` generator steps."""
        generator = [Phase(GENERATOR, generator_loss)] * self.generator_steps
        return [Phase(DISCRIMINATOR, discriminator_loss), *generator]

    def figures(self, batch: EpisodeBatch) -> dict[str, bytes]:
        """One row per episode: its support images, then what the generator made of them."""
        fakes = self.generate(batch.support_x, None, "figure fakes")
        rows = torch.cat([batch.support_x, fakes], 1).detach().float().cpu()
        real = batch.support_x.shape[1]
        figure = new_figure(0.9 * rows.shape[1], 0.95 * rows.shape[0] + 0.3)
        axes = figure.subplots(rows.shape[0], rows.shape[1], squeeze=False)
        for i, row in enumerate(rows):
            for j, image in enumerate(row):
                image = (image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)
                shown = image[0] if image.shape[0] == 1 else image.permute(1, 2, 0)
                axes[i, j].imshow(shown.numpy(), cmap="gray", vmin=0.0, vmax=1.0)
                axes[i, j].set_xticks([])
                axes[i, j].set_yticks([])
                if i == 0:
                    axes[i, j].set_title("support" if j < real else "generated", fontsize=7)
        return {"samples": png_bytes(figure)}


__all__ = ["DISCRIMINATOR", "GENERATOR", "Adversary"]
