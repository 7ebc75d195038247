"""Which directory a run writes to when it is asked to resume.

``resume=true`` continues the most recent run under ``outputs/runs`` that was started with the
same overrides (``resume`` itself aside) and left a ``last.pt``; ``resume=<run dir>`` continues
that run. The Hydra config computes ``hydra.run.dir`` through ``resume_run_dir``, so Hydra itself
writes into the resumed directory and a continued run keeps one directory, one log and one W&B
run. Sweeps (``-m``) keep Hydra's numbered member directories and resume in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml


def wants_resume(value: object) -> bool:
    return value not in (None, False, "false", "False", "", "null")


def resumes_latest(value: object) -> bool:
    """``resume=true``, as opposed to off or a run directory."""
    return value is True or str(value).lower() == "true"


def run_dir_to_resume(value: object) -> str | None:
    """The directory of ``resume=<run dir>``, or None for ``true`` and off."""
    return str(value) if wants_resume(value) and not resumes_latest(value) else None


def override_key(text: str) -> str:
    """``algorithm=maml`` -> ``algorithm``; ``+a.b=1`` -> ``a.b``."""
    return text.split("=", 1)[0].lstrip("+~")


def _without_resume(overrides: Sequence[str]) -> list[str]:
    return sorted(o for o in overrides if override_key(o) != "resume")


def latest_matching_run(runs_root: Path, overrides: Sequence[str]) -> Path | None:
    """The newest run dir under ``runs_root`` with a ``last.pt`` and the same overrides."""
    wanted = _without_resume(overrides)
    best: tuple[float, Path] | None = None
    for saved in runs_root.glob("**/.hydra/overrides.yaml"):
        run_dir = saved.parent.parent
        last = run_dir / "checkpoints" / "last.pt"
        if not last.is_file():
            continue
        try:
            previous = yaml.safe_load(saved.read_text()) or []
        except (OSError, yaml.YAMLError):
            continue
        if _without_resume(previous) != wanted:
            continue
        stamp = last.stat().st_mtime
        if best is None or stamp > best[0]:
            best = (stamp, run_dir)
    return best[1] if best else None


def resume_run_dir(resume: object, overrides: Sequence[str], runs_root: str, fresh: str) -> str:
    """``hydra.run.dir``: ``fresh`` for a new run, else the directory being continued."""
    if resumes_latest(resume):
        found = latest_matching_run(Path(runs_root), list(overrides))
        return str(found) if found is not None else fresh
    return run_dir_to_resume(resume) or fresh
