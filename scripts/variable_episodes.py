"""Variable-shape episodes: one call per episode (what metarun does, ``EpisodeList``) against one
padded call per meta-batch with masks, timed side by side on the same meta-batches.

Meta-Dataset's episodes differ in ways, shots and queries, so a meta-batch cannot be one dense
tensor. Either each episode goes through the learner on its own, or every episode is padded to
the largest support and query sets of the meta-batch (and the largest ways), the padding masked
out of the class means and the loss. Padding wastes the compute of every padded image and
needs masks in every learner (and masked normalisation statistics to be exact); per-episode
calls waste the launch overhead of small batches. This measures ProtoNet's meta-step (Conv-4,
forward + backward) both ways on the multi-source sampler's real variable shapes.

    python scripts/variable_episodes.py                     # Meta-Dataset's caps, 16 episodes
    python scripts/variable_episodes.py --max-ways 20 --max-support 100 --max-query 5
    python scripts/variable_episodes.py --device cuda

The padded variant's loss is not bit-equal to the per-episode one: ProtoNet's BatchNorm uses
each episode's statistics, which the padding would enter. That costs padding nothing in time, so
the timing comparison stands; the printed "padding" is the share of padded (wasted) images.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from metarun.algorithms import ProtoNet
from metarun.data.episodes import ClassImages, EpisodeList, EpisodeSampler, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.data.variable_shape import VariableShape
from metarun.models import Conv4, embed_episodes
from metarun.training.trainer import mean_over_episodes


def sampler(shape: VariableShape, device: torch.device) -> EpisodeSampler:
    """Kanji's training layout (3997 classes x 20 drawings, 28x28 grey), random pixels."""
    counts = torch.full((3997,), 20)
    images = torch.randint(0, 256, (int(counts.sum()), 1, 28, 28), dtype=torch.uint8)
    classes = ClassImages(images, counts, [f"c{i}" for i in range(len(counts))])
    decode = lambda x: x.float() / 255  # noqa: E731
    return EpisodeSampler(classes, EpisodeSpec(5, 1, 1), decode, variable=shape).to(device)


def padded_loss(learner: ProtoNet, batch: EpisodeList) -> Tensor:
    """ProtoNet's meta-loss on episodes padded to the meta-batch's largest shapes, masked."""
    episodes = batch.episodes
    support = max(e.support_y.shape[1] for e in episodes)
    query = max(e.query_y.shape[1] for e in episodes)
    ways = max(e.ways for e in episodes)
    x_shape = episodes[0].support_x.shape[2:]
    device = episodes[0].support_x.device
    images = torch.zeros(len(episodes), support + query, *x_shape, device=device)
    support_y = torch.full((len(episodes), support), ways, device=device)  # padding: class N
    query_y = torch.full((len(episodes), query), -100, device=device)  # ignored by the loss
    for b, e in enumerate(episodes):
        s, q = e.support_y.shape[1], e.query_y.shape[1]
        images[b, :s], images[b, support : support + q] = e.support_x[0], e.query_x[0]
        support_y[b, :s], query_y[b, :q] = e.support_y[0], e.query_y[0]
    embeddings = embed_episodes(learner.encoder, images)
    one_hot = F.one_hot(support_y, ways + 1).to(embeddings.dtype)[..., :ways]  # [B, S, N]
    means = one_hot.transpose(1, 2) @ embeddings[:, :support]
    means = means / one_hot.sum(1).clamp(min=1).unsqueeze(-1)
    logits = -((embeddings[:, support:, None] - means[:, None]) ** 2).sum(-1)  # [B, Q, N]
    absent = (
        torch.arange(ways, device=device)
        >= torch.tensor([e.ways for e in episodes], device=device)[:, None]
    )
    logits = logits.masked_fill(absent[:, None], float("-inf"))
    return F.cross_entropy(logits.flatten(0, 1), query_y.flatten(), ignore_index=-100)


def timed(step, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=16, help="episodes per meta-batch")
    parser.add_argument("--batches", type=int, default=6, help="meta-batches timed")
    parser.add_argument("--max-ways", type=int, default=50)
    parser.add_argument("--max-support", type=int, default=500)
    parser.add_argument("--max-query", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    shape = VariableShape(
        max_ways=args.max_ways, max_support=args.max_support, max_query=args.max_query
    )
    episodes = sampler(shape, device)
    task = TaskSpec("classification", (1, 28, 28), shape.max_ways)
    learner = ProtoNet(lambda shape, out: Conv4(shape, out), task).to(device)
    generator = torch.Generator().manual_seed(0)
    batches = [
        episodes.gather(episodes.draw(args.episodes, generator)) for _ in range(args.batches + 1)
    ]

    def per_episode(batch: EpisodeList) -> None:
        learner.zero_grad()
        mean_over_episodes(learner.meta_loss, batch)[0].backward()

    def padded(batch: EpisodeList) -> None:
        learner.zero_grad()
        padded_loss(learner, batch).backward()

    per_episode(batches[0]), padded(batches[0])  # warm-up
    times: dict[str, list[float]] = {"per-episode": [], "padded": []}
    wasted = []
    for batch in batches[1:]:  # alternate, so that both see the same machine load
        times["per-episode"].append(timed(lambda b=batch: per_episode(b), device))
        times["padded"].append(timed(lambda b=batch: padded(b), device))
        real = sum(e.support_y.shape[1] + e.query_y.shape[1] for e in batch.episodes)
        most = max(e.support_y.shape[1] for e in batch.episodes) + max(
            e.query_y.shape[1] for e in batch.episodes
        )
        wasted.append(1 - real / (most * len(batch)))
    print(
        f"ProtoNet meta-step, {args.episodes} variable episodes (max {args.max_ways} ways, "
        f"{args.max_support} support, {args.max_query} queries) on {device}"
    )
    for name, values in times.items():
        print(f"  {name:12s} median {statistics.median(values) * 1000:8.1f} ms")
    ratio = [p / e for p, e in zip(times["padded"], times["per-episode"], strict=True)]
    print(f"  padded / per-episode, pair by pair: median {statistics.median(ratio):.2f}x")
    print(f"  padding: {statistics.mean(wasted):.0%} of the padded images are padding")


if __name__ == "__main__":
    main()
