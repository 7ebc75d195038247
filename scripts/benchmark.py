"""Meta-step throughput and memory of metarun's batched learners against per-task Python loops.

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

* ``--family``: every algorithm of the optimisation-based family (``--algorithms``, default
  ``maml,anil,metasgd,mamlpp,reptile,meta_lstm``), each built from its YAML as ``metarun``
  builds it (Hydra ``compose`` of the shipped configs with ``algorithm=<name> model=conv4``, then
  ``metarun.run.build``), so the rows measure the paper defaults a user runs. Two input shapes of
  random tensors, 5-way 1-shot: Omniglot (``dataset=omniglot``, 1x28x28) and miniImageNet
  (``dataset=mini_imagenet``, 3x84x84, ``model.hidden_channels=32``, MAML's miniImageNet width);
  the episode is what the learner trains on (``training_episodes`` of the data set's 5-way 1-shot
  15-query; MAML: one query per class). The meta-batch is the YAML's ``meta_batch_size``, capped
  at 32 tasks for Omniglot and 4 for miniImageNet (MAML's miniImageNet meta-batch) to keep the
  run short on a CPU (``--max-tasks`` changes the cap). Per algorithm and shape, two rows side by
  side:
  - ``batched``: ``learner.meta_loss(batch)`` and ``backward()``, the package's vmapped path.
  - ``loop``: the same learner one task at a time: for each task ``i``,
    ``meta_loss(batch[i:i+1])`` and ``backward()`` of that loss divided by the meta-batch size,
    gradients accumulated; what the learner would cost without batching over tasks.
  It needs nothing beyond the ``MetaLearner`` protocol, so a new member of the family is
  benchmarked as soon as its YAML exists; in the default list, names without a YAML yet are
  skipped (and listed), and a name given to ``--algorithms`` without one is a one-line error.
  With ``maml`` in the list, two more rows per shape give the cost of ``checkpoint_steps`` for
  second-order MAML with 5 inner steps (``algorithm.inner_steps=5``): batched, with and without
  checkpointing, time and peak memory.

Throughput is tasks (episodes) per second: meta-batch size over the seconds of the fastest timed
repeat, after one untimed warm-up step; the median repeat is shown beside it. The fastest repeat
is the one least disturbed by other processes, which matters on a shared machine (the load
average at start and end is printed for that reason); "vs loop" compares fastest repeats.

Memory: on CUDA, timings are bracketed by ``torch.cuda.synchronize()`` and memory is
``max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was allocated before the
warm-up. A CPU has no allocator counter, so each case runs in a fresh Python process and memory
is that process's peak resident set growth: Linux's ``VmHWM`` (reset through
``/proc/self/clear_refs`` just before the warm-up) minus ``VmRSS`` at that moment.
``getrusage().ru_maxrss`` is only a fallback, because a child process inherits its parent's
high-water mark across exec, which would hide the child's own peak.

Run from the repository root::

    python scripts/benchmark.py [--quick] [--repeats N] [--threads N] [--device auto|cpu|cuda]
    python scripts/benchmark.py --data [--no-caches]   # data loading (scripts/data_benchmark.py)
    python scripts/benchmark.py --family [--quick] [--algorithms maml,anil] [--shapes omniglot]
    python scripts/benchmark.py --learners [--quick] [--algorithms protonet,snail]

``--quick`` times only the headline cases (1-step second-order MAML, ProtoNet) with fewer
repeats, about a minute on 2 idle CPU cores. The family rows are a separate mode rather than
part of the default run: they answer another question (the whole family as configured, not one
implementation checked against a reference), and together the two would take too long on a CPU.
``--family`` times 3 repeats per case; each algorithm adds two child processes per shape and MAML
two more per shape for the checkpoint rows, so the whole family takes several minutes on 2 CPU
cores (``--family --algorithms maml`` alone: 13.5 min wall, 5.3 min CPU on one thread, with 5
repeats on 2 cores shared at load average 6-9). ``--quick`` (2 repeats, at most 8 tasks) or
``--shapes omniglot`` shortens it.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.func import functional_call

from metarun.algorithms import MAML, ProtoNet
from metarun.algorithms.base import ClassSupervised
from metarun.cli import CONFIG_DIR, options
from metarun.data.episodes import EpisodeBatch, EpisodeSpec
from metarun.data.task import TaskSpec
from metarun.errors import ConfigError
from metarun.hardware import Hardware, Runtime
from metarun.models import Conv4
from metarun.run import build

IMAGE_SHAPE = (1, 28, 28)
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
MIB = 1024 * 1024


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


# --- data and learners ---------------------------------------------------------------------------


def random_episodes(
    tasks: int,
    ways: int,
    shots: int,
    queries: int,
    device: str,
    image_shape: tuple[int, ...] = IMAGE_SHAPE,
    train_classes: int = 64,
) -> EpisodeBatch:
    """Random images (Omniglot-shaped unless told); labels laid out as
    ``EpisodeSampler.gather`` does, and random split classes for class-supervised learners."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(ways)
    batch = EpisodeBatch(
        support_x=torch.randn(tasks, ways * shots, *image_shape, generator=generator),
        support_y=labels.repeat_interleave(shots).expand(tasks, -1),
        query_x=torch.randn(tasks, ways * queries, *image_shape, generator=generator),
        query_y=labels.repeat_interleave(queries).expand(tasks, -1),
        ways=ways,
        classes=torch.randint(train_classes, (tasks, ways), generator=generator),
    )
    return batch.to(device)


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


