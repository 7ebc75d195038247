"""Meta-step throughput and memory of metarun's MAML and ProtoNet against per-task Python loops,
with a check that both compute the same meta-gradient.

What is measured, one row per case, each row one "meta-step": ``meta_loss`` (or the loop) plus
``backward()``, gradients zeroed outside the timer, no optimiser step, fp32, no autocast.

* MAML, 5-way 1-shot Omniglot-shaped tasks (support and query ``[32, 5, 1, 28, 28]``, one query
  per class as MAML trains), meta-batch 32, 1 and 5 inner steps, second order (and first order),
  on two networks: ``strided``, the authors' Omniglot Conv-4 (``cbfinn/maml``: stride-2
  convolutions, the 2x2 map averaged, BatchNorm offsets meta-learned outside the inner loop;
  what ``metarun algorithm=maml dataset=omniglot`` trains), and ``maxpool``, Conv-4 with 2x2
  max-pools (about 3.7x its multiply-adds per image):
  - ``loop``: the learn2learn-style baseline. For each task in a Python loop, adapt with
    ``torch.autograd.grad(create_graph=not first_order)`` and ``functional_call``, then
    ``backward()`` the query loss divided by the meta-batch size. It runs on ``maml.model``, the
    very network (with ``BatchStatsNorm``) that the package's MAML uses, and adapts the same
    weights (``maml.inner_parameters()``).
  - ``vmap``: ``MAML.meta_loss(batch)`` and ``backward()``, the package implementation, with
    ``chunk_size`` None and a few chunk sizes, and once with the learner in channels-last
    memory format (``hardware.channels_last: auto`` keeps MAML contiguous; this row shows why).
  "fp32 |diff|" is the largest absolute difference between the row's meta-gradient and the
  loop's. Rounding differences between two correct fp32 implementations grow through the inner
  steps, so "fp64 |diff|" repeats the comparison in float64 on a few tasks, and a row whose
  fp64 |diff| exceeds ``FP64_AGREEMENT`` (1e-9) of the largest gradient entry is an error: the
  script prints the table, names the rows and exits with status 1.
* ProtoNet, 20-way 1-shot, 5 queries per class, Conv-4 embedding, 8 episodes:
  ``ProtoNet.meta_loss`` on the whole meta-batch (one encoder call per episode, so BatchNorm
  normalises each episode with its own statistics, and one backward) against calling it on each
  episode in a loop and averaging, each in both memory formats (the package's default for
  ProtoNet is channels-last). "fp32 |diff|" compares ``predict`` logits in eval mode; "fp64
  |diff|" the train-mode meta-gradient in float64 (the two compute the same one).

Throughput (tasks/s of the fastest repeat) and memory (a fresh process per case on a CPU) are
measured as ``timing.py`` says.

Run from the repository root::

    python scripts/benchmarks/maml_protonet.py [--quick] [--repeats N] [--threads N] \
        [--device auto|cpu|cuda]

``--quick`` times only the headline cases (1-step second-order MAML, ProtoNet) with fewer
repeats, about a minute on 2 idle CPU cores. The optimisation-based family as configured is
``family.py``, every learner's training and evaluation speed ``learners.py``, data loading
``data_loading.py``, all next to this file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from timing import (
    IMAGE_SHAPE,
    MIB,
    MemoryProbe,
    add_common_arguments,
    batched_step,
    default_repeats,
    memory_method,
    per_task_loop_step,
    print_device,
    print_footer,
    print_memory_method,
    print_rule,
    prog,
    random_episodes,
    run_all,
    run_child,
    setup_hardware,
    table_line,
    time_steps,
)
from torch import Tensor, nn
from torch.func import functional_call

from metarun.algorithms import MAML, ProtoNet
from metarun.data.episodes import EpisodeBatch
from metarun.data.task import TaskSpec
from metarun.hardware import Runtime
from metarun.models import Conv4

MAML_WAYS, MAML_SHOTS, MAML_QUERIES, MAML_TASKS = 5, 1, 1, 32
PROTO_WAYS, PROTO_SHOTS, PROTO_QUERIES, PROTO_EPISODES = 20, 1, 5, 8
CHUNK_SIZES = (4, 8, 16)
# MAML's own Omniglot network (configs/network/maml_omniglot_conv4.yaml; metarun/models/conv4.py)
AUTHORS_OMNIGLOT_NETWORK = {
    "downsample": "stride",
    "readout": "mean",
    "norm_scale": False,
    "norm_eps": 1e-3,
    "init": "glorot",
    "head_init": "normal",
}
FP64_TASKS = 8  # tasks in the float64 re-run of each MAML case (see ``float64_gradients``)
# Two correct implementations of one meta-gradient differ in float64 by reduction order only:
# about 1e-15 of the largest gradient entry. Beyond this share of it, they disagree.
FP64_AGREEMENT = 1e-9


@dataclass(frozen=True)
class Case:
    """One row of the table; plain fields so it can travel to a child process as JSON."""

    algorithm: str  # "maml" or "protonet"
    variant: str  # "loop", "vmap" (MAML) or "batched" (ProtoNet)
    inner_steps: int = 1
    first_order: bool = False
    chunk_size: int | None = None
    channels_last: bool | None = None  # None: the package default (``hardware.channels_last``)
    network: str = "strided"  # MAML: "strided" (the authors' Omniglot network) or "maxpool"

    @property
    def group(self) -> str:
        """Rows in one group are compared with the group's loop row."""
        if self.algorithm == "protonet":
            return f"ProtoNet {PROTO_WAYS}-way {PROTO_SHOTS}-shot"
        order = "first-order" if self.first_order else "second-order"
        return f"MAML {self.network} {self.inner_steps}-step {order}"

    @property
    def label(self) -> str:
        parts = [self.variant]
        if self.chunk_size is not None:
            parts.append(f"chunk={self.chunk_size}")
        if self.channels_last is not None:
            parts.append("channels_last" if self.channels_last else "contiguous")
        return " ".join(parts)

    @property
    def tasks(self) -> int:
        return MAML_TASKS if self.algorithm == "maml" else PROTO_EPISODES


