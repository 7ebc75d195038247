"""Hydra under ``torchrun``: every rank runs the ``metarun`` command, and all must agree on one
run directory.

Hydra names a run directory after the moment it starts (and, for ``resume=true``, after what it
finds on disk), so ranks started milliseconds apart would each make their own. Before Hydra
starts, the ranks therefore join their process group, rank 0 resolves ``hydra.run.dir`` and
``hydra.sweep.dir`` from the same command line exactly as Hydra will, and every rank passes them
to Hydra as overrides. Ranks other than 0 also keep Hydra from writing into that directory: no
``.hydra/`` (``hydra.output_subdir=null``) and no log file (``hydra/job_logging=metarun_worker``:
warnings and errors on the console only).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

import hydra
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from metarun import distributed
from metarun.errors import ConfigError
from metarun.hardware import DistributedHardware
from metarun.training.trainer import check_meta_batch


def is_distributed(hardware: DictConfig) -> bool:
    """Whether a composed ``hardware`` config asks for several processes (``hardware=ddp``)."""
    try:
        return issubclass(get_class(str(hardware.get("_target_"))), DistributedHardware)
    except Exception:  # a broken _target_ is reported when the run builds it
        return False


def launch_problem(cfg: DictConfig, multirun: bool, argv: Sequence[str]) -> str | None:
    """Why the composed ``cfg`` cannot run as this process was launched (with or without
    torchrun), or None."""
    wanted, launched = is_distributed(cfg.hardware), distributed.launched()
    if launched and not wanted:
        return (
            "this process was started by torchrun, but hardware is not ddp; add hardware=ddp so "
            "that its processes train one model together"
        )
    if wanted and not launched:
        command = shlex.join(argv)
        return (
            f"hardware=ddp runs one process per GPU, started by torchrun: torchrun "
            f"--nproc_per_node=<GPUs> --no-python metarun {command} (or use hardware=auto for "
            f"one process)"
        )
    if wanted and multirun:
        return (
            "hardware=ddp runs one job per torchrun; a sweep (-m) is not supported under "
            "torchrun: start torchrun once per combination"
        )
    if wanted:
        try:
            check_meta_batch(
                cfg.algorithm.meta_batch_size, distributed.Placement.from_env().world_size
            )
        except ConfigError as error:
            return str(error)
    return None


def join(hardware: DictConfig) -> None:
    """Join the launcher's process group with the backend the hardware config asks for."""
    made = hydra.utils.instantiate(hardware)
    made.init_process_group()


def quote(value: str) -> str:
    """A Hydra override value that stays one literal string (spaces, commas, quotes...).

    In a quoted Hydra value, only backslashes before a quote or at the end are escapes.
    """
    value = re.sub(r"(\\+)(?='|$)", lambda run: run.group(1) * 2, value)
    return "'" + value.replace("'", "\\'") + "'"


def output_dirs(config_dir: str, overrides: Sequence[str]) -> tuple[str, str]:
    """``hydra.run.dir`` and ``hydra.sweep.dir`` as Hydra would resolve them for ``overrides``."""
    with hydra.initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        cfg = hydra.compose(
            config_name="config", overrides=list(overrides), return_hydra_config=True
        )
    run_dir = OmegaConf.select(cfg, "hydra.run.dir")
    sweep_dir = OmegaConf.select(cfg, "hydra.sweep.dir")
    return str(run_dir), str(sweep_dir)


def shared_overrides(config_dir: str, overrides: Sequence[str]) -> list[str]:
    """The overrides that make this rank's Hydra write where rank 0's does (and, on other
    ranks, write nothing there). Call on every rank after ``join``."""
    rank = distributed.env_rank()
    world_size = distributed.Placement.from_env().world_size
    dirs = output_dirs(config_dir, overrides) if rank == 0 else None
    run_dir, sweep_dir = distributed.broadcast_object(dirs, world_size)
    shared = [f"hydra.run.dir={quote(run_dir)}", f"hydra.sweep.dir={quote(sweep_dir)}"]
    if rank != 0:
        shared += ["hydra.output_subdir=null", "hydra/job_logging=metarun_worker"]
    return shared
