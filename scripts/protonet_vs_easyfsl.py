"""Prototypical Networks: metarun's against easyfsl's on the same data, episodes and budget, and
metarun's own settings changed one at a time, to find what separates them.

Data: the Omniglot sample (``--root``, the folder holding ``images_background_small1`` and
``images_background_small2``). Both implementations meta-train on small1's alphabets without
Latin (metarun holds Latin out for validation), x4 rotations, 28x28 Lanczos, strokes as ink;
20-way 1-shot episodes with 5 queries per class, ``--episodes`` of them (2000), Adam at 1e-3, the
same Conv-4 (64 filters, padding 1, BatchNorm, ReLU, 2x2 max-pool: 64-d). Every arm is scored
on the same ``--test-episodes`` (200) 20-way 1-shot 1-query episodes drawn within one alphabet
of the small2 alphabets that small1 lacks, Japanese (katakana) and Sanskrit.

Arms (``--arms``; each in its own process, ``--jobs`` at a time, one thread each):

* ``metarun``: ``metarun experiment=omniglot_sample algorithm=protonet
  algorithm.train_ways=20 trainer.max_steps=<episodes>``, run in process as the command runs it
  (validated on Latin every 100 episodes, the best checkpoint kept), scored through
  ``metarun.load`` and ``adapt``, as a user would.
* ``metarun_last``: the same run's last checkpoint (no selection on validation).
* ``euclidean``, ``separate``, ``raw``: metarun with one change each: the plain Euclidean
  distance (``algorithm.distance=euclidean``), support and queries embedded in two passes
  (``algorithm.embedding=separate``), pixels left as [0, 1] ink (``dataset.normalize=false``).
  ``easyfsl_settings`` has all three, and the last checkpoint.
* ``easyfsl``: easyfsl's ``PrototypicalNetworks`` with the same Conv-4, trained by easyfsl's
  own steps (``process_support_set`` on the support images, ``forward`` on the queries,
  cross-entropy, Adam) on exactly the training episodes metarun's run draws, pixels as [0, 1]
  ink, the last model kept. It needs easyfsl importable, e.g. ``pip install --target
  /tmp/easyfsl easyfsl --no-deps`` and ``PYTHONPATH=/tmp/easyfsl``: a scratch install for this
  comparison, never a dependency of metarun.

Run from the repository root::

    PYTHONPATH=/tmp/easyfsl python scripts/protonet_vs_easyfsl.py --root ../shared/data/omniglot

It prints, per arm, the training throughput (episodes per second of training steps, validation
excluded; compare arms only from a run with ``--jobs 1``, where nothing else shares the CPU) and
the within-alphabet 20-way error with its 95% CI, and each arm's paired difference from
``metarun`` on the same test episodes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

ALPHABETS = ("Japanese_(katakana)", "Sanskrit")
WAYS, QUERIES = 20, 5
TEST_SEED = 20210
ARMS = {
    "metarun": [],
    "metarun_last": [],
    "euclidean": ["algorithm.distance=euclidean"],
    "separate": ["algorithm.embedding=separate"],
    "raw": ["dataset.normalize=false"],
    "easyfsl_settings": [
        "algorithm.distance=euclidean",
        "algorithm.embedding=separate",
        "dataset.normalize=false",
    ],
    "easyfsl": [],
}
LAST_CHECKPOINT = ("metarun_last", "easyfsl_settings")
RUN_OF = {"metarun_last": "metarun"}  # arms that score another arm's run


def overrides(arm: str, root: str, episodes: int, cache: str) -> list[str]:
    """The command line of an arm's metarun run."""
    return [
        "experiment=omniglot_sample",
        "algorithm=protonet",
        f"algorithm.train_ways={WAYS}",
        f"algorithm.train_queries={QUERIES}",
        f"trainer.max_steps={episodes}",
        "trainer.val_every=100",
        "logger=none",
        "hardware=cpu",
        "hardware.threads=1",
        f"dataset.root={root}",
        f"dataset.cache_dir={cache}",
        *ARMS[RUN_OF.get(arm, arm)],
    ]


def compose(arguments: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from metarun.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=arguments)


def test_episodes(data, count: int):
    """Within-alphabet 20-way 1-shot 1-query episodes of ``ALPHABETS``, decoded as ``data``
    decodes (its normalisation), the same plan for every arm."""
    from metarun.data.episodes import EpisodeSampler, EpisodeSpec, FixedEpisodes

    classes = data.classes("test")
    chosen = [i for i, group in enumerate(classes.groups) if group in ALPHABETS]
    sampler = EpisodeSampler(
        classes.select(chosen),
        EpisodeSpec(WAYS, 1, 1),
        data.decoder,
        split="test",
        within_group=True,
    )
    return FixedEpisodes(sampler, count, TEST_SEED)


def scores_through_the_api(checkpoint: Path, count: int) -> torch.Tensor:
    """Each test episode's accuracy from ``metarun.load(checkpoint)`` and ``adapt``."""
    import metarun

    learner = metarun.load(checkpoint)
    scores = []
    for batch in test_episodes(learner.data, count).batches(1):
        episode = batch[0]
        labels = learner.adapt(episode.support_x, episode.support_y)(episode.query_x)
        scores.append((labels == episode.query_y).double().mean() * 100)
    return torch.stack(scores)