def cases(quick: bool) -> list[Case]:
    """The loop row of each group comes first, so every other row has its reference."""
    if quick:  # the paper's Omniglot training settings of both algorithms
        return [
            Case("maml", "loop"),
            Case("maml", "vmap"),
            Case("maml", "loop", network="maxpool"),
            Case("maml", "vmap", network="maxpool"),
            Case("protonet", "loop"),
            Case("protonet", "batched"),
        ]
    rows: list[Case] = []
    for steps in (1, 5):
        rows += [Case("maml", "loop", steps), Case("maml", "vmap", steps)]
        rows += [Case("maml", "vmap", steps, chunk_size=c) for c in CHUNK_SIZES]
        rows.append(Case("maml", "vmap", steps, channels_last=True))
    for steps in (1, 5):
        rows += [Case("maml", v, steps, first_order=True) for v in ("loop", "vmap")]
    for steps, first_order in ((1, False), (5, False), (1, True), (5, True)):
        rows += [Case("maml", v, steps, first_order, network="maxpool") for v in ("loop", "vmap")]
    rows += [
        Case("protonet", "loop"),
        Case("protonet", "loop", channels_last=True),
        Case("protonet", "batched"),
        Case("protonet", "batched", channels_last=False),
    ]
    return rows


def maml_episodes(device: str) -> EpisodeBatch:
    return random_episodes(MAML_TASKS, MAML_WAYS, MAML_SHOTS, MAML_QUERIES, device)


def proto_episodes(device: str) -> EpisodeBatch:
    return random_episodes(PROTO_EPISODES, PROTO_WAYS, PROTO_SHOTS, PROTO_QUERIES, device)


def build_learner(case: Case, device: str) -> nn.Module:
    """Same seed for every case, so every row of a group starts from identical weights."""
    torch.manual_seed(0)
    if case.algorithm == "maml":
        task = TaskSpec("classification", IMAGE_SHAPE, MAML_WAYS)
        strided = case.network == "strided"
        learner: nn.Module = MAML(
            partial(Conv4, **(AUTHORS_OMNIGLOT_NETWORK if strided else {})),
            task,
            adapt_norm=not strided,  # the authors' code adapts no BatchNorm weights
            inner_steps=case.inner_steps,
            first_order=case.first_order,
            meta_batch_size=MAML_TASKS,
            chunk_size=case.chunk_size,
        )
    else:
        task = TaskSpec("classification", IMAGE_SHAPE, PROTO_WAYS)
        learner = ProtoNet(Conv4, task, meta_batch_size=PROTO_EPISODES)
    # The package places learners with Runtime.place: each in its fastest memory format unless
    # hardware.channels_last forces one. Loops are plain PyTorch: contiguous unless asked.
    default = "auto" if case.variant != "loop" else False
    chosen = default if case.channels_last is None else case.channels_last
    Runtime(torch.device(device), None, channels_last=chosen).place(learner)
    return learner.train()


