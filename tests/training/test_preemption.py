"""Stop signals: SIGTERM/SIGUSR1 mid-training writes last.pt and exits; the resumed run ends
exactly as one never interrupted. SIGKILL at any moment leaves the last checkpoint loadable."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from cli_helpers import logged, metarun, start_metarun, wait_for_step

from metarun.training.checkpoint import load_checkpoint
from metarun.training.preemption import Preempted, StopSignals


def test_a_signal_is_recorded_instead_of_killing_and_handlers_come_back() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)  # only the first one counts
        assert stop.received == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) is before


def test_the_previous_python_handler_gets_the_signal_afterwards() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))
    try:
        with StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
        assert seen == []  # held back until the checkpoint is written
        stop.hand_over()
        assert seen == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_preempted_exits_like_the_signal() -> None:
    stopped = Preempted(signal.SIGTERM, 17)
    assert stopped.exit_code == 143 and str(stopped) == "stopped by SIGTERM at step 17"


LONG_ENOUGH = ("trainer.max_steps=120", "trainer.val_every=40", "trainer.log_every=1")


def stop_midway(signum: int, run_dir: Path, overrides: list[str], cwd: Path) -> int:
    """Start a run, signal it after step 5, check how it ended; returns the saved step."""
    job = start_metarun(*overrides, f"hydra.run.dir={run_dir}", cwd=cwd)
    wait_for_step(run_dir, 5)
    job.send_signal(signum)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 128 + signum, stderr
    assert f"metarun: stopped by {signal.Signals(signum).name} at step" in stderr
    assert f"continue with resume={run_dir}" in stderr
    step = load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"]
    assert 5 <= step < 120  # written at the signal, not at a validation
    assert not (run_dir / "summary.json").exists()
    return step


def test_sigusr1_stops_a_run_with_its_checkpoint(tmp_path, tiny_overrides) -> None:
    overrides = tiny_overrides("protonet", *LONG_ENOUGH)
    stop_midway(signal.SIGUSR1, tmp_path / "run", overrides, tmp_path)


def test_a_run_stopped_by_sigterm_resumes_to_the_same_metrics(tmp_path, tiny_overrides) -> None:
    overrides = tiny_overrides("protonet", *LONG_ENOUGH)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    stop_midway(signal.SIGTERM, stopped, overrides, tmp_path)

    resumed = metarun(*overrides, f"resume={stopped}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    straight_run = metarun(*overrides, f"hydra.run.dir={straight}", cwd=tmp_path)
    assert straight_run.returncode == 0, straight_run.stderr

    assert logged(stopped) == logged(straight)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (straight, stopped)]
    assert summaries[0]["test"] == summaries[1]["test"]
    assert summaries[0]["best_val"] == summaries[1]["best_val"]
    assert (stopped / "run_id").read_text() == f"{summaries[1]['wandb_run_id']}\n"


def test_sigkill_leaves_the_last_checkpoint_loadable(tmp_path, tiny_overrides) -> None:
    overrides = tiny_overrides("protonet", *LONG_ENOUGH, "trainer.val_every=2")
    run_dir = tmp_path / "killed"
    job = start_metarun(*overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    wait_for_step(run_dir, 9)  # checkpoints are being rewritten every other step
    job.kill()
    job.communicate(timeout=60)
    assert job.returncode == -signal.SIGKILL
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["step"] >= 8
    resumed = metarun(*overrides, f"resume={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 120
