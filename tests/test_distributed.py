"""``hardware=ddp`` under torchrun: two CPU processes (gloo) train exactly what one process
trains with the same global meta-batch, in one run directory that only rank 0 writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import METARUN, metarun_env, wait_for_step
from distributed_learners import case_name, train
from every_learner import CASES

from metarun.hardware import Hardware
from metarun.run import RunContext, run
from metarun.tracking.metrics_file import read_metrics
from metarun.training.checkpoint import load_checkpoint

HERE = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def launch(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**metarun_env(cwd), "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def tiny_run(tiny_overrides, algorithm: str, *extra: str) -> list[str]:
    # One thread everywhere: CPU kernels round differently with other thread counts, and on
    # this tiny network BatchNorm over a few near-constant features amplifies that rounding
    # (the loss after 3 steps moves by ~1% between 1 and 2 threads in one process).
    return tiny_overrides(algorithm, "algorithm.meta_batch_size=4", "hardware.threads=1", *extra)


def torchrun_metarun(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    return launch([*TORCHRUN, "--no-python", METARUN, *overrides, "hardware=ddp"], cwd)


def single_process(compose_config, overrides: list[str], run_dir: Path) -> Path:
    """The reference: the same overrides in one process (in this one, to save a start-up)."""
    threads = torch.get_num_threads()
    try:
        run(compose_config([*overrides, "hardware=cpu"]), RunContext(run_dir, "single"))
    finally:
        torch.set_num_threads(threads)  # hardware.threads=1 set it for this whole process
    return run_dir


def the_run_dir(cwd: Path) -> Path:
    (run_dir,) = (cwd / "outputs" / "runs").iterdir()  # exactly one directory
    return run_dir


def trained(run_dir: Path) -> list[dict]:
    """Training and validation records, without wall-clock rates or test lines."""
    return [
        {k: v for k, v in record.items() if not k.startswith("perf/")}
        for record in read_metrics(run_dir / "metrics.jsonl")
        if not any(k.startswith("test/") for k in record)
    ]


def assert_same_results(distributed: Path, single: Path) -> None:
    got, expected = trained(distributed), trained(single)
    assert [sorted(r) for r in got] == [sorted(r) for r in expected]
    for mine, theirs in zip(got, expected, strict=True):
        # Equal up to float reduction order (sums over 2 processes vs over one meta-batch).
        assert mine == pytest.approx(theirs, rel=1e-5, abs=1e-5), mine["step"]
    mine, theirs = (json.loads((d / "summary.json").read_text()) for d in (distributed, single))
    for part in ("test", "best_val"):
        assert mine[part].pop("metric") == theirs[part].pop("metric")
        assert mine[part].pop("unit", None) == theirs[part].pop("unit", None)
        assert mine[part] == pytest.approx(theirs[part], rel=1e-6)
    assert mine["processes"] == 2 and theirs["processes"] == 1


def assert_same_learner(distributed: Path, single: Path) -> None:
    """Parameters and BatchNorm running statistics (averaged over the ranks after every step)."""
    mine, theirs = (
        load_checkpoint(d / "checkpoints" / "last.pt")["learner"] for d in (distributed, single)
    )
    assert mine.keys() == theirs.keys()
    for name, value in theirs.items():
        torch.testing.assert_close(mine[name], value, rtol=1e-4, atol=1e-4, msg=name)


def assert_written_once(cwd: Path, run_dir: Path, out: str) -> None:
    """One run dir, one .hydra, one log, checkpoints only in it; one final line on stdout."""
    assert sorted(p.relative_to(cwd) for p in cwd.rglob("*.pt")) == [
        run_dir.relative_to(cwd) / "checkpoints" / name for name in ("best.pt", "last.pt")
    ]
    assert [p.parent for p in cwd.rglob(".hydra")] == [run_dir]
    assert [p.parent for p in cwd.rglob("*.log")] == [run_dir]
    assert (run_dir / "metarun.log").read_text().count("test acc") == 1
    assert out.count("test acc") == 1 and out.count("step 2/") == 1


def test_two_processes_train_maml_as_one_across_a_resume(
    tmp_path, tiny_overrides, compose_config
) -> None:
    """MAML through the command line, stopped after 2 of 4 steps and resumed from rank 0's
    checkpoint by both ranks; rank 0 alone writes. (Every learner's training under two
    processes: ``test_two_processes_train_every_learner_and_backbone_as_one``.) SGD, because
    Adam turns float noise into full-size steps for parameters whose true gradient is zero (the
    conv biases before BatchNorm), so the parameters of two correct runs would differ there."""
    overrides = tiny_run(
        tiny_overrides, "maml", "optimizer=sgd", "optimizer.lr=0.05", "scheduler=null"
    )  # no cosine decay: its length would change with the resume's max_steps
    first = torchrun_metarun(*overrides, "trainer.max_steps=2", cwd=tmp_path / "ddp")
    assert first.returncode == 0, first.stdout + first.stderr
    run_dir = the_run_dir(tmp_path / "ddp")
    assert_written_once(tmp_path / "ddp", run_dir, first.stdout)
    longer = torchrun_metarun(f"resume={run_dir}", "trainer.max_steps=4", cwd=tmp_path / "ddp")
    assert longer.returncode == 0, longer.stdout + longer.stderr
    assert "resuming with changed settings: trainer.max_steps 2 -> 4" in longer.stdout
    assert the_run_dir(tmp_path / "ddp") == run_dir
    single = single_process(compose_config, overrides, tmp_path / "single")
    assert_same_results(run_dir, single)
    assert_same_learner(run_dir, single)


@pytest.mark.parametrize("algorithm", ["metagan", "metagan_protonet"])
def test_two_processes_train_metagan_as_one(
    algorithm, tmp_path, tiny_overrides, compose_config
) -> None:
    """Two optimisers (discriminator, generator), each phase's gradients averaged across the
    ranks: the command line's run under two processes is the one-process run, with both
    groups' optimiser states in its checkpoint. SGD for both groups, as above."""
    sgd = ("optimizer=sgd", "optimizer.lr=0.05", "scheduler=null")
    overrides = tiny_run(
        tiny_overrides,
        algorithm,
        *sgd,
        "optimizer@optimizers.generator=sgd",
        "optimizers.generator.optimizer.lr=0.05",
        "optimizers.generator.scheduler=null",
    )
    done = torchrun_metarun(*overrides, cwd=tmp_path / "ddp")
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir = the_run_dir(tmp_path / "ddp")
    single = single_process(compose_config, overrides, tmp_path / "single")
    assert_same_results(run_dir, single)
    assert_same_learner(run_dir, single)
    assert set(load_checkpoint(run_dir / "checkpoints" / "last.pt")["optimizers"]) == {"generator"}