def batched_step(learner: MAML | ProtoNet, batch: EpisodeBatch) -> None:
    """The package's own step: one ``meta_loss`` over the whole meta-batch."""
    loss, _ = learner.meta_loss(batch)
    loss.backward()


@torch.no_grad()
def predict_step(learner: nn.Module, batch: EpisodeBatch) -> None:
    """Evaluation as ``metarun`` scores test episodes: ``predict`` in eval mode, no graph."""
    learner.predict(batch)


def per_task_loop_step(learner: nn.Module, batch: EpisodeBatch) -> None:
    """Any learner one episode at a time (``meta_loss`` on a meta-batch of one), averaging the
    per-episode losses' gradients: the ProtoNet loop and every family row's loop."""
    for i in range(len(batch)):
        loss, _ = learner.meta_loss(batch.select(slice(i, i + 1)))
        (loss / len(batch)).backward()


def step_function(case: Case) -> Callable[[nn.Module, EpisodeBatch], None]:
    if case.variant == "loop":
        return maml_loop_step if case.algorithm == "maml" else per_task_loop_step
    return batched_step


# --- memory --------------------------------------------------------------------------------------


def proc_status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def ru_maxrss_bytes() -> int:
    """Peak RSS so far; ``ru_maxrss`` is KiB on Linux and bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class MemoryProbe:
    """Extra memory the measured work needs beyond what existed when the probe started."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = ""
        self._base = 0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "cuda max_memory_allocated"
            return
        rss = proc_status_kib("VmRSS")
        if rss is not None and self._reset_high_water_mark():
            self._base = rss * 1024
            self.method = "VmHWM after clear_refs - VmRSS"
        else:
            # Without a resettable high-water mark the delta only counts growth beyond the
            # process's earlier peak: a lower bound.
            self._base = ru_maxrss_bytes()
            self.method = "ru_maxrss growth (lower bound)"

    @staticmethod
    def _reset_high_water_mark() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
        except OSError:
            return False
        return True

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) - self._base
        if self.method.startswith("VmHWM"):
            return (proc_status_kib("VmHWM") or 0) * 1024 - self._base
        return ru_maxrss_bytes() - self._base


# --- running one case ----------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    step: Callable[[], None], learner: nn.Module, repeats: int, device: torch.device
) -> list[float]:
    """Seconds per meta-step for ``repeats`` steps after one warm-up; grads zeroed untimed."""
    seconds = []
    for i in range(repeats + 1):
        learner.zero_grad(set_to_none=True)
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        if i > 0:
            seconds.append(time.perf_counter() - start)
    return seconds


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


