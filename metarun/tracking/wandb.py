"""``logger=wandb``: Weights & Biases, set up so that it never prompts and never takes a run
down.

Mode ``auto`` logs online when credentials exist (``WANDB_API_KEY`` or a netrc entry for the
W&B host) and offline otherwise, with one line saying how to upload later. ``online`` without
credentials would make wandb ask for a key on a terminal, so it falls back to offline too. Any
W&B failure, at start or mid-run, becomes a warning and the run goes on without it.

The run id is the one ``run_id`` file of the run directory holds and ``resume="allow"``, so a
resumed or requeued job continues its W&B run rather than starting another. With
``log_checkpoints=true`` the best checkpoint is kept as a ``model`` artifact with the test
result as metadata.
"""

from __future__ import annotations

import io
import logging
import netrc
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from metarun.errors import ConfigError
from metarun.tracking.logger import RunIdentity

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError("logger.mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    if mode in ("auto", "online"):
        return "online" if has_credentials() else "offline"
    return mode


class WandbLogger:
    def __init__(
        self,
        identity: RunIdentity,
        run_dir: Path,
        config: dict[str, Any],
        project: str = "metarun",
        entity: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        notes: str | None = None,
        mode: str = "auto",
        init_timeout: float = 60.0,
        log_checkpoints: bool = False,
    ) -> None:
        self.run = None
        self.log_checkpoints = log_checkpoints
        chosen = resolve_mode(mode)
        if chosen == "disabled":
            return
        if chosen == "offline" and mode != "offline":
            log.info(
                "W&B: no credentials found, logging offline under %s/wandb; upload later with "
                "`wandb sync %s/wandb/offline-run-*`",
                run_dir,
                run_dir,
            )
        try:
            import wandb

            self.run = wandb.init(
                project=project,
                entity=entity,
                group=group or identity.group,
                job_type=job_type or identity.job_type,
                name=name or identity.name,
                id=identity.run_id,
                resume="allow",
                tags=list(tags or []),
                notes=notes,
                config=config,
                dir=str(run_dir),
                mode=chosen,
                settings=wandb.Settings(silent=True, console="off", init_timeout=init_timeout),
            )
        except Exception as error:  # W&B is a convenience: a failure must not stop the run
            reason = f"{type(error).__name__}: {error}"
            log.warning("W&B could not start (%s); continuing without it", reason)
            self.run = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(metrics, step=step)
        except Exception as error:
            log.warning("W&B logging failed (%s); continuing without it", error)
            self._abandon()

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is None:
            return
        try:
            self.run.summary.update(values)
        except Exception as error:
            log.warning("W&B summary failed (%s)", error)

    def image(self, name: str, png: bytes, step: int) -> None:
        if self.run is None:
            return
        try:
            import wandb
            from PIL import Image

            self.run.log({name: wandb.Image(Image.open(io.BytesIO(png)))}, step=step)
        except Exception as error:
            log.warning("W&B could not log the picture %s (%s)", name, error)

    def checkpoint(self, path: Path, metadata: dict[str, Any]) -> None:
        if self.run is None or not self.log_checkpoints:
            return
        try:
            import wandb

            artifact = wandb.Artifact(f"model-{self.run.id}", type="model", metadata=metadata)
            artifact.add_file(str(path), name=path.name)
            self.run.log_artifact(artifact, aliases=["best"])
        except Exception as error:
            log.warning("W&B could not keep %s as an artifact (%s)", path, error)

    def table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        if self.run is None:
            return
        try:
            import wandb

            self.run.log({name: wandb.Table(columns=columns, data=rows)}, step=step)
        except Exception as error:
            log.warning("W&B could not log the table %s (%s)", name, error)

    def preempting(self) -> None:
        if self.run is None:
            return
        try:
            self.run.mark_preempting()
        except Exception as error:
            log.warning("W&B could not mark the run as preempted (%s)", error)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        try:
            self.run.finish(exit_code=exit_code)
        except Exception as error:
            log.warning("W&B did not finish cleanly (%s)", error)
        self.run = None

    def _abandon(self) -> None:
        run, self.run = self.run, None
        try:
            run.finish(exit_code=1)
        except Exception:
            pass