# --- the meta-steps being timed ------------------------------------------------------------------


def maml_loop_step(maml: MAML, batch: EpisodeBatch) -> None:
    """learn2learn-style MAML: one task at a time, gradients accumulated by ``backward()``;
    it adapts the weights the learner's inner loop adapts (all but BatchNorm's for the authors'
    network), the others used as they are."""
    params = maml.inner_parameters()
    tasks = len(batch)
    for t in range(tasks):
        fast = params
        for _ in range(maml.inner_steps):
            logits = functional_call(maml.model, fast, (batch.support_x[t],))
            loss = maml.task.loss(logits, batch.support_y[t])
            grads = torch.autograd.grad(
                loss, list(fast.values()), create_graph=not maml.first_order
            )
            steps = zip(fast.items(), grads, strict=True)
            fast = {name: p - maml.inner_lr * g for (name, p), g in steps}
        logits = functional_call(maml.model, fast, (batch.query_x[t],))
        (maml.task.loss(logits, batch.query_y[t]) / tasks).backward()


def step_function(case: Case) -> Callable[[nn.Module, EpisodeBatch], None]:
    if case.variant == "loop":
        return maml_loop_step if case.algorithm == "maml" else per_task_loop_step
    return batched_step


def gradients(learner: nn.Module) -> list[Tensor]:
    """Copies on the CPU, in parameter order, which is the same for every row of a group."""
    return [p.grad.detach().cpu().clone() for p in learner.parameters() if p.grad is not None]


def float64_gradients(
    learner: nn.Module, batch: EpisodeBatch, step_fn: Callable[[nn.Module, EpisodeBatch], None]
) -> list[Tensor]:
    """The meta-gradient again in float64 on the first tasks. In fp32, rounding differences
    between two correct implementations grow through every inner step; in fp64 what remains
    is the difference between the implementations themselves."""
    learner.double()
    head = slice(0, FP64_TASKS)
    batch = EpisodeBatch(
        batch.support_x[head].double(),
        batch.support_y[head],
        batch.query_x[head].double(),
        batch.query_y[head],
        batch.ways,
    )
    learner.zero_grad(set_to_none=True)
    step_fn(learner, batch)
    grads = gradients(learner)
    learner.float()
    return grads


@torch.no_grad()
def proto_eval_logits(protonet: ProtoNet, batch: EpisodeBatch, per_episode: bool) -> Tensor:
    """Eval-mode logits, where BatchNorm uses running statistics and so cannot depend on how
    episodes are grouped into batches; running statistics are first set by one train-mode pass
    that is identical for every variant."""
    protonet.train()
    protonet.encoder(torch.cat([batch.support_x, batch.query_x], dim=1).flatten(0, 1))
    protonet.eval()
    if per_episode:
        logits = torch.cat(
            [protonet.predict(batch.select(slice(i, i + 1))) for i in range(len(batch))]
        )
    else:
        logits = protonet.predict(batch)
    protonet.train()
    return logits.float().cpu()


def run_case(case: Case, device: torch.device, repeats: int) -> dict[str, object]:
    """Time one case, measure its memory, and keep what the equality checks need."""
    learner = build_learner(case, str(device))
    batch = maml_episodes(str(device)) if case.algorithm == "maml" else proto_episodes(str(device))
    initial_state = {k: v.clone() for k, v in learner.state_dict().items()}  # for ProtoNet eval
    step_fn = step_function(case)
    probe = MemoryProbe(device)
    probe.start()
    seconds = time_steps(lambda: step_fn(learner, batch), learner, repeats, device)
    peak = probe.peak_bytes()
    result: dict[str, object] = {
        "seconds": seconds,
        "peak_bytes": peak,
        "memory_method": probe.method,
        "grads": gradients(learner),
    }
    result["grads64"] = float64_gradients(learner, batch, step_fn)
    if case.algorithm == "protonet":
        learner.load_state_dict(initial_state)
        result["eval_logits"] = proto_eval_logits(learner, batch, case.variant == "loop")
    return result


