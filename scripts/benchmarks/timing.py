"""The core every benchmark here shares: timing, memory, a fresh process per case, the lines
that say where and how a run measured, and table formatting.

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

Not a benchmark itself: ``maml_protonet.py``, ``family.py``, ``learners.py`` and
``data_loading.py`` next to it are, each run as ``python scripts/benchmarks/<name>.py``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarun.data.episodes import EpisodeBatch
from metarun.errors import ConfigError
from metarun.hardware import Hardware

IMAGE_SHAPE = (1, 28, 28)
MIB = 1024 * 1024

RunOne = Callable[[Any, torch.device, int], dict]  # a case, the device, repeats: its result


def prog() -> str:
    """The command's name as argparse prints it, to start one-line errors the same way."""
    return os.path.basename(sys.argv[0])


# --- command line and hardware -------------------------------------------------------------------


def add_common_arguments(
    parser: argparse.ArgumentParser, repeats_help: str, children: bool = True
) -> None:
    """The options every benchmark takes, and (``children``) the hidden ones of a benchmark
    that runs its cases in child processes."""
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=None, help=repeats_help)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    if not children:
        return
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # tests
    parser.add_argument("--child-case", help=argparse.SUPPRESS)
    parser.add_argument("--child-result", help=argparse.SUPPRESS)


def default_repeats(parser: argparse.ArgumentParser, args: argparse.Namespace, full: int) -> None:
    """``--repeats``: 2 with ``--quick``, else ``full``; at least 1."""
    if args.repeats is None:
        args.repeats = 2 if args.quick else full
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")


def setup_hardware(args: argparse.Namespace) -> tuple[torch.device, int]:
    """The package's own hardware setup (threads, matmul precision, cudnn.benchmark), in fp32;
    the device and the threads torch then uses."""
    try:
        runtime = Hardware(device=args.device, precision="fp32", threads=args.threads).setup()
    except ConfigError as error:  # e.g. --device cuda without a GPU: one line, not a traceback
        sys.exit(f"{prog()}: --device/--threads: {error}")
    return runtime.device, torch.get_num_threads()


# --- data and the steps more than one benchmark times --------------------------------------------


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


def batched_step(learner: nn.Module, batch: EpisodeBatch) -> None:
    """The package's own step: one ``meta_loss`` over the whole meta-batch."""
    loss, _ = learner.meta_loss(batch)
    loss.backward()


def per_task_loop_step(learner: nn.Module, batch: EpisodeBatch) -> None:
    """Any learner one episode at a time (``meta_loss`` on a meta-batch of one), averaging the
    per-episode losses' gradients: the ProtoNet loop and every family row's loop."""
    for i in range(len(batch)):
        loss, _ = learner.meta_loss(batch.select(slice(i, i + 1)))
        (loss / len(batch)).backward()


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


def memory_method(device: torch.device) -> str:
    """The method a case's probe will use on ``device``, learnt by starting one here."""
    probe = MemoryProbe(device)
    probe.start()
    return probe.method


def release_freed_memory() -> None:
    """Give memory that earlier cases freed back to the OS (glibc's ``malloc_trim``), so that
    an in-process case has to fault its pages in again and its RSS growth is its own; without
    glibc, later cases may reuse freed memory unseen."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


# --- timing one case -----------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    step: Callable[[], object], learner: nn.Module | None, repeats: int, device: torch.device
) -> list[float]:
    """Seconds per step for ``repeats`` steps after one warm-up; the learner's grads (if one
    is given) zeroed untimed."""
    seconds = []
    for i in range(repeats + 1):
        if learner is not None:
            learner.zero_grad(set_to_none=True)
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        if i > 0:
            seconds.append(time.perf_counter() - start)
    return seconds


# --- a fresh process per case --------------------------------------------------------------------


def encode_case(case: Any) -> str:
    """A case (a dataclass of plain fields) as JSON, for the command line of a child."""
    return json.dumps(asdict(case))


def run_case_in_child(
    case: Any, script: str, device: torch.device, repeats: int, threads: int
) -> dict:
    """A fresh process of ``script`` (the benchmark's own module) per case, so its peak RSS
    belongs to that case alone."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.pt"
        command = [
            sys.executable,
            str(Path(script).resolve()),
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


def run_child(
    args: argparse.Namespace,
    decode: Callable[[str], Any],
    run_one: RunOne,
    device: torch.device,
) -> bool:
    """In a child process (``--child-case``): run that case, save its result, and say so."""
    if args.child_case is None:
        return False
    torch.save(run_one(decode(args.child_case), device, args.repeats), args.child_result)
    return True


def run_all(
    rows: list,
    run_one: RunOne,
    script: str,
    device: torch.device,
    repeats: int,
    threads: int,
    in_process: bool = False,
) -> list[dict]:
    """CPU cases run in child processes of ``script`` (for RSS); CUDA cases in this one
    (allocator stats). ``in_process`` runs CPU cases here too: one torch import instead of one
    per case (the tests' setting), with RSS figures that depend on what earlier cases left
    allocated."""
    results = []
    for i, case in enumerate(rows, 1):
        start = time.perf_counter()
        if device.type == "cuda" or in_process:
            if device.type == "cpu":
                release_freed_memory()
            result = run_one(case, device, repeats)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        else:
            result = run_case_in_child(case, script, device, repeats, threads)
        elapsed = time.perf_counter() - start
        print(
            f"[{i}/{len(rows)}] {case.group}, {case.label}: {elapsed:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    return results


# --- report lines --------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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


def print_footer(started: float, load_before: float, mode: str, threads: int) -> None:
    print(f"\ntotal wall time {time.perf_counter() - started:.0f} s ({mode})")
    print(
        f"1-minute load average: {load_before:.2f} at start, {os.getloadavg()[0]:.2f} at end, on "
        f"{os.cpu_count()} logical CPUs (the benchmark itself adds about {threads})"
    )


def table_line(cells: tuple[str, ...] | list[str], widths: tuple[int, ...], text: int) -> str:
    """The first ``text`` columns left-aligned, the numbers after them right-aligned."""
    pairs = enumerate(zip(cells, widths, strict=True))
    return "  ".join(f"{c:<{w}}" if i < text else f"{c:>{w}}" for i, (c, w) in pairs)


def print_rule(header: tuple[str, ...], widths: tuple[int, ...], text: int) -> None:
    """A table's header line and the dashes under it."""
    print(table_line(header, widths, text))
    print(table_line(["-" * w for w in widths], widths, text))