def release_freed_memory() -> None:
    """Give memory that earlier cases freed back to the OS (glibc's ``malloc_trim``), so that
    an in-process case has to fault its pages in again and its RSS growth is its own; without
    glibc, later cases may reuse freed memory unseen."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def run_any(case: Case | FamilyCase, device: torch.device, repeats: int) -> dict[str, object]:
    if isinstance(case, FamilyCase):
        return run_family_case(case, device, repeats)
    return run_case(case, device, repeats)


def encode_case(case: Case | FamilyCase) -> str:
    return json.dumps({"family": isinstance(case, FamilyCase), **asdict(case)})


def decode_case(text: str) -> Case | FamilyCase:
    fields = json.loads(text)
    if fields.pop("family"):
        return FamilyCase(**{**fields, "overrides": tuple(fields["overrides"])})
    return Case(**fields)


def run_case_in_child(
    case: Case | FamilyCase, device: torch.device, repeats: int, threads: int
) -> dict:
    """A fresh process per case, so its peak RSS belongs to that case alone."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.pt"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--device",
            str(device),
            "--repeats",
            str(repeats),
            "--threads",
            str(threads),
            "--child-case",
            encode_case(case),
            "--child-result",
            str(out),
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"case {case.group} / {case.label} failed:\n{done.stderr}")
        return torch.load(out, weights_only=True)


def run_all(
    rows: list[Case] | list[FamilyCase],
    device: torch.device,
    repeats: int,
    threads: int,
    in_process: bool = False,
) -> list[dict]:
    """CPU cases run in child processes (for RSS); CUDA cases in this one (allocator stats).
    ``in_process`` runs CPU cases here too: one torch import instead of one per case (the
    tests' setting), with RSS figures that depend on what earlier cases left allocated."""
    results = []
    for i, case in enumerate(rows, 1):
        start = time.perf_counter()
        if device.type == "cuda" or in_process:
            if device.type == "cpu":
                release_freed_memory()
            result = run_any(case, device, repeats)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            result = run_case_in_child(case, device, repeats, threads)
        elapsed = time.perf_counter() - start
        print(
            f"[{i}/{len(rows)}] {case.group}, {case.label}: {elapsed:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    return results


# --- report --------------------------------------------------------------------------------------


def max_abs_diff(a: list[Tensor] | Tensor, b: list[Tensor] | Tensor) -> float:
    if isinstance(a, Tensor):
        a, b = [a], [b]
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def shapes(batch: EpisodeBatch) -> str:
    fields = ("support_x", "support_y", "query_x", "query_y")
    return ", ".join(f"{f} {list(getattr(batch, f).shape)}" for f in fields)


def print_device(device: torch.device, threads: int) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(
        f"device: {device} ({name}); torch {torch.__version__}; python "
        f"{platform.python_version()}; threads {threads}"
    )


def print_memory_method(device: torch.device, memory_method: str, in_process: bool = False) -> None:
    if device.type == "cpu" and in_process:
        print(
            "--in-process: every case in this process, freed memory returned to the OS "
            "(malloc_trim) before each; memory figures are approximate"
        )
    elif device.type == "cuda":
        print(
            "memory: peak torch.cuda.max_memory_allocated during warm-up + repeats, minus what "
            "was allocated before (model, data), MiB; TF32 is on (hardware defaults), so fp32 "
            "diffs of ~1e-3 are expected"
        )
    elif memory_method.startswith("VmHWM"):
        print(
            "memory: peak RSS growth of a fresh process per case: VmHWM (reset via "
            "/proc/self/clear_refs just before the warm-up) minus VmRSS at that moment, MiB"
        )
    else:
        print(
            "memory: growth of ru_maxrss of a fresh process per case across warm-up + repeats, "
            "MiB; a lower bound, since the peak could not be reset"
        )


def print_header(device: torch.device, threads: int, repeats: int, memory_method: str) -> None:
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
    print_memory_method(device, memory_method)
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
            f"benchmark.py: {len(wrong)} row(s) disagree with the per-task loop in float64 "
            f"(more than {FP64_AGREEMENT:.0e} of the largest gradient entry): {'; '.join(wrong)}"
        )


