"""MAML's meta-update: metarun's against learn2learn's, on the same CPU, data and tasks.

Data: the Omniglot sample (``--root``), as ``metarun experiment=omniglot_sample`` loads it
(small1's alphabets without Latin, x4 rotations, 28x28), 5-way 1-shot tasks with one query per
class, 32 tasks per meta-batch: MAML's Omniglot settings. ``--rounds`` meta-batches are drawn
and gathered before any timing, so neither side pays for data. Each round times one full
meta-update (gradients zeroed, meta-loss, backward, Adam step) of every arm on that round's
meta-batch, the arms in turn, so that whatever else the machine does falls on all of them.

Arms:

* ``metarun``: ``MAML`` built from the shipped configs as ``metarun algorithm=maml
  dataset=omniglot`` builds it (the authors' strided Conv-4, ``configs/network/
  maml_omniglot_conv4.yaml``), its vmapped ``meta_loss``.
* ``l2l_same_net``: learn2learn's ``algorithms.MAML`` around a copy of that very network, with
  the same initial weights, stepped as learn2learn's Omniglot example steps it
  (``learnables/learn2learn``, ``examples/vision/maml_omniglot.py``: per task ``clone()``,
  ``adapt`` on the support loss, ``backward`` of the query loss, gradients divided by the
  meta-batch size, one optimiser step). The same arithmetic per task, in a Python loop; it
  adapts every weight, BatchNorm's offsets too, where metarun's MAML keeps those out of the
  inner loop as the authors' code does.
* ``l2l_omniglot_cnn``: the same steps on learn2learn's own ``vision.models.OmniglotCNN``, what
  a learn2learn user runs.

learn2learn is needed only here, as a scratch install outside metarun's environment. Its 0.2.0
source release ships C files generated for older Pythons; regenerate them with Cython < 3::

    pip download learn2learn==0.2.0 --no-deps -d /tmp/l2l
    tar xzf /tmp/l2l/learn2learn-0.2.0.tar.gz -C /tmp/l2l
    rm /tmp/l2l/learn2learn-0.2.0/learn2learn/data/*.c
    pip install --target /tmp/l2l/deps "cython<3" gym cloudpickle gym_notices --no-deps
    (cd /tmp/l2l/learn2learn-0.2.0 && PYTHONPATH=/tmp/l2l/deps python setup.py build_ext --inplace)

and run from metarun's repository root::

    PYTHONPATH=/tmp/l2l/learn2learn-0.2.0:/tmp/l2l/deps \\
        python scripts/maml_vs_learn2learn.py --root ../shared/data/omniglot [--threads 2]
        [--inner-steps 1] [--first-order] [--rounds 12]

It prints each arm's throughput (tasks per second: the median round, and the fastest) and, per
other arm, metarun's speed-up as the median and range of the round-by-round ratios.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from hydra import compose, initialize_config_dir
from torch import nn

from metarun.cli import CONFIG_DIR
from metarun.data.episodes import EpisodeBatch
from metarun.run import build

TASKS = 32


def configured(args: argparse.Namespace):
    overrides = [
        "experiment=omniglot_sample",
        f"dataset.root={args.root}",
        "dataset.ways=5",
        "dataset.shots=1",
        "algorithm=maml",
        f"algorithm.inner_steps={args.inner_steps}",
        f"algorithm.first_order={str(args.first_order).lower()}",
        f"algorithm.meta_batch_size={TASKS}",
        "algorithm.train_queries=1",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def meta_batches(cfg, learner, rounds: int) -> list[EpisodeBatch]:
    data = build(cfg, "dataset")
    sampler = data.sampler("train", learner.training_episodes(data.episodes))
    generator = torch.Generator().manual_seed(0)
    return [sampler.gather(sampler.draw(TASKS, generator)) for _ in range(rounds + 1)]


def metarun_step(maml: nn.Module, optimizer: torch.optim.Optimizer) -> Callable:
    def step(batch: EpisodeBatch) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = maml.meta_loss(batch)
        loss.backward()
        optimizer.step()

    return step


def learn2learn_step(
    network: nn.Module,
    inner_lr: float,
    inner_steps: int,
    first_order: bool,
    optimizer: Callable[..., torch.optim.Optimizer],
) -> Callable:
    import learn2learn as l2l

    maml = l2l.algorithms.MAML(network, lr=inner_lr, first_order=first_order)
    optimizer = optimizer(maml.parameters())
    loss = nn.CrossEntropyLoss()

    def step(batch: EpisodeBatch) -> None:
        optimizer.zero_grad(set_to_none=True)
        for task in range(len(batch)):
            learner = maml.clone()
            for _ in range(inner_steps):
                learner.adapt(loss(learner(batch.support_x[task]), batch.support_y[task]))
            loss(learner(batch.query_x[task]), batch.query_y[task]).backward()
        for p in maml.parameters():
            if p.grad is not None:
                p.grad.div_(len(batch))
        optimizer.step()

    return step


def arms(cfg, args: argparse.Namespace) -> tuple[dict[str, Callable], nn.Module]:
    import learn2learn as l2l

    from metarun.data.task import TaskSpec

    torch.manual_seed(0)
    task = TaskSpec("classification", (1, 28, 28), 5)
    maml = build(cfg, "algorithm", model=build(cfg, "model"), task=task)
    same_net = copy.deepcopy(maml.model)
    adam = partial(torch.optim.Adam, lr=cfg.optimizer.lr)
    inner = (maml.inner_lr, args.inner_steps, args.first_order, adam)
    return {
        "metarun": metarun_step(maml, build(cfg, "optimizer", params=maml.parameters())),
        "l2l_same_net": learn2learn_step(same_net, *inner),
        "l2l_omniglot_cnn": learn2learn_step(l2l.vision.models.OmniglotCNN(5), *inner),
    }, maml


def timed(step: Callable, batch: EpisodeBatch) -> float:
    start = time.perf_counter()
    step(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the Omniglot sample's folder")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--first-order", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = configured(args)
    steps, maml = arms(cfg, args)
    batches = meta_batches(cfg, maml, args.rounds)
    for step in steps.values():  # warm-up on the extra batch
        step(batches[-1])
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for batch in batches[: args.rounds]:
        for name, step in steps.items():
            seconds[name].append(timed(step, batch))
    order = "first" if args.first_order else "second"
    print(
        f"MAML 5-way 1-shot, {TASKS} tasks, {args.inner_steps} inner step(s), {order} order, "
        f"{args.rounds} rounds, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for name, times in seconds.items():
        print(
            f"{name:18s} {TASKS / statistics.median(times):7.1f} tasks/s median round "
            f"({TASKS / min(times):.1f} fastest)"
        )
    for name, times in seconds.items():
        if name == "metarun":
            continue
        ratios = [t / m for t, m in zip(times, seconds["metarun"], strict=True)]
        print(
            f"metarun vs {name}: {statistics.median(ratios):.2f}x median round "
            f"(range {min(ratios):.2f}-{max(ratios):.2f}x)"
        )


if __name__ == "__main__":
    main()
