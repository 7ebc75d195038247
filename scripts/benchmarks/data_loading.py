"""Data-loading speed: episodes/s of each data set's sampler against what training consumes, and
the time to build each cache.

* Sampler: ``draw`` + ``gather`` of 32 episodes of 5-way 1-shot 15-query, normalised floats on
  the device, for the training split's real layout of each data set (classes x images x
  channels x size, e.g. miniImageNet 64 x 600 x 3 x 84 x 84). Pixel values do not change the
  speed, so the images are uninitialised memory; where they live follows ``placement: auto``
  (the device when they take under a quarter of it, else pinned host memory).
* Training: one ProtoNet meta-step (Conv-4, ``meta_loss`` + ``backward`` + Adam) on the same 32
  episodes, the fastest consumer of Conv-4 5-way 1-shot episodes here. "ratio" is sampler
  episodes/s over training episodes/s; the target is at least 20.
* Cache builds, measured on real files: kanji (the whole data set rendered from the installed
  kanjivg), Omniglot (the sample next to the repository), ``dataset=folder`` (the same sample as
  a grouped folder). For formats whose files cannot be had here, the decoding rate of synthetic
  images of the real size and format, and the full data set's time at that rate.

Run from the repository root::

    python scripts/benchmarks/data_loading.py [--no-caches] [--repeats N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timing import add_common_arguments, default_repeats, setup_hardware, time_steps

from metarun.algorithms import ProtoNet
from metarun.data.decode_pool import decode_bytes
from metarun.data.episodes import ClassImages, EpisodeSampler, EpisodeSpec
from metarun.data.folder import ImageFolder
from metarun.data.image_dataset import ImageDataset, keeps_on_host
from metarun.data.images import Decoder, ImageFormat, Normalization
from metarun.data.kanji import Kanji
from metarun.data.omniglot import Omniglot
from metarun.data.task import TaskSpec
from metarun.models import Conv4

EPISODES = 32
SPEC = EpisodeSpec(ways=5, shots=1, queries=15)
# shared/ lies beside the repository, the folder above scripts/benchmarks/../..
OMNIGLOT_SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "omniglot"


@dataclass(frozen=True)
class Layout:
    """A training split's shape: ``classes`` x ``per_class`` images of ``channels`` x ``size``."""

    name: str
    classes: int
    per_class: int
    channels: int
    size: int


LAYOUTS = (
    Layout("omniglot (Lake, x4 rotations)", 964 * 4, 20, 1, 28),
    Layout("kanji", 3997, 20, 1, 28),
    Layout("cifar_fs", 64, 600, 3, 32),
    Layout("fc100", 60, 600, 3, 32),
    Layout("mini_imagenet", 64, 600, 3, 84),
    Layout("cub", 100, 60, 3, 84),
    Layout("tiered_imagenet", 351, 1281, 3, 84),
)


def rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def fastest(step: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` timed calls, after one warm-up."""
    return min(time_steps(step, None, repeats, device))


def sampler_for(layout: Layout, device: torch.device) -> tuple[EpisodeSampler, str]:
    images = torch.empty(
        layout.classes * layout.per_class, layout.channels, layout.size, layout.size,
        dtype=torch.uint8,
    )  # fmt: skip
    names = [f"class{c}" for c in range(layout.classes)]
    classes = ClassImages(images, torch.full((layout.classes,), layout.per_class), names)
    image_format = ImageFormat(size=layout.size, channels=layout.channels)
    norm = Normalization((0.5,) * layout.channels, (0.25,) * layout.channels)
    sampler = EpisodeSampler(classes, SPEC, Decoder(image_format, norm))
    placed = sampler.to(device, keep_on_host=keeps_on_host("auto", sampler, device))
    where = "device" if placed._images.device == device else "pinned host"
    return placed, where if device.type == "cuda" else "cpu"


def training_episodes_per_second(
    layout: Layout, batch, device: torch.device, repeats: int
) -> float:
    torch.manual_seed(0)
    task = TaskSpec("classification", (layout.channels, layout.size, layout.size), SPEC.ways)
    learner = ProtoNet(Conv4, task, meta_batch_size=EPISODES, train_ways=5, train_queries=15)
    learner.to(device).train()
    optimizer = torch.optim.Adam(learner.parameters(), lr=1e-3)

    def step() -> None:
        loss, _ = learner.meta_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return EPISODES / fastest(step, device, repeats)


def sampler_rows(device: torch.device, repeats: int) -> None:
    print(f"\nsampler vs training, {EPISODES} episodes of 5-way 1-shot 15-query on {device}")
    print(
        "| data set (training split) | images | placement | sampler eps/s | training eps/s"
        " | ratio |"
    )
    print("|---|---|---|---|---|---|")
    for layout in LAYOUTS:
        sampler, where = sampler_for(layout, device)
        generator = torch.Generator().manual_seed(0)
        sampling = EPISODES / fastest(
            lambda s=sampler, g=generator: s.gather(s.draw(EPISODES, g)), device, repeats
        )
        batch = sampler.gather(sampler.draw(EPISODES, generator))
        training = training_episodes_per_second(layout, batch, device, repeats)
        shape = f"{layout.classes}x{layout.per_class}x{layout.channels}x{layout.size}²"
        print(
            f"| {layout.name} | {shape} | {where} | {rate(sampling)} | {rate(training)} | "
            f"{sampling / training:.0f}x |"
        )
        del sampler, batch


def timed_build(data: ImageDataset) -> tuple[float, int]:
    start = time.perf_counter()
    images = sum(len(data.classes(s).images) for s in ("train", "val", "test"))
    return time.perf_counter() - start, images


def encoded(size: tuple[int, int], fmt: str, count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    blobs = []
    for _ in range(count):
        # Smooth content, so the codecs see something like a photograph rather than noise.
        small = rng.integers(0, 256, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, quality=90) if fmt == "JPEG" else image.save(buffer, fmt)
        blobs.append(buffer.getvalue())
    return blobs


def cache_rows(workers: int | None) -> None:
    print("\ncache builds (once per machine; later runs load the cache)")
    print("| data set | what is built | images | seconds | images/s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        kanji = Kanji(cache_dir=scratch, workers=workers)
        seconds, count = timed_build(kanji)
        print(
            f"| kanji | all 6,416 characters x 20 drawings rendered with {kanji.workers} "
            f"processes | {count:,} | {seconds:.1f} | {rate(count / seconds)} |"
        )
        if OMNIGLOT_SAMPLE.is_dir():
            sample = Omniglot(
                str(OMNIGLOT_SAMPLE),
                background="images_background_small1",
                evaluation="images_background_small2",
                val_alphabets=1,
                rotate=False,
                cache_dir=scratch,
            )
            seconds, count = timed_build(sample)
            print(
                f"| omniglot | the sample's two folders, PNG decoded | {count:,} | {seconds:.1f}"
                f" | {rate(count / seconds)} |"
            )
            folder = ImageFolder(
                root=str(OMNIGLOT_SAMPLE / "images_background_small1"),
                channels=1,
                invert=True,
                image_size=28,
                split={"by": "group", "ratios": [0.6, 0.2, 0.2], "seed": 0},
                cache_dir=scratch,
            )
            seconds, count = timed_build(folder)
            print(
                f"| folder | the sample's small1 as <group>/<class>/<image> | {count:,} | "
                f"{seconds:.1f} | {rate(count / seconds)} |"
            )
    for name, size, fmt, total in (
        ("mini_imagenet images/", (84, 84), "JPEG", 60_000),
        ("tiered_imagenet PNG pickles", (84, 84), "PNG", 779_165),
        ("cub", (500, 375), "JPEG", 11_788),
    ):
        blobs = encoded(size, fmt, 300)
        image_format = ImageFormat(size=84, channels=3)
        start = time.perf_counter()
        for blob in blobs:
            decode_bytes(blob, image_format, name)
        per_second = len(blobs) / (time.perf_counter() - start)
        print(
            f"| {name} | {size[0]}x{size[1]} {fmt} to 84x84, one thread (rate measured on 300 "
            f"synthetic images) | {total:,} | ~{total / per_second:,.0f} at that rate | "
            f"{rate(per_second)} |"
        )
    print("| cifar_fs, fc100, mini_imagenet pickles | arrays read, no decoding | | seconds | |")


def run(device: torch.device, repeats: int, workers: int | None, caches: bool) -> None:
    sampler_rows(device, repeats)
    if caches:
        cache_rows(workers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_common_arguments(parser, "timed calls per measurement (5; --quick 2)", children=False)
    parser.add_argument("--quick", action="store_true", help="2 repeats")
    parser.add_argument("--no-caches", action="store_true", help="samplers only")
    args = parser.parse_args(argv)
    default_repeats(parser, args, 5)
    device, threads = setup_hardware(args)
    started = time.perf_counter()
    run(device, args.repeats, workers=None, caches=not args.no_caches)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s, {threads} threads")


if __name__ == "__main__":
    main()