def print_table(table: list[Row]) -> None:
    header = ("algorithm", "variant", "tasks/s", "median", "peak MiB", "vs loop", "fp32 |diff|")
    print("(vs loop: against the loop row of the same group and memory format)")
    header += ("fp64 |diff|",)
    widths = (max(26, *(len(r.case.group) for r in table)), 24, 8, 8, 9, 8, 11, 11)
    print(table_line(header, widths, 2))
    print(table_line(["-" * w for w in widths], widths, 2))
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


# --- the optimisation-based family (--family) ---------------------------------------------------

FAMILY = ("maml", "anil", "metasgd", "mamlpp", "reptile", "meta_lstm")
CHECKPOINT_ALGORITHM = "maml"  # the checkpoint rows: second-order, 5 inner steps
CHECKPOINT_OVERRIDES = ("algorithm.inner_steps=5", "algorithm.first_order=false")
QUICK_MAX_TASKS = 8


@dataclass(frozen=True)
class InputShape:
    """One input shape of the family rows: the data set whose episode settings apply, and the
    overrides that this shape (and nothing else) requires."""

    dataset: str  # a configs/dataset option: ways, shots, queries and image size
    image: tuple[int, int, int]
    overrides: tuple[str, ...]
    max_tasks: int  # meta-batch cap of a full run
    why: str
    train_classes: int  # the size of a class-supervised learner's pre-training head (Baseline)

    @property
    def name(self) -> str:
        return f"{self.dataset} {'x'.join(map(str, self.image))}"


SHAPES = {
    "omniglot": InputShape(
        "omniglot", (1, 28, 28), (), 32, "MAML's Omniglot meta-batch", 964 * 4
    ),  # background characters x 4 rotations
    "mini_imagenet": InputShape(
        "mini_imagenet",
        (3, 84, 84),
        ("model.hidden_channels=32",),  # Conv-4 with 32 filters, as MAML on miniImageNet
        4,
        "MAML's miniImageNet 1-shot meta-batch",
        64,
    ),
}


@dataclass(frozen=True)
class FamilyCase:
    """One learner built from its YAML, on one input shape, timed batched or per task."""

    algorithm: str  # a configs/algorithm option
    shape: str  # a key of SHAPES
    # "batched": one meta_loss over the meta-batch; "loop": one task at a time; "eval": predict
    # on a batch of evaluation episodes (--learners)
    variant: str
    overrides: tuple[str, ...] = ()  # beyond algorithm=<name>, the shape's and model=conv4
    max_tasks: int = 32

    @property
    def group(self) -> str:
        return " ".join((self.algorithm, *self.overrides))

    @property
    def label(self) -> str:
        return f"{SHAPES[self.shape].name}, {self.variant}"


@dataclass(frozen=True)
class Pair:
    """Two rows of the family table side by side; ratios are A over B."""

    title: str
    compared: str
    a: FamilyCase
    b: FamilyCase


def task_cap(full: int, max_tasks: int | None, quick: bool) -> int:
    """Episodes per timed call: ``--max-tasks`` if given, else a full run's, fewer if quick."""
    if max_tasks is not None:
        return max_tasks
    return min(full, QUICK_MAX_TASKS) if quick else full


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


