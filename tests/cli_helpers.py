"""Running the installed ``metarun`` command in tests (from a scratch directory, never online,
never touching the user's W&B credentials or data cache) and reading what it logged."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from metarun.tracking.metrics_file import read_metrics

BIN = Path(sys.executable).parent
METARUN = str(BIN / "metarun")


def metarun_env(cwd: Path, cache: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "NETRC": str(cwd / "no-netrc"), "COLUMNS": "200"}
    env.pop("WANDB_API_KEY", None)
    if cache is not None:
        env["METARUN_CACHE_DIR"] = str(cache)
    return env


def metarun(*args: str, cwd: Path, cache: Path | None = None) -> subprocess.CompletedProcess:
    return command("metarun", *args, cwd=cwd, cache=cache)


def command(
    name: str, *args: str, cwd: Path, cache: Path | None = None
) -> subprocess.CompletedProcess:
    """An installed console script (``metarun``, ``metarun-report``), without a terminal."""
    return subprocess.run(
        [str(BIN / name), *args],
        cwd=cwd,
        env=metarun_env(cwd, cache),
        capture_output=True,
        text=True,
        timeout=600,
    )


def start_metarun(*args: str, cwd: Path) -> subprocess.Popen:
    """``metarun`` in the background, for tests that signal it mid-run."""
    return subprocess.Popen(
        [METARUN, *args],
        cwd=cwd,
        env=metarun_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The single ``metarun: error: ...`` line a bad input must produce, with exit status 2."""
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("metarun: error: ")
    assert "Traceback" not in done.stdout
    return lines[0]


def wait_for_step(
    where: Path,
    step: int,
    job: subprocess.Popen | None = None,
    pattern: str = "metrics.jsonl",
    timeout: float = 180.0,
) -> Path:
    """Wait until a ``metrics.jsonl`` under ``where`` (``pattern``, a glob) has logged ``step``
    while ``job`` still runs; returns that file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (job is None or job.poll() is None):
        for metrics in where.glob(pattern):
            if any(r["step"] >= step for r in read_metrics(metrics)):
                return metrics
        time.sleep(0.02)
    raise AssertionError(f"no {pattern} under {where} reached step {step}")


def logged(run_dir: Path) -> list[dict]:
    """Everything a run logged except wall-clock measurements."""
    return [
        {k: v for k, v in record.items() if not k.startswith("perf/")}
        for record in read_metrics(run_dir / "metrics.jsonl")
    ]


# A few steps of 3-way episodes with a narrow Conv-4: every stage of a run (data,
# meta-training, validation, checkpoints, test) executes in seconds on two cores.
TINY_SETTINGS = (
    "logger=none",
    "dataset.ways=3",
    "dataset.queries=2",
    "model.hidden_channels=8",
    "trainer.max_steps=4",
    "trainer.val_every=2",
    "trainer.log_every=1",
    "eval.val_episodes=4",
    "eval.test_episodes=6",
    "eval.batch_size=4",
)
TINY_ALGORITHM = {
    "maml": ("algorithm=maml", "algorithm.meta_batch_size=2"),
    "protonet": ("algorithm=protonet", "algorithm.train_ways=5", "algorithm.train_queries=2"),
    "metagan": (
        "algorithm=metagan",
        "algorithm.meta_batch_size=2",
        "algorithm.noise_size=8",
        "algorithm.generator_channels=8",
    ),
    "metagan_protonet": (
        "algorithm=metagan",
        "algorithm.host=protonet",
        "algorithm.meta_batch_size=1",
        "algorithm.protonet.train_ways=5",
        "algorithm.protonet.train_queries=2",
        "algorithm.noise_size=8",
        "algorithm.generator_channels=8",
    ),
}


# RL² on bandits, small: a GRU of 8 units, 8 trials per meta-step, seconds per run.
TINY_RL2 = (
    "algorithm=rl2",
    "dataset=bandit",
    "logger=none",
    "hardware=cpu",
    "algorithm.hidden_size=8",
    "algorithm.meta_batch_size=8",
    "algorithm.minibatches=2",
    "trainer.val_every=2",
    "trainer.log_every=1",
    "eval.val_episodes=16",
)