def run_metarun(arm: str, args: argparse.Namespace, out: Path) -> dict:
    from metarun.run import RunContext, run

    run_dir = out / arm
    run(compose(overrides(arm, args.root, args.episodes, args.cache)), RunContext(run_dir, arm))
    summary = json.loads((run_dir / "summary.json").read_text())
    seconds, rate = summary["train_seconds"], summary["episodes_per_s"]
    results = {}
    for name in ("best", "last"):
        scores = scores_through_the_api(run_dir / "checkpoints" / f"{name}.pt", args.test_episodes)
        results[name] = scores.tolist()
    return {
        "train_seconds": seconds,
        "episodes_per_s": rate,
        "scores": results,
    }


def run_easyfsl(args: argparse.Namespace) -> dict:
    """easyfsl's PrototypicalNetworks, its own training steps, on metarun's training plan."""
    from easyfsl.methods import PrototypicalNetworks

    from metarun.models import Conv4
    from metarun.run import build

    torch.set_num_threads(1)
    cfg = compose(overrides("metarun", args.root, args.episodes, args.cache))
    cfg.dataset.normalize = False  # [0, 1] ink, as easyfsl's transforms give
    data = build(cfg, "dataset")
    spec = data.episodes.replace(ways=WAYS, queries=QUERIES)
    sampler = data.sampler("train", spec)
    generator = torch.Generator().manual_seed(cfg.seed)  # the plan metarun's trainer draws
    torch.manual_seed(cfg.seed)
    model = PrototypicalNetworks(Conv4(data.task.input_shape, None))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_function = torch.nn.CrossEntropyLoss()
    started = time.perf_counter()
    model.train()
    for _ in range(args.episodes):
        episode = sampler.gather(sampler.draw(1, generator))[0]
        optimizer.zero_grad()
        model.process_support_set(episode.support_x, episode.support_y)
        loss = loss_function(model(episode.query_x), episode.query_y)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - started
    model.eval()
    scores = []
    with torch.no_grad():
        for batch in test_episodes(data, args.test_episodes).batches(1):
            episode = batch[0]
            model.process_support_set(episode.support_x, episode.support_y)
            predicted = model(episode.query_x).argmax(-1)
            scores.append((predicted == episode.query_y).double().mean() * 100)
    last = torch.stack(scores).tolist()
    return {
        "train_seconds": seconds,
        "episodes_per_s": args.episodes / seconds,
        "scores": {"last": last},
    }


def child(args: argparse.Namespace) -> None:
    out = Path(args.out)
    arm = args.child
    result = run_easyfsl(args) if arm == "easyfsl" else run_metarun(arm, args, out)
    (out / f"{arm}.json").write_text(json.dumps(result))


def launch(arm: str, args: argparse.Namespace, out: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        arm,
        "--out",
        str(out),
        "--root",
        args.root,
        "--cache",
        args.cache,
        "--episodes",
        str(args.episodes),
        "--test-episodes",
        str(args.test_episodes),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"arm {arm} failed:\n{done.stderr[-4000:]}")
    return json.loads((out / f"{arm}.json").read_text())


def report(results: dict[str, dict], arms: list[str]) -> None:
    from metarun.training.evaluate import mean_and_ci95

    def scores(arm: str) -> torch.Tensor:
        result = results[RUN_OF.get(arm, arm)]
        which = "last" if arm in LAST_CHECKPOINT or arm == "easyfsl" else "best"
        return torch.tensor(result["scores"][which])

    reference = scores("metarun") if "metarun" in results else None
    print(f"{'arm':18} {'episodes/s':>10} {'20-way error %':>16} {'minus metarun':>18}")
    for arm in arms:
        accuracy = scores(arm)
        error, ci = mean_and_ci95(100 - accuracy)
        rate = results[RUN_OF.get(arm, arm)]["episodes_per_s"]
        line = f"{arm:18} {rate:10.2f} {error:9.1f} ± {ci:4.1f}"
        if reference is not None and arm != "metarun":
            difference, difference_ci = mean_and_ci95(reference - accuracy)
            line += f" {difference:+13.1f} ± {difference_ci:.1f}"
        print(line)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data/omniglot")
    parser.add_argument("--cache", default=None, help="decoded-data cache (default: a temp dir)")
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--test-episodes", type=int, default=200)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--jobs", type=int, default=2, help="arms trained at once")
    parser.add_argument("--out", default=None, help="where runs and results go")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child is not None:
        child(args)
        return
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        sys.exit(f"protonet_vs_easyfsl.py: --arms: unknown {unknown}; choose from {list(ARMS)}")
    out = Path(args.out or tempfile.mkdtemp(prefix="protonet-vs-easyfsl-"))
    out.mkdir(parents=True, exist_ok=True)
    args.cache = args.cache or str(out / "cache")
    started = time.perf_counter()
    trained = list(dict.fromkeys(RUN_OF.get(a, a) for a in arms))
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = pool.map(lambda a: launch(a, args, out), trained)
        results = dict(zip(trained, runs, strict=True))
    print(f"ProtoNet, {args.episodes} training episodes, {args.test_episodes} test episodes")
    report(results, arms)
    print(f"\n{time.perf_counter() - started:.0f} s in all, {args.jobs} arms at a time; {out}")


if __name__ == "__main__":
    main()