def family_config(case: FamilyCase) -> DictConfig:
    """The config that ``metarun algorithm=<name> dataset=<shape> model=conv4 ...`` runs."""
    shape = SHAPES[case.shape]
    overrides = [
        f"algorithm={case.algorithm}",
        f"dataset={shape.dataset}",
        "model=conv4",
        *shape.overrides,
        *case.overrides,
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def build_family_learner(case: FamilyCase, device: str) -> tuple[nn.Module, EpisodeBatch]:
    """The learner as ``metarun.run`` builds and places it, and a meta-batch of random
    episodes shaped as it trains on them (``eval``: as the data set evaluates, a batch of
    ``eval.batch_size``)."""
    cfg = family_config(case)
    shape = SHAPES[case.shape]
    if cfg.dataset.image_size != shape.image[-1]:
        raise RuntimeError(f"dataset={shape.dataset} has image_size {cfg.dataset.image_size}")
    evaluation = EpisodeSpec(cfg.dataset.ways, cfg.dataset.shots, cfg.dataset.queries)
    torch.manual_seed(0)
    task = TaskSpec("classification", shape.image, evaluation.ways)
    learner = build(cfg, "algorithm", model=build(cfg, "model"), task=task)
    if isinstance(learner, ClassSupervised):
        learner.set_training_classes(shape.train_classes)
    Runtime(torch.device(device), None, channels_last="auto").place(learner)
    if case.variant == "eval":
        spec, tasks = evaluation, min(cfg.eval.batch_size, case.max_tasks)
    else:
        spec = learner.training_episodes(evaluation)
        tasks = min(learner.meta_batch_size, case.max_tasks)
    batch = random_episodes(
        tasks, spec.ways, spec.shots, spec.queries, device, shape.image, shape.train_classes
    )
    return learner.train(case.variant != "eval"), batch


def run_family_case(case: FamilyCase, device: torch.device, repeats: int) -> dict[str, object]:
    learner, batch = build_family_learner(case, str(device))
    step_fn = {"batched": batched_step, "loop": per_task_loop_step, "eval": predict_step}[
        case.variant
    ]
    probe = MemoryProbe(device)
    probe.start()
    seconds = time_steps(lambda: step_fn(learner, batch), learner, repeats, device)
    return {
        "seconds": seconds,
        "peak_bytes": probe.peak_bytes(),
        "memory_method": probe.method,
        "tasks": len(batch),
        "episode": [
            batch.ways,
            batch.support_x.shape[1] // batch.ways,
            batch.query_x.shape[1] // batch.ways,
        ],
    }


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
    if skipped:
        print(f"skipped, no configs/algorithm/<name>.yaml yet: {', '.join(skipped)}")
    print(flush=True)


def table_line(cells: tuple[str, ...] | list[str], widths: tuple[int, ...], text: int) -> str:
    """The first ``text`` columns left-aligned, the numbers after them right-aligned."""
    pairs = enumerate(zip(cells, widths, strict=True))
    return "  ".join(f"{c:<{w}}" if i < text else f"{c:>{w}}" for i, (c, w) in pairs)


def print_family_table(table: list[PairRow]) -> None:
    header = ("algorithm", "input", "episode", "A vs B", "tasks", "A tasks/s", "B tasks/s")
    header += ("A/B", "A MiB", "B MiB")
    widths = (21, 22, 11, 17, 5, 14, 14, 6, 6, 6)
    print(table_line(header, widths, 4))
    print(table_line(["-" * w for w in widths], widths, 4))
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


def family_algorithms(
    requested: str | None, default: tuple[str, ...] = FAMILY
) -> tuple[list[str], list[str]]:
    """The algorithms to run and those of the default list skipped for want of a YAML."""
    available = options("algorithm")
    if requested is None:
        return [a for a in default if a in available], [a for a in default if a not in available]
    names = [name.strip() for name in requested.split(",") if name.strip()]
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        sys.exit(
            f"benchmark.py: --algorithms: no configs/algorithm/<name>.yaml for "
            f"{', '.join(unknown) or 'an empty list'}; available: {', '.join(available)}"
        )
    return names, []


def family_shapes(requested: str) -> list[str]:
    names = [name.strip() for name in requested.split(",") if name.strip()]
    unknown = [name for name in names if name not in SHAPES]
    if unknown or not names:
        sys.exit(
            f"benchmark.py: --shapes: unknown {', '.join(unknown) or 'empty list'}; "
            f"valid: {', '.join(SHAPES)}"
        )
    return names


def run_family(args: argparse.Namespace, device: torch.device, threads: int) -> None:
    algorithms, skipped = family_algorithms(args.algorithms)
    shapes = family_shapes(args.shapes or ",".join(SHAPES))
    pairs = family_pairs(algorithms, shapes, args.max_tasks, args.quick)
    rows = [case for pair in pairs for case in (pair.a, pair.b)]
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    probe = MemoryProbe(device)  # only to learn which memory method children will get
    probe.start()
    print_family_header(
        device, threads, args.repeats, probe.method, pairs, skipped, args.in_process
    )
    results = run_all(rows, device, args.repeats, threads, args.in_process)
    table = summarise_family(pairs, results)
    print_family_table(table)
    print_family_conclusions(table)
    print_footer(started, load_before, "--family --quick" if args.quick else "--family", threads)


# --- every learner: training and evaluation throughput (--learners) ------------------------------

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
    print(table_line(header, widths, 3))
    print(table_line(["-" * w for w in widths], widths, 3))
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
    probe = MemoryProbe(device)
    probe.start()
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
    print_memory_method(device, probe.method, args.in_process)
    if skipped:
        print(f"skipped, no configs/algorithm/<name>.yaml yet: {', '.join(skipped)}")
    print(flush=True)
    results = run_all(cases, device, args.repeats, threads, args.in_process)
    print_learner_table(summarise_learners(cases, results))
    mode = "--learners --quick" if args.quick else "--learners"
    print_footer(started, load_before, mode, threads)


# --- entry point ---------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed steps per case (5; --family 3)"
    )
    parser.add_argument("--quick", action="store_true", help="headline cases, fewer repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--data", action="store_true", help="data loading instead: samplers and cache builds"
    )
    parser.add_argument("--no-caches", action="store_true", help="with --data: samplers only")
    parser.add_argument(
        "--family",
        action="store_true",
        help="the optimisation-based family from its YAML: batched vs per-task loop",
    )
    parser.add_argument(
        "--learners",
        action="store_true",
        help="every learner from its YAML: training and evaluation episodes/s and peak memory",
    )
    parser.add_argument(
        "--algorithms",
        default=None,
        help=f"with --family or --learners: configs/algorithm options, comma-separated "
        f"(--family: {','.join(FAMILY)}; --learners: {','.join(LEARNERS)})",
    )
    parser.add_argument(
        "--shapes",
        default=None,
        help=f"with --family (default: all) or --learners (default: omniglot): input shapes, "
        f"comma-separated, of {','.join(SHAPES)}",
    )
    parser.add_argument(
        "--max-tasks",
        type=int,
        default=None,
        help="with --family: tasks per meta-batch at most (default: 32 Omniglot, 4 miniImageNet)",
    )
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # tests
    parser.add_argument("--child-case", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3 if args.family else 5
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.max_tasks is not None and args.max_tasks < 1:
        parser.error("--max-tasks must be at least 1")
    family_only = args.algorithms is not None or args.max_tasks is not None
    family_only = family_only or args.shapes is not None
    if family_only and not (args.family or args.learners):
        parser.error("--algorithms, --shapes and --max-tasks need --family or --learners")
    if args.family + args.data + args.learners > 1:
        parser.error("--family, --learners and --data are separate runs; give one")
    return args


def main() -> None:
    args = parse_args()
    # The package's own hardware setup (threads, matmul precision, cudnn.benchmark), in fp32.
    try:
        runtime = Hardware(device=args.device, precision="fp32", threads=args.threads).setup()
    except ConfigError as error:  # e.g. --device cuda without a GPU: one line, not a traceback
        sys.exit(f"benchmark.py: --device/--threads: {error}")
    device = runtime.device
    threads = torch.get_num_threads()
    if args.data:
        import data_benchmark  # next to this file

        started = time.perf_counter()
        data_benchmark.run(device, args.repeats, workers=None, caches=not args.no_caches)
        print(f"\ntotal wall time {time.perf_counter() - started:.0f} s, {threads} threads")
        return
    if args.child_case is not None:
        case = decode_case(args.child_case)
        torch.save(run_any(case, device, args.repeats), args.child_result)
        return
    if args.family:
        run_family(args, device, threads)
        return
    if args.learners:
        run_learners(args, device, threads)
        return
    rows = cases(args.quick)
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    probe = MemoryProbe(device)  # only to learn which memory method children will get
    probe.start()
    print_header(device, threads, args.repeats, probe.method)
    results = run_all(rows, device, args.repeats, threads)
    table = summarise(rows, results)
    print_table(table)
    print_conclusions(table, rows, results)
    print_footer(started, load_before, "--quick" if args.quick else "full", threads)
    check_agreement(table)


def print_footer(started: float, load_before: float, mode: str, threads: int) -> None:
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s ({mode})")
    print(
        f"1-minute load average: {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end, on "
        f"{os.cpu_count()} logical CPUs (the benchmark itself adds about {threads})"
    )


if __name__ == "__main__":
    main()
