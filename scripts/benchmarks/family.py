"""The optimisation-based family, each learner built from its YAML: batched ``meta_loss`` against
the same learner one task at a time, and the cost of ``algorithm.checkpoint_steps``.

Every algorithm of the family (``--algorithms``, default
``maml,anil,metasgd,mamlpp,reptile,meta_lstm``), built and fed as ``from_yaml.py`` describes:
the paper defaults from the shipped YAML, on Omniglot-shaped (1x28x28) and miniImageNet-shaped
(3x84x84, Conv-4-32) 5-way 1-shot random inputs, the meta-batch the YAML's ``meta_batch_size``
capped at 32 and 4 tasks (``--max-tasks``). Per algorithm and shape, two rows side by side:

- ``batched``: ``learner.meta_loss(batch)`` and ``backward()``, the package's vmapped path.
- ``loop``: the same learner one task at a time: for each task ``i``,
  ``meta_loss(batch[i:i+1])`` and ``backward()`` of that loss divided by the meta-batch size,
  gradients accumulated; what the learner would cost without batching over tasks.

It needs nothing beyond the ``MetaLearner`` protocol, so a new member of the family is
benchmarked as soon as its YAML exists; in the default list, names without a YAML yet are
skipped (and listed), and a name given to ``--algorithms`` without one is a one-line error.
With ``maml`` in the list, two more rows per shape give the cost of ``checkpoint_steps`` for
second-order MAML with 5 inner steps (``algorithm.inner_steps=5``): batched, with and without
checkpointing, time and peak memory. Throughput and memory are measured as ``timing.py`` says.

Run from the repository root::

    python scripts/benchmarks/family.py [--quick] [--algorithms maml,anil] [--shapes omniglot]

These rows are a benchmark of their own rather than part of ``maml_protonet.py``: they answer
another question (the whole family as configured, not one implementation checked against a
reference), and together the two would take too long on a CPU. It times 3 repeats per case;
each algorithm adds two child processes per shape and MAML two more per shape for the checkpoint
rows, so the whole family takes several minutes on 2 CPU cores (``--algorithms maml`` alone:
13.5 min wall, 5.3 min CPU on one thread, with 5 repeats on 2 cores shared at load average 6-9).
``--quick`` (2 repeats, at most 8 tasks) or ``--shapes omniglot`` shortens it.
"""

from __future__ import annotations

import argparse
import os
import statistics
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

FAMILY = ("maml", "anil", "metasgd", "mamlpp", "reptile", "meta_lstm")
CHECKPOINT_ALGORITHM = "maml"  # the checkpoint rows: second-order, 5 inner steps
CHECKPOINT_OVERRIDES = ("algorithm.inner_steps=5", "algorithm.first_order=false")


@dataclass(frozen=True)
class Pair:
    """Two rows of the family table side by side; ratios are A over B."""

    title: str
    compared: str
    a: FamilyCase
    b: FamilyCase


def family_pairs(
    algorithms: list[str], shapes: list[str], max_tasks: int | None, quick: bool
) -> list[Pair]:
    """Batched against loop for each algorithm and shape, then the checkpoint pairs."""

    def cap(shape: str) -> int:
        return task_cap(SHAPES[shape].max_tasks, max_tasks, quick)

    pairs = []
    for name in algorithms:
        for shape in shapes:
            batched, loop = (
                FamilyCase(name, shape, v, (), cap(shape)) for v in ("batched", "loop")
            )
            pairs.append(Pair(name, "batched vs loop", batched, loop))
    if CHECKPOINT_ALGORITHM in algorithms:
        for shape in shapes:
            on, off = (
                FamilyCase(
                    CHECKPOINT_ALGORITHM,
                    shape,
                    "batched",
                    (*CHECKPOINT_OVERRIDES, f"algorithm.checkpoint_steps={flag}"),
                    cap(shape),
                )
                for flag in ("true", "false")
            )
            pairs.append(
                Pair(f"{CHECKPOINT_ALGORITHM} 5-step 2nd-order", "checkpoint vs not", on, off)
            )
    return pairs


@dataclass
class PairRow:
    pair: Pair
    tasks: int
    episode: str
    rates: tuple[float, float]  # A, B: tasks over the fastest repeat
    medians: tuple[float, float]
    peaks_mib: tuple[float, float]

    @property
    def ratio(self) -> float:
        return self.rates[0] / self.rates[1]


def summarise_family(pairs: list[Pair], results: list[dict]) -> list[PairRow]:
    """``results`` in the order ``run_family`` ran them: A then B of each pair."""
    table = []
    for i, pair in enumerate(pairs):
        a, b = results[2 * i], results[2 * i + 1]
        tasks = a["tasks"]
        ways, shots, queries = a["episode"]
        table.append(
            PairRow(
                pair,
                tasks,
                f"{ways}w {shots}s {queries}q",
                (tasks / min(a["seconds"]), b["tasks"] / min(b["seconds"])),
                (
                    tasks / statistics.median(a["seconds"]),
                    b["tasks"] / statistics.median(b["seconds"]),
                ),
                (a["peak_bytes"] / MIB, b["peak_bytes"] / MIB),
            )
        )
    return table


