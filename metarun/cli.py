"""The ``metarun`` command: Hydra composes the config, ``run.run`` does the work.

Kept thin on purpose. It finds the config tree that ships inside the package (so the installed
command works from any directory), checks the command line before Hydra runs so that a typo
costs one line rather than a screen of traceback, and turns the errors a user can fix into one
line on stderr and exit status 2. Under ``torchrun`` (``hardware=ddp``) it joins the process
group before Hydra starts so that all ranks share one run directory (``metarun/launch.py``), and
leaves it together with the other ranks when the run succeeds.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import time
from importlib.resources import files
from pathlib import Path
from shutil import which
from typing import NoReturn

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from metarun import distributed, launch
from metarun.config_types import check_config
from metarun.errors import MetarunError
from metarun.resume import override_key, resume_run_dir, run_dir_to_resume
from metarun.run import RunContext, check_objective, check_pairing, record_failure, run
from metarun.shape_checks import check_shapes
from metarun.training.preemption import Preempted

CONFIG_DIR = Path(str(files("metarun.configs")))
GROUPS = (
    "dataset",
    "algorithm",
    "model",
    "optimizer",
    "hardware",
    "logger",
    "experiment",
    "search",
    "debug",
)
# Hydra plugins behind config groups, with the extra that installs each.
PLUGINS = {
    ("hydra/launcher", "submitit_"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "slurm"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
    ("search", ""): ("hydra_plugins.hydra_optuna_sweeper", "optuna"),
}
EXIT_BAD_INPUT = 2
FAILED_MEMBERS: list[str] = []  # sweep members of this process that stopped on bad input
QUIET_RANK_GRACE_S = 5.0

log = logging.getLogger("metarun")
OmegaConf.register_new_resolver("metarun_run_dir", resume_run_dir, replace=True)


def fail(message: str, every_rank: bool = False) -> NoReturn:
    """One line on stderr and exit status 2.

    Under torchrun every rank checks the same command line, so rank 0 alone reports it, unless
    ``every_rank`` (a failure one rank may meet alone, e.g. data missing on its machine): then
    the other ranks report it too, naming themselves. A rank that stays quiet waits a moment
    before exiting, because torchrun stops every rank once one exits, and rank 0 must get to
    say what went wrong.
    """
    rank = distributed.env_rank()
    if rank == 0:
        print(f"metarun: error: {message}", file=sys.stderr)
    elif every_rank:
        print(f"metarun: error: [rank {rank}] {message}", file=sys.stderr)
    else:
        time.sleep(QUIET_RANK_GRACE_S)
    sys.exit(EXIT_BAD_INPUT)


def one_line(error: BaseException) -> str:
    """Hydra and OmegaConf errors span several lines; keep the ones that say what is wrong."""
    noise = ("full_key:", "object_type", "reference_type", "Set the environment")
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    kept = [ln for ln in lines if not ln.startswith(noise)]
    return " ".join(kept or lines or [type(error).__name__])


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def check_plugin(group: str, value: str) -> None:
    """A group option served by a Hydra plugin that is not installed: say which extra."""
    for (plugin_group, prefix), (module, extra) in PLUGINS.items():
        wanted = group == plugin_group and value.startswith(prefix) and value != "null"
        if wanted and not _has_module(module):
            fail(f"{group}={value} needs the {extra} extra: pip install 'metarun[{extra}]'")
    if group == "hydra/launcher" and value in ("slurm", "submitit_slurm") and not which("sbatch"):
        fail(
            f"{group}={value} submits with sbatch, which is not on PATH here; run it on a SLURM "
            f"login node, or try the sweep locally with hydra/launcher=submitit_local"
        )


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def check_resume(value: str, multirun: bool) -> None:
    if run_dir_to_resume(value) is None:
        return
    if multirun:
        fail("resume=<run dir> continues one run; in a sweep (-m) use resume=true")
    if not (Path(value) / "checkpoints" / "last.pt").is_file():
        fail(f"resume: {value} holds no checkpoints/last.pt; give a run dir that has one, or true")


def runs_jobs(args: argparse.Namespace) -> bool:
    """False for the commands that only print (help, info, ``--cfg``)."""
    return not (args.help or args.hydra_help or args.info or args.shell_completion or args.cfg)


def preflight(argv: list[str]) -> DictConfig | None:
    """Check the command line the way Hydra will read it, failing in one line; returns the
    composed config of the first job (None for help)."""
    args = hydra._internal.utils.get_args_parser().parse_args(argv)
    modes = {"--run": args.run, "-m": args.multirun, "--cfg": args.cfg, "--info": args.info}
    chosen = [flag for flag, value in modes.items() if value]
    if len(chosen) > 1:
        fail(
            f"{' and '.join(chosen)} cannot be combined; give one (to print one sweep member's "
            f"config, drop -m and give its values)"
        )
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return None
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except Exception as error:
        fail(f"cannot parse the command line: {one_line(error)}")
    first_of_each_sweep = []
    for override in overrides:
        key = override.key_or_group
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [override.get_value_element_as_str()]
        if not override.is_delete():
            for value in values:
                check_plugin(key, value)
        if key in GROUPS and not override.is_delete():
            valid = options(key)
            for value in values:
                if value not in valid and value != "null":
                    fail(f"unknown {key} {value!r}; valid: {', '.join(valid)}")
        if key == "resume" and len(values) == 1:
            check_resume(values[0], args.multirun)
        if override.is_delete():
            first_of_each_sweep.append(override.input_line)
        else:
            first_of_each_sweep.append(f"{override.get_key_element()}={values[0]}")
    try:
        with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = hydra.compose(
                config_name="config", overrides=first_of_each_sweep, return_hydra_config=True
            )
            with open_dict(cfg):
                hydra_cfg = cfg.pop("hydra")
            check_pairing(cfg)  # before resolving: another family's keys may not interpolate
            resolved = OmegaConf.to_container(cfg, resolve=True)
            if runs_jobs(args):  # types and episode shapes: a sweep fails before any member
                check_shapes(resolved)  # first: a shape's message gives its valid range
                check_config(cfg)
            if args.multirun:
                check_sweep_direction(hydra_cfg, cfg)
    except MetarunError as error:
        fail(str(error))
    except Exception as error:
        fail(one_line(error))
    if runs_jobs(args):
        problem = launch.launch_problem(cfg, args.multirun, argv)
        if problem:
            fail(problem)
    return cfg


def join_ranks(argv: list[str], cfg: DictConfig) -> list[str]:
    """Under torchrun: join the process group, and the overrides that give every rank rank 0's
    run directory (see ``metarun/launch.py``). Nothing otherwise."""
    args = hydra._internal.utils.get_args_parser().parse_args(argv)
    if not (distributed.launched() and runs_jobs(args)):
        return []
    try:
        launch.join(cfg.hardware)
    except MetarunError as error:
        fail(str(error), every_rank=True)
    return launch.shared_overrides(str(CONFIG_DIR), args.overrides)


def check_sweep_direction(hydra_cfg: DictConfig, cfg: DictConfig) -> None:
    """An Optuna search must move the data set's validation metric the right way; checked
    before any trial runs, since it would fail every one of them."""
    direction = hydra_cfg.sweeper.get("direction")
    if isinstance(direction, str):
        check_objective(direction, instantiate(cfg.dataset).task)


def context_from_hydra() -> RunContext:
    hc = HydraConfig.get()
    choices = hc.runtime.choices
    sweep = hc.mode == RunMode.MULTIRUN
    algorithm, dataset = choices.get("algorithm"), choices.get("dataset")
    return RunContext(
        run_dir=Path(hc.runtime.output_dir),
        name=hc.job.override_dirname or f"{algorithm}-{dataset}",
        group=Path(hc.sweep.dir).name if sweep else None,
        job_type=str(algorithm),
        sweep_member=sweep,
        overrides=tuple(hc.overrides.task),
    )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def hydra_entry(cfg: DictConfig) -> float | None:
    context = context_from_hydra()
    try:
        return run(cfg, context)
    except distributed.RaisedOnMain as error:
        fail(str(error))  # rank 0 reports it
    except (MetarunError, OmegaConfBaseException) as error:
        message = str(error) if isinstance(error, MetarunError) else one_line(error)
        if not context.sweep_member:
            fail(message, every_rank=isinstance(error, MetarunError))
        # One member's bad input or divergence must not take the others down: record it and
        # return no score, which Optuna's sweeper counts as a failed trial.
        log.error("sweep member %s failed: %s", context.run_dir, message)
        record_failure(context.run_dir, message)
        FAILED_MEMBERS.append(f"{context.run_dir} ({message})")
        return None
    except Preempted as stopped:
        if distributed.env_rank() == 0:
            again = "re-run the sweep with hydra.sweep.dir=" if context.sweep_member else "resume="
            target = context.run_dir.parent if context.sweep_member else context.run_dir
            print(f"metarun: {stopped}; continue with {again}{target}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    except KeyboardInterrupt:
        if distributed.env_rank() == 0:
            print(
                "metarun: interrupted; the last checkpoint is intact, continue with resume=true",
                file=sys.stderr,
            )
        sys.exit(130)


def with_saved_overrides(argv: list[str]) -> list[str]:
    """``resume=<run dir>`` continues that run as it was configured: its saved overrides come
    first and the command line's win, so ``resume=<dir> trainer.max_steps=N`` only changes N."""
    args = hydra._internal.utils.get_args_parser().parse_args(argv)
    resume = [o for o in args.overrides if override_key(o) == "resume"]
    if args.multirun or len(resume) != 1:
        return argv
    target = run_dir_to_resume(resume[0].split("=", 1)[1])
    if target is None:
        return argv
    saved_file = Path(target) / ".hydra" / "overrides.yaml"
    if not saved_file.is_file():
        return argv
    given = {override_key(o) for o in args.overrides}
    previous = yaml.safe_load(saved_file.read_text()) or []
    saved = [o for o in previous if override_key(o) not in given]
    first = argv.index(args.overrides[0])
    return argv[:first] + saved + argv[first:]


def main() -> None:
    argv = with_saved_overrides(sys.argv[1:])
    cfg = preflight(argv)
    shared = join_ranks(argv, cfg) if cfg is not None else []
    sys.argv[1:] = argv + shared  # Hydra reads the command line from sys.argv
    hydra_entry()  # a single run's failures exit from inside
    distributed.shutdown()
    if FAILED_MEMBERS:
        fail(f"{len(FAILED_MEMBERS)} sweep member(s) failed: {'; '.join(FAILED_MEMBERS)}")


if __name__ == "__main__":
    main()
