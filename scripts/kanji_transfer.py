"""Does meta-training on rendered kanji transfer to real handwriting? ProtoNet trained on the
Omniglot sample's small1, on kanji (each ``--renderers`` setting), and on both at once, each
re-tested by ``metarun-eval`` on the same episodes of the Omniglot sample's small2-only
alphabets (Japanese katakana, Sanskrit, Tagalog), 20-way and 5-way 1-shot, within one alphabet.

Every arm is a plain ``metarun`` command (printed as it starts): ProtoNet, 20-way 1-shot
training episodes with 5 queries per class, ``--episodes`` updates (2000), Conv-4, validated
on its own validation split every 250 updates, the best checkpoint kept, one CPU thread each,
``--jobs`` arms at a time. Each arm's own test (its ``summary.json``, 5-way 1-shot on its own
test split) is listed beside the re-tests. Run from the repository root::

    python scripts/kanji_transfer.py --root ../shared/data/omniglot
    python scripts/kanji_transfer.py --arms kanji,kanji_classic --episodes 500   # quicker
    python scripts/kanji_transfer.py --arms kanji --kanji-set "distortion={point_std:2}"

It prints a Markdown table of errors (100 - accuracy) with their 95% CIs, and writes it, with
every run and re-test, under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SMALL = [
    "dataset.background=images_background_small1",
    "dataset.evaluation=images_background_small2",
    "dataset.val_alphabets=1",
]
ARMS = {
    "small1": ["dataset=omniglot", "dataset.root={root}", *SMALL],
    "kanji": ["dataset=kanji", "dataset.renderer=handwriting"],
    "kanji_classic": ["dataset=kanji", "dataset.renderer=classic"],
    "both": [
        "dataset=multi",
        "dataset.held_out=[]",
        "dataset.variable=false",
        "dataset.within_group=[]",
        "dataset.sources.omniglot.root={root}",
        *(s.replace("dataset.", "dataset.sources.omniglot.") for s in SMALL),
    ],
}
TRAINED_ON = {
    "small1": "Omniglot small1 (4 alphabets, x4 rotations)",
    "kanji": "kanji, handwriting renderer",
    "kanji_classic": "kanji, classic renderer",
    "both": "kanji (handwriting) + small1",
}
TESTS = {"20-way": 20, "5-way": 5}
KANJI_PREFIX = {"kanji": "dataset.", "kanji_classic": "dataset.", "both": "dataset.sources.kanji."}


def train_command(arm: str, args: argparse.Namespace, run_dir: Path) -> list[str]:
    return [
        "metarun",
        "algorithm=protonet",
        "algorithm.train_ways=20",
        "algorithm.train_queries=5",
        f"trainer.max_steps={args.episodes}",
        "trainer.val_every=250",
        "logger=none",
        "hardware=cpu",
        "hardware.threads=1",
        f"hydra.run.dir={run_dir}",
        *(o.format(root=args.root) for o in ARMS[arm]),
        *(f"{KANJI_PREFIX[arm]}{o}" for o in args.kanji_set if arm in KANJI_PREFIX),
    ]


def test_command(run_dir: Path, ways: int, args: argparse.Namespace, out: Path) -> list[str]:
    return [
        "metarun-eval",
        f"run_dir={run_dir}",
        "dataset=omniglot",
        f"dataset.root={args.root}",
        *SMALL,
        "dataset.within_group=true",
        f"dataset.ways={ways}",
        "dataset.shots=1",
        "dataset.queries=1",
        f"eval.test_episodes={args.test_episodes}",
        "logger=none",
        "hardware=cpu",
        "hardware.threads=1",
        f"out={out}",
    ]


def call(command: list[str], log: Path) -> None:
    print("$", shlex.join(command), flush=True)
    beside = Path(sys.executable).parent / command[0]  # this environment's, when not on PATH
    command = [str(beside) if beside.exists() else command[0], *command[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    with log.open("w") as stream:
        done = subprocess.run(command, env=env, stdout=stream, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed; its output: {log}")


def error_of(summary: Path) -> tuple[float, float]:
    """The test error (%) and its 95% CI from a run's or re-test's ``summary.json``."""
    test = json.loads(summary.read_text())["test"]
    scale = 100.0 if test["mean"] <= 1.0 else 1.0
    return 100.0 - scale * test["mean"], scale * test["ci95"]


def run_arm(arm: str, args: argparse.Namespace, out: Path) -> dict:
    run_dir = out / "runs" / arm
    started = time.perf_counter()
    call(train_command(arm, args, run_dir), out / f"{arm}.log")
    seconds = time.perf_counter() - started
    result = {"own": error_of(run_dir / "summary.json"), "seconds": seconds}
    for name, ways in TESTS.items():
        retest = out / "evals" / f"{arm}-{ways}way"
        call(test_command(run_dir, ways, args, retest), out / f"{arm}-{ways}way.log")
        result[name] = error_of(retest / "summary.json")
    return result


def table(results: dict[str, dict]) -> str:
    lines = [
        "| trained on | its own test, 5-way | Omniglot small2-only, 20-way | 5-way |",
        "|---|---|---|---|",
    ]
    for arm, r in results.items():
        cells = [f"{r[k][0]:.1f} ± {r[k][1]:.1f}%" for k in ("own", *TESTS)]
        lines.append(f"| {TRAINED_ON[arm]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="../shared/data/omniglot")
    parser.add_argument("--episodes", type=int, default=2000)
    parser.add_argument("--test-episodes", type=int, default=200)
    parser.add_argument("--arms", default="small1,kanji,kanji_classic", help="also: both")
    parser.add_argument("--jobs", type=int, default=2, help="arms trained at once")
    parser.add_argument(
        "--kanji-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a kanji setting for every arm that trains on kanji, e.g. max_strokes=8",
    )
    parser.add_argument("--out", default=None, help="where runs, re-tests and the table go")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        sys.exit(f"kanji_transfer.py: --arms: unknown {unknown}; choose from {list(ARMS)}")
    if not (Path(args.root) / "images_background_small2").is_dir():
        sys.exit(f"kanji_transfer.py: --root: {args.root} has no images_background_small2")
    out = Path(args.out or tempfile.mkdtemp(prefix="kanji-transfer-"))
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(zip(arms, pool.map(lambda a: run_arm(a, args, out), arms), strict=True))
    text = table(results)
    budget = (
        f"ProtoNet, Conv-4, {args.episodes} 20-way 1-shot training episodes per arm; "
        f"{args.test_episodes} test episodes of 1 query per class; "
        f"{time.perf_counter() - started:.0f} s in all, {args.jobs} arms at a time"
    )
    print(f"\n{text}\n\n{budget}; {out}")
    (out / "table.md").write_text(f"{text}\n\n{budget}\n")


if __name__ == "__main__":
    main()