# --- report --------------------------------------------------------------------------------------


def max_abs_diff(a: list[Tensor] | Tensor, b: list[Tensor] | Tensor) -> float:
    if isinstance(a, Tensor):
        a, b = [a], [b]
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def shapes(batch: EpisodeBatch) -> str:
    fields = ("support_x", "support_y", "query_x", "query_y")
    return ", ".join(f"{f} {list(getattr(batch, f).shape)}" for f in fields)


def print_header(
    device: torch.device, threads: int, repeats: int, memory_method: str, in_process: bool
) -> None:
    print("metarun meta-step benchmark: per-task Python loops vs the package's batched learners")
    print_device(device, threads)
    print(
        f"MAML: {MAML_WAYS}-way {MAML_SHOTS}-shot {MAML_QUERIES}-query, meta-batch "
        f"{MAML_TASKS}, inner_lr 2.0 (on the mean loss): {shapes(maml_episodes('cpu'))}"
    )
    print(
        "MAML networks: strided = the authors' Omniglot Conv-4 (stride-2 convolutions, spatial "
        "mean, BatchNorm offsets outside the inner loop); maxpool = Conv-4 with 2x2 max-pools"
    )
    print(
        f"ProtoNet: {PROTO_WAYS}-way {PROTO_SHOTS}-shot {PROTO_QUERIES}-query, meta-batch "
        f"{PROTO_EPISODES}, Conv-4 embedding: {shapes(proto_episodes('cpu'))}"
    )
    print(
        f"meta-step: loss + backward(), fp32, no autocast, no optimiser step; 1 warm-up, then "
        f"{repeats} timed repeats"
    )
    print(
        "tasks/s: meta-batch / seconds of the fastest repeat (median: of the median repeat), "
        "ProtoNet counts episodes; vs loop: ratio of tasks/s to the group's loop row"
    )
    print_memory_method(device, memory_method, in_process)
    print(
        "fp32 |diff|: max abs difference from the loop row: MAML the meta-gradient of the timed "
        "step, ProtoNet eval-mode predict() logits"
    )
    print(
        f"fp64 |diff|: the meta-gradient recomputed in float64 on the first {FP64_TASKS} tasks "
        f"(fp32 rounding grows with MAML's inner steps and through BatchNorm; in fp64 a row "
        f"beyond {FP64_AGREEMENT:.0e} of the largest gradient entry is an error)"
    )
    print(flush=True)


@dataclass
class Row:
    case: Case
    rate: float
    median: float
    peak_mib: float
    ratio: float
    diff: float
    diff64: float | None
    scale64: float = 1.0  # the largest |entry| of the loop row's float64 meta-gradient


def channels_last_in_effect(case: Case) -> bool:
    """The memory format a row actually ran in (see ``build_learner``)."""
    if case.channels_last is not None:
        return case.channels_last
    if case.variant == "loop":
        return False
    return build_learner(case, "cpu").memory_format == torch.channels_last


def summarise(rows: list[Case], results: list[dict]) -> list[Row]:
    """Each row against the loop row of its group that ran in the same memory format, so a
    ratio measures batching, not layout (falling back to the group's first loop row)."""
    references: dict[tuple[str, bool], tuple[float, dict]] = {}
    table = []
    for case, result in zip(rows, results, strict=True):
        seconds = result["seconds"]
        rate, median = case.tasks / min(seconds), case.tasks / statistics.median(seconds)
        layout = channels_last_in_effect(case)
        if case.variant == "loop":
            references[(case.group, layout)] = (rate, result)
        first_loop = next(v for (g, _), v in references.items() if g == case.group)
        loop_rate, loop_result = references.get((case.group, layout), first_loop)
        key = "eval_logits" if case.algorithm == "protonet" else "grads"
        diff = max_abs_diff(result[key], loop_result[key])
        diff64 = max_abs_diff(result["grads64"], loop_result["grads64"])
        scale64 = max(float(g.abs().max()) for g in loop_result["grads64"])
        peak_mib = result["peak_bytes"] / MIB
        table.append(Row(case, rate, median, peak_mib, rate / loop_rate, diff, diff64, scale64))
    return table


