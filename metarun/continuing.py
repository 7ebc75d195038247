"""What a run picks up from its directory: the checkpoint to continue, the W&B run id it
logs to, and whether it is already complete.

A run is continued by ``resume=true``/``resume=<dir>``, and a sweep member (a numbered
directory of a multirun) always is: re-running a sweep, or a SLURM job that submitit requeues,
skips members that completed and continues the ones that stopped.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import yaml

from metarun.atomic import atomic_write_text
from metarun.errors import ConfigError
from metarun.resume import resumes_latest, wants_resume
from metarun.training.checkpoint import Checkpoints, load_checkpoint

log = logging.getLogger(__name__)


def resume_from(
    resume: object, checkpoints: Checkpoints, run_dir: Path, sweep_member: bool = False
) -> dict[str, Any] | None:
    """The checkpoint to continue from, or None for a fresh run.

    A sweep member always continues what its numbered directory holds: re-running a sweep (or
    a requeued SLURM job) picks up where each member stopped.
    """
    if not wants_resume(resume) and not sweep_member:
        if checkpoints.last.exists():
            raise ConfigError(
                "resume",
                f"{run_dir} already holds a run; pass resume=true to continue it or choose "
                f"another hydra.run.dir",
            )
        return None
    if checkpoints.last.is_file():
        log.info("resuming %s", checkpoints.last)
        return load_checkpoint(checkpoints.last)
    if sweep_member:
        return None
    if resumes_latest(resume):
        log.info("nothing to resume with these overrides; starting a new run in %s", run_dir)
        return None
    raise ConfigError(
        "resume", f"{resume} holds no checkpoints/last.pt; give a run dir that has one, or true"
    )


# Settings a continued run may change without becoming another run.
CONTINUABLE = ("resume", "trainer.max_steps")


def changed_settings(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    old, new = flatten(before), flatten(now)
    return [
        f"{key} {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(old.keys() | new.keys())
        if key != "resume" and old.get(key) != new.get(key)
    ]


def check_same_member(checkpoint: dict[str, Any], now: dict[str, Any], run_dir: Path) -> None:
    """A re-run sweep must map each member number to the run that directory holds. Hydra has
    already written this job's ``.hydra/`` record over that run's when the task starts, so a
    refused job puts the run's own record back from its checkpoint."""
    different = [
        change
        for change in changed_settings(checkpoint["config"], now)
        if change.split()[0] not in CONTINUABLE
    ]
    if different:
        restore_hydra_record(run_dir, checkpoint)
        raise ConfigError(
            "hydra.sweep.dir",
            f"{run_dir} holds another run ({'; '.join(different[:3])}); re-run the sweep with "
            f"its original overrides to continue it, or choose another hydra.sweep.dir",
        )


def restore_hydra_record(run_dir: Path, checkpoint: dict[str, Any]) -> None:
    record = run_dir / ".hydra"
    if "overrides" in checkpoint:
        atomic_write_text(record / "overrides.yaml", yaml.safe_dump(list(checkpoint["overrides"])))
    atomic_write_text(record / "config.yaml", yaml.safe_dump(checkpoint["config"], sort_keys=False))


def stable_run_id(run_dir: Path, resumed: dict[str, Any] | None) -> str:
    """The W&B run id, kept in the run dir from the first start, so a job killed before its
    first checkpoint and started again still logs to the same W&B run."""
    path = run_dir / "run_id"
    saved = path.read_text().strip() if path.is_file() else ""
    run_id = resumed["wandb_run_id"] if resumed is not None else saved or uuid.uuid4().hex[:12]
    if run_id != saved:
        atomic_write_text(path, run_id + "\n")
    return run_id


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def warn_about_changes(before: dict[str, Any], now: dict[str, Any]) -> None:
    """A resumed run continues with the current config; say which settings differ."""
    changed = changed_settings(before, now)
    if changed:
        log.warning("resuming with changed settings: %s", "; ".join(changed))


def read_complete_summary(path: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return summary if summary.get("status") == "complete" else None