def print_family_header(
    device: torch.device,
    threads: int,
    repeats: int,
    memory_method: str,
    pairs: list[Pair],
    skipped: list[str],
    in_process: bool,
) -> None:
    print(
        "metarun family benchmark: optimisation-based learners built from their YAML, batched "
        "meta_loss vs a per-task loop"
    )
    print_device(device, threads)
    caps = {}
    for pair in pairs:
        caps[pair.a.shape] = pair.a.max_tasks
    for name, cap in caps.items():
        shape = SHAPES[name]
        overrides = " ".join((f"dataset={shape.dataset}", *shape.overrides))
        why = shape.why if cap == shape.max_tasks else f"a full run: {shape.max_tasks}"
        print(
            f"{shape.name}: random images, {overrides}; tasks: the YAML's meta_batch_size, at "
            f"most {cap} ({why})"
        )
    print(
        "learner: hydra compose of configs/ with algorithm=<name> model=conv4 and the shape's "
        "overrides, metarun.run.build, Runtime.place (hardware.channels_last auto)"
    )
    print(
        "episode (w ways, s shots, q queries per class): learner.training_episodes of the data "
        "set's 5-way 1-shot 15-query, as metarun trains"
    )
    print(
        "batched vs loop: A = meta_loss(batch) + backward(); B = for each task i, "
        "meta_loss(batch[i:i+1]) + backward(loss / tasks), the same learner"
    )
    if any(p.compared == "checkpoint vs not" for p in pairs):
        print(
            f"checkpoint vs not: {CHECKPOINT_ALGORITHM} {' '.join(CHECKPOINT_OVERRIDES)}, "
            "batched; A: algorithm.checkpoint_steps=true, B: false"
        )
    print(
        f"meta-step: loss + backward(), fp32, no autocast, no optimiser step; 1 warm-up, then "
        f"{repeats} timed repeats"
    )
    print(
        "tasks/s: meta-batch / seconds of the fastest repeat (the median repeat's in brackets); "
        "A/B: ratio of the fastest"
    )
    print_memory_method(device, memory_method, in_process)
    print_skipped(skipped)


def print_family_table(table: list[PairRow]) -> None:
    header = ("algorithm", "input", "episode", "A vs B", "tasks", "A tasks/s", "B tasks/s")
    header += ("A/B", "A MiB", "B MiB")
    widths = (21, 22, 11, 17, 5, 14, 14, 6, 6, 6)
    print_rule(header, widths, 4)
    for r in table:
        cells = [r.pair.title, SHAPES[r.pair.a.shape].name, r.episode, r.pair.compared]
        cells += [str(r.tasks)]
        cells += [
            f"{rate:.3g} ({median:.3g})" for rate, median in zip(r.rates, r.medians, strict=True)
        ]
        cells += [f"{r.ratio:.2f}x", *(f"{mib:.0f}" for mib in r.peaks_mib)]
        print(table_line(cells, widths, 4))
    print()


def print_family_conclusions(table: list[PairRow]) -> None:
    for title in dict.fromkeys(r.pair.title for r in table):
        parts = []
        for r in (r for r in table if r.pair.title == title):
            shape = SHAPES[r.pair.a.shape].dataset
            a, b = r.peaks_mib
            if r.pair.compared == "batched vs loop":
                parts.append(
                    f"batched {r.ratio:.2f}x the loop's tasks/s on {shape} ({r.tasks} tasks), "
                    f"{a:.0f} vs {b:.0f} MiB peak"
                )
            else:
                parts.append(
                    f"checkpoint_steps costs {1 / r.ratio:.2f}x the time on {shape} "
                    f"({r.tasks} tasks), peak {a:.0f} instead of {b:.0f} MiB"
                )
        print(f"{title}: {'; '.join(parts)}")


def run_family(args: argparse.Namespace, device: torch.device, threads: int) -> None:
    algorithms, skipped = family_algorithms(args.algorithms, FAMILY)
    shapes = family_shapes(args.shapes or ",".join(SHAPES))
    pairs = family_pairs(algorithms, shapes, args.max_tasks, args.quick)
    rows = [case for pair in pairs for case in (pair.a, pair.b)]
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    method = memory_method(device)  # the method children will get
    print_family_header(device, threads, args.repeats, method, pairs, skipped, args.in_process)
    results = run_all(
        rows, run_family_case, __file__, device, args.repeats, threads, args.in_process
    )
    table = summarise_family(pairs, results)
    print_family_table(table)
    print_family_conclusions(table)
    print_footer(started, load_before, "--family --quick" if args.quick else "--family", threads)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv, __doc__, FAMILY, "all", full_repeats=3)
    device, threads = setup_hardware(args)
    if not run_child(args, decode_case, run_family_case, device):
        run_family(args, device, threads)


if __name__ == "__main__":
    main()
