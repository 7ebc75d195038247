"""Every learner built from its YAML: episodes per second of one training step and of one
evaluation pass, and the peak memory of each.

Each learner (``--algorithms``, default
``protonet,matchingnet,relationnet,siamese,baseline,baseline_pp,mann,snail,maml``) is built and
fed as ``from_yaml.py`` describes, on Omniglot-shaped random images unless ``--shapes`` says
otherwise, each case in a fresh process for its peak memory (``timing.py``):

- train: ``meta_loss(batch)`` and ``backward()`` on the episodes the learner trains on (its
  ``training_episodes``, the YAML's ``meta_batch_size`` of them, capped);
- eval: ``predict(batch)`` under ``no_grad`` in eval mode on the data set's evaluation episodes
  (5-way 1-shot 15-query, ``eval.batch_size`` of them, capped).

A training "episode" is what each learner's update consumes, so the training column compares
costs per update unit rather than learners; the evaluation column is like for like. "vs
protonet" divides by ProtoNet's rate on the same shape in the same run.

Run from the repository root::

    python scripts/benchmarks/learners.py [--quick] [--algorithms protonet,snail]

5 repeats per case; ``--quick`` (2 repeats, at most 8 episodes per call) shortens it.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import torch
from from_yaml import (
    SHAPES,
    FamilyCase,
    decode_case,
    family_algorithms,
    family_shapes,
    parse_args,
    print_skipped,
    run_family_case,
    task_cap,
)
from timing import (
    MIB,
    memory_method,
    print_device,
    print_footer,
    print_memory_method,
    print_rule,
    run_all,
    run_child,
    setup_hardware,
    table_line,
)

LEARNERS = (
    "protonet",
    "matchingnet",
    "relationnet",
    "siamese",
    "baseline",
    "baseline_pp",
    "mann",
    "snail",
    "maml",
)
EVAL_TASKS = 32  # eval.batch_size: episodes per evaluation pass


def learner_cases(
    algorithms: list[str], shapes: list[str], max_tasks: int | None, quick: bool
) -> list[FamilyCase]:
    """Per algorithm and shape: a training step, then an evaluation pass."""
    cases = []
    for name in algorithms:
        for shape in shapes:
            train_cap = task_cap(SHAPES[shape].max_tasks, max_tasks, quick)
            eval_cap = task_cap(EVAL_TASKS, max_tasks, quick)
            cases.append(FamilyCase(name, shape, "batched", (), train_cap))
            cases.append(FamilyCase(name, shape, "eval", (), eval_cap))
    return cases


@dataclass
class LearnerRow:
    algorithm: str
    shape: str
    episodes: tuple[str, str]  # training, evaluation
    tasks: tuple[int, int]
    rates: tuple[float, float]  # episodes/s of the fastest repeat
    peaks_mib: tuple[float, float]


def summarise_learners(cases: list[FamilyCase], results: list[dict]) -> list[LearnerRow]:
    """``results`` in the order of ``learner_cases``: training, then evaluation."""
    rows = []
    for i in range(0, len(cases), 2):
        train, evaluation = results[i], results[i + 1]
        both = (train, evaluation)
        rows.append(
            LearnerRow(
                cases[i].algorithm,
                cases[i].shape,
                tuple("{}w {}s {}q".format(*r["episode"]) for r in both),
                tuple(r["tasks"] for r in both),
                tuple(r["tasks"] / min(r["seconds"]) for r in both),
                tuple(r["peak_bytes"] / MIB for r in both),
            )
        )
    return rows


def print_learner_table(table: list[LearnerRow], reference: str = "protonet") -> None:
    """Episodes/s and peak memory; ``vs <reference>`` divides by that learner's rate on the
    same shape in the same run."""
    base = {(r.algorithm, r.shape): r.rates for r in table}
    header = ("algorithm", "input", "train episode", "tasks", "train eps/s")
    header += (f"vs {reference}", "MiB", "eval episode", "tasks", "eval eps/s")
    header += (f"vs {reference}", "MiB")
    widths = (12, 17, 13, 5, 11, 11, 6, 12, 5, 10, 11, 6)
    print_rule(header, widths, 3)
    for r in table:
        ref = base.get((reference, r.shape))
        cells = [r.algorithm, SHAPES[r.shape].name]
        for phase in (0, 1):
            ratio = f"{r.rates[phase] / ref[phase]:.2f}x" if ref else "-"
            cells += [r.episodes[phase], str(r.tasks[phase]), f"{r.rates[phase]:.3g}", ratio]
            cells += [f"{r.peaks_mib[phase]:.0f}"]
        print(table_line(cells, widths, 3))
    print()


def run_learners(args: argparse.Namespace, device: torch.device, threads: int) -> None:
    algorithms, skipped = family_algorithms(args.algorithms, LEARNERS)
    shapes = family_shapes(args.shapes or "omniglot")
    cases = learner_cases(algorithms, shapes, args.max_tasks, args.quick)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    method = memory_method(device)
    print("metarun learner benchmark: every learner built from its YAML, a training step and an")
    print("evaluation pass on random images shaped as the data set's episodes")
    print_device(device, threads)
    print(
        "train: meta_loss(batch) + backward() on the learner's training episodes (the YAML's "
        "meta_batch_size, capped); eval: predict(batch) under no_grad in eval mode on the data "
        "set's evaluation episodes (eval.batch_size, capped)"
    )
    print(
        f"fp32, no autocast, no optimiser step; 1 warm-up, then {args.repeats} timed repeats; "
        "eps/s: episodes over the fastest repeat"
    )
    print_memory_method(device, method, args.in_process)
    print_skipped(skipped)
    results = run_all(
        cases, run_family_case, __file__, device, args.repeats, threads, args.in_process
    )
    print_learner_table(summarise_learners(cases, results))
    mode = "--learners --quick" if args.quick else "--learners"
    print_footer(started, load_before, mode, threads)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv, __doc__, LEARNERS, "omniglot", full_repeats=5)
    device, threads = setup_hardware(args)
    if not run_child(args, decode_case, run_family_case, device):
        run_learners(args, device, threads)


if __name__ == "__main__":
    main()