def test_two_processes_train_every_learner_and_backbone_as_one(tmp_path) -> None:
    """Every algorithm YAML, also with ResNet-12's DropBlock: what two processes train (each its
    half of every meta-batch, its own random draws included) is what one process trains. The
    same launch checks the runtime's collectives first."""
    out = tmp_path / "ddp"
    out.mkdir()
    script = [*TORCHRUN, str(HERE / "distributed_learners.py"), str(out)]
    env = {**metarun_env(tmp_path), "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen(script, cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    threads = torch.get_num_threads()
    runtime = Hardware(device="cpu", threads=1).setup()
    try:  # the one-process reference, while the two processes start and train
        expected = {case: train(*case, runtime, tmp_path / "single") for case in CASES}
    finally:
        torch.set_num_threads(threads)
    stdout, _ = job.communicate(timeout=300)
    assert job.returncode == 0, stdout
    assert "rank 0: collectives ok" in stdout and "rank 1: collectives ok" in stdout
    for (algorithm, backbone), reference in expected.items():
        name = case_name(algorithm, backbone)
        if reference is None:  # refused the backbone, in both
            assert not (out / f"{name}.pt").exists()
            continue
        got = torch.load(out / f"{name}.pt", weights_only=True)
        assert got["val"] == pytest.approx(reference["val"], rel=1e-9, abs=1e-9), name
        assert got["learner"].keys() == reference["learner"].keys()
        for key, value in reference["learner"].items():
            torch.testing.assert_close(
                got["learner"][key], value, rtol=1e-9, atol=1e-10, msg=f"{name}: {key}"
            )


def test_torchrun_without_hardware_ddp_is_one_line(tmp_path, tiny_overrides) -> None:
    done = launch([*TORCHRUN, "--no-python", METARUN, *tiny_overrides("maml")], tmp_path)
    assert done.returncode == 1  # torchrun's status for failed workers (each exited 2)
    errors = [line for line in done.stderr.splitlines() if line.startswith("metarun: error:")]
    assert errors == [
        "metarun: error: this process was started by torchrun, but hardware is not ddp; add "
        "hardware=ddp so that its processes train one model together"
    ]
    assert not (tmp_path / "outputs").exists()


def test_sigterm_to_torchrun_stops_every_rank_at_one_step_with_last_pt(
    tmp_path, tiny_overrides
) -> None:
    """torchrun passes SIGTERM on to its workers; they agree on the step, rank 0 saves it, and
    each exits as a process ended by SIGTERM does (128 + 15; torchrun itself exits 1)."""
    import signal

    overrides = tiny_run(tiny_overrides, "protonet", "trainer.max_steps=400")
    cwd, statuses = tmp_path / "ddp", tmp_path / "statuses"
    cwd.mkdir()
    statuses.mkdir()
    job = subprocess.Popen(
        [*TORCHRUN, str(HERE / "exit_status.py"), *overrides, "hardware=ddp"],
        cwd=cwd,
        env={**metarun_env(cwd), "OMP_NUM_THREADS": "1", "METARUN_EXIT_STATUS_DIR": str(statuses)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = wait_for_step(cwd, 3, job, pattern="outputs/runs/*/metrics.jsonl")
    job.send_signal(signal.SIGTERM)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 1, out + err  # torchrun's own status after a signal
    assert {p.name: int(p.read_text()) for p in statuses.iterdir()} == {
        "rank0": 128 + signal.SIGTERM,
        "rank1": 128 + signal.SIGTERM,
    }
    assert "metarun: stopped by SIGTERM at step" in err, out + err
    step = load_checkpoint(metrics.parent / "checkpoints" / "last.pt")["step"]
    assert 3 <= step < 400
    assert not (metrics.parent / "summary.json").exists()