def disagreements(table: list[Row]) -> list[str]:
    """The rows whose float64 meta-gradient is not their loop row's (beyond reduction order)."""
    return [
        f"{r.case.group} / {r.case.label}: fp64 |diff| {r.diff64:.1e} of largest |grad| "
        f"{r.scale64:.1e}"
        for r in table
        if r.diff64 is not None and r.diff64 > FP64_AGREEMENT * r.scale64
    ]


def check_agreement(table: list[Row]) -> None:
    """Exit with status 1, naming the rows, if any row computes another meta-gradient than
    the per-task loop: a fast wrong implementation is not a result."""
    wrong = disagreements(table)
    if wrong:
        sys.exit(
            f"{prog()}: {len(wrong)} row(s) disagree with the per-task loop in float64 "
            f"(more than {FP64_AGREEMENT:.0e} of the largest gradient entry): {'; '.join(wrong)}"
        )


def print_table(table: list[Row]) -> None:
    header = ("algorithm", "variant", "tasks/s", "median", "peak MiB", "vs loop", "fp32 |diff|")
    print("(vs loop: against the loop row of the same group and memory format)")
    header += ("fp64 |diff|",)
    widths = (max(26, *(len(r.case.group) for r in table)), 24, 8, 8, 9, 8, 11, 11)
    print_rule(header, widths, 2)
    for r in table:
        print(
            table_line(
                (
                    r.case.group,
                    r.case.label,
                    f"{r.rate:.1f}",
                    f"{r.median:.1f}",
                    f"{r.peak_mib:.0f}",
                    f"{r.ratio:.2f}x",
                    f"{r.diff:.1e}",
                    "n/a" if r.diff64 is None else f"{r.diff64:.1e}",
                ),
                widths,
                2,
            )
        )
    print()


def print_conclusions(table: list[Row], rows: list[Case], results: list[dict]) -> None:
    groups = dict.fromkeys(r.case.group for r in table)
    for group in groups:
        members = [r for r in table if r.case.group == group]
        loop = next(r for r in members if r.case.variant == "loop")
        plain = next(
            r for r in members if r.case.variant != "loop" and r.case.label in ("vmap", "batched")
        )
        fastest = max((r for r in members if r.case.variant != "loop"), key=lambda r: r.rate)
        name = "vmap" if plain.case.variant == "vmap" else "batched"
        text = (
            f"{group}: {name} {plain.ratio:.2f}x the loop's throughput, "
            f"{plain.peak_mib:.0f} vs {loop.peak_mib:.0f} MiB peak; "
            f"max fp32 |diff| {max(r.diff for r in members):.1e}"
        )
        if loop.diff64 is not None:
            scale = max(float(g.abs().max()) for g in results[rows.index(loop.case)]["grads"])
            diff64 = max(r.diff64 or 0.0 for r in members)
            text += f" (largest |grad| {scale:.2g}), max fp64 |diff| {diff64:.1e}"
        if fastest is not plain:
            text += f"; fastest: {fastest.case.label} {fastest.ratio:.2f}x"
        print(text)


def decode_case(text: str) -> Case:
    """A case from its JSON (``timing.encode_case``), as a child process receives it."""
    return Case(**json.loads(text))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_common_arguments(parser, "timed steps per case (5; --quick 2)")
    parser.add_argument("--quick", action="store_true", help="headline cases, fewer repeats")
    args = parser.parse_args(argv)
    default_repeats(parser, args, 5)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device, threads = setup_hardware(args)
    if run_child(args, decode_case, run_case, device):
        return
    rows = cases(args.quick)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    method = memory_method(device)  # the method children will get
    print_header(device, threads, args.repeats, method, args.in_process)
    results = run_all(rows, run_case, __file__, device, args.repeats, threads, args.in_process)
    table = summarise(rows, results)
    print_table(table)
    print_conclusions(table, rows, results)
    print_footer(started, load_before, "--quick" if args.quick else "full", threads)
    check_agreement(table)


if __name__ == "__main__":
    main()
