"""``metarun-eval``: re-test a finished run (or any checkpoint) elsewhere, without training.

    metarun-eval run_dir=<run> dataset=omniglot dataset.ways=20 eval.test_episodes=10000

The learner comes from the checkpoint exactly as it was trained (its config, weights and the
normalisation measured on its training data); what changes is only what it is tested on: the
data set (``dataset=<name>``, or the trained one), any ``dataset.*`` key (ways, shots, queries,
within-group episodes...), the split (``split=test|val|train``), the number of episodes and the
evaluation seed (``eval.*``), and where it runs (``hardware``, ``logger``). This is how
cross-domain results are made: trained on kanji, tested on Omniglot. With the run's own settings
it reproduces the run's test result exactly, episode by episode, because the fixed episodes come
from the same seeds (``run.EVALUATION_SEED_OFFSET``).

It writes its own directory (``out=``, by default ``outputs/evals/<time>_<run>``) with
``summary.json`` (the result and its source: checkpoint, step, W&B run), ``episodes.csv`` and
``.hydra/overrides.yaml`` (the run's overrides with the re-test's, so ``metarun-report`` reads
it as it reads a run), and logs a W&B run of job type ``eval`` in the source run's group. Bad
input is one line and exit status 2, as for ``metarun``; a network that cannot take the new
episodes (other image size, channels, or more ways than a fixed head has) too.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import hydra
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from metarun.api import rebuild
from metarun.atomic import atomic_write_text
from metarun.config_types import check_config
from metarun.continuing import read_complete_summary, stable_run_id
from metarun.errors import ConfigError, MetarunError
from metarun.hardware import Runtime
from metarun.provenance import git_state, package_versions
from metarun.run import EVALUATION_SEED_OFFSET, build, check_evaluation, config_hash, fixed_episodes
from metarun.shape_checks import check_shapes
from metarun.tracking.logger import RunIdentity, swept_values
from metarun.training.checkpoint import load_checkpoint
from metarun.training.episode_records import EPISODES_CSV, episode_table
from metarun.training.evaluate import EvalResult, evaluate
from metarun.training.inference import inference_kind

PROG = "metarun-eval"
EXIT_BAD_INPUT = 2
CHANGEABLE = ("dataset", "eval", "hardware", "logger")  # groups a re-test may change
OWN_KEYS = ("run_dir", "checkpoint", "split", "out")
CHECKPOINTS = ("best", "last")
USAGE = (
    f"usage: {PROG} run_dir=<run dir or .pt> [checkpoint=best|last] [split=test|val|train] "
    f"[out=<dir>] [dataset=<name>] [dataset.<key>=...] [eval.<key>=...] [hardware=...] "
    f"[logger=...]"
)

log = logging.getLogger("metarun")


@dataclass(frozen=True)
class Request:
    """What a ``metarun-eval`` command line asks for."""

    source: Path
    checkpoint: str = "best"
    split: str = "test"
    out: Path | None = None
    groups: dict[str, str] = field(default_factory=dict)  # dataset=omniglot
    keys: list[tuple[str, Any]] = field(default_factory=list)  # dataset.ways=20, typed
    overrides: list[str] = field(default_factory=list)  # the group and key overrides as given


def parse(argv: list[str]) -> Request:
    """The command line as a ``Request``; a key it cannot change is a ``ConfigError``."""
    try:
        parsed = OverridesParser.create().parse_overrides(argv)
    except Exception as error:
        raise ConfigError("command line", f"cannot be parsed ({error}); {USAGE}") from None
    own: dict[str, str] = {}
    groups: dict[str, str] = {}
    keys: list[tuple[str, Any]] = []
    overrides: list[str] = []
    for override, text in zip(parsed, argv, strict=True):
        key = override.key_or_group
        if key in OWN_KEYS:
            own[key] = override.get_value_element_as_str()
            continue
        group = key.split(".", 1)[0]
        if group not in CHANGEABLE or override.is_sweep_override() or override.is_delete():
            raise ConfigError(
                key,
                f"cannot be changed by a re-test: the learner is the checkpoint's; give "
                f"{', '.join(OWN_KEYS)}, or {', '.join(CHANGEABLE)} settings",
            )
        if "." in key:
            keys.append((key, override.value()))
        else:
            groups[key] = override.get_value_element_as_str()
        overrides.append(text)
    if "run_dir" not in own:
        raise ConfigError("run_dir", f"is required: the run or checkpoint to re-test; {USAGE}")
    checkpoint = own.get("checkpoint", "best")
    if checkpoint not in CHECKPOINTS:
        raise ConfigError("checkpoint", f"must be best or last, got {checkpoint!r}")
    split = own.get("split", "test")
    if split not in EVALUATION_SEED_OFFSET:
        raise ConfigError("split", f"must be one of test, val, train, got {split!r}")
    out = Path(own["out"]) if "out" in own else None
    return Request(Path(own["run_dir"]), checkpoint, split, out, groups, keys, overrides)


def checkpoint_file(request: Request) -> Path:
    """The ``.pt`` file a request names: a run directory's best or last, or the file given."""
    path = request.source
    if path.is_dir():
        path = path / "checkpoints" / f"{request.checkpoint}.pt"
    if not path.is_file():
        raise ConfigError(
            "run_dir",
            f"{path} does not exist; give a run directory that holds checkpoints/"
            f"{request.checkpoint}.pt, or a .pt checkpoint",
        )
    return path


def composed_groups(request: Request) -> DictConfig:
    """The groups the request chooses (``dataset=omniglot``), composed as ``metarun`` would,
    but without a paper's or network's settings for another algorithm."""
    from metarun.cli import CONFIG_DIR, options

    for group, choice in request.groups.items():
        if choice not in options(group):
            raise ConfigError(group, f"unknown {choice!r}; valid: {', '.join(options(group))}")
    choices = [f"{group}={choice}" for group, choice in request.groups.items()]
    with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra.compose("config", overrides=[*choices, "~paper", "~network"])


def retest_config(state: dict[str, Any], request: Request) -> DictConfig:
    """The trained run's config with the re-test's changes: chosen groups replaced, keys set,
    and this machine's hardware (``hardware=auto`` unless given), not the training cluster's."""
    cfg = OmegaConf.create(state["config"])
    composed = composed_groups(request)
    for group in ("dataset", "hardware", "logger"):
        if group in request.groups or group == "hardware":
            cfg[group] = OmegaConf.create(OmegaConf.to_container(composed[group], resolve=True))
    for key, value in request.keys:
        if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
            raise ConfigError(key, "is not a key of the re-tested run's config (a typo?)")
        OmegaConf.update(cfg, key, value, merge=True)
    return cfg


def output_dir(request: Request) -> Path:
    if request.out is not None:
        out = request.out
    else:
        stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        source = request.source.name if request.source.is_dir() else request.source.stem
        out = Path("outputs/evals") / f"{stamp}_{source}"
    if read_complete_summary(out / "summary.json") is not None:
        raise ConfigError("out", f"{out} already holds a result; give another directory")
    return out


def check_fits(learner: Any, trained: Any, data: Any) -> None:
    """Tasks of the kind the learner was trained on, and no more ways than a fixed head has."""
    if data.task.kind != trained.task.kind:
        raise ConfigError(
            "dataset",
            f"poses {data.task.kind} tasks, but the learner was trained on "
            f"{trained.task.kind} tasks",
        )
    head = getattr(learner, "classifier_head", None)
    outputs = trained.task.output_size
    if data.task.kind == "classification" and head is not None and head() is not None:
        if data.task.output_size > outputs:
            raise ConfigError(
                "dataset.ways",
                f"asks for {data.task.output_size}-way episodes, but the learner's head has "
                f"{outputs} outputs (trained {outputs}-way); re-test with at most {outputs} ways",
            )


def measured_inference(
    learner: Any, episodes: Any, data: Any, runtime: Runtime, trained_cfg: DictConfig
) -> str | None:
    """The learner's inference kind, from its first episode; an episode the network cannot
    take (other image size or channels) ends in one line naming what it was trained on."""
    try:
        return inference_kind(learner, episodes, data.task, runtime.device)
    except (RuntimeError, ValueError, IndexError) as error:
        trained = {k: trained_cfg.dataset.get(k) for k in ("channels", "image_size", "ways")}
        shown = ", ".join(f"{k} {v}" for k, v in trained.items() if v is not None)
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise ConfigError(
            "dataset",
            f"its episodes do not fit the trained network ({type(error).__name__}: {reason}); "
            f"it was trained on {shown or 'other inputs'}",
        ) from None


def retest(request: Request) -> tuple[EvalResult, Path]:
    """Re-test as ``request`` asks; returns the result and the directory written."""
    path = checkpoint_file(request)
    state = load_checkpoint(path)
    cfg = retest_config(state, request)
    check_evaluation(cfg)
    check_shapes(OmegaConf.to_container(cfg, resolve=True))  # before any data loads
    check_config(cfg)
    out = output_dir(request)
    split = request.split
    count = cfg.eval.val_episodes if split == "val" else cfg.eval.test_episodes
    runtime = build(cfg, "hardware").setup()
    learner, trained = rebuild(state)
    data = build(cfg, "dataset")
    if hasattr(data, "load_state_dict"):  # the normalisation the network was trained with
        data.load_state_dict(state.get("data", {}))
    check_fits(learner, trained, data)
    runtime.place(learner)
    episodes = fixed_episodes(cfg, data, split, count, runtime)
    trained_cfg = OmegaConf.create(state["config"])
    inference = measured_inference(learner, episodes, data, runtime, trained_cfg)
    result = evaluate(learner, episodes, data.task, runtime, cfg.eval.batch_size)
    rows = episode_table(episodes, result.per_episode, data.task, cfg.eval.batch_size)
    rows.write(out / EPISODES_CSV)
    source = {
        "checkpoint": str(path),
        "run_dir": str(path.parent.parent) if path.parent.name == "checkpoints" else None,
        "step": state.get("step"),
        "wandb_run_id": state.get("wandb_run_id"),
        "config_hash": config_hash(state["config"]),
    }
    summary = {
        "status": "complete",
        "kind": "eval",
        "split": split,
        "test": result.as_dict(),
        "source": source,
        "inference": inference,
        "episodes_csv": EPISODES_CSV,
        "device": str(runtime.device),
        "overrides": request.overrides,
        "run_dir": str(out),
        "git": git_state(),
        "versions": package_versions(),
    }
    resolved = OmegaConf.to_container(cfg, resolve=True)
    overrides = yaml.safe_dump(overrides_of(state, request))
    atomic_write_text(out / ".hydra" / "overrides.yaml", overrides)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    log_to_tracker(cfg, state, request, out, result, rows, summary)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return result, out


def overrides_of(state: dict[str, Any], request: Request) -> list[str]:
    """The run's own overrides, those the re-test sets replaced, then the re-test's (and its
    split, when not the test split): how the report names this result."""
    changed = {o.split("=", 1)[0].lstrip("+~") for o in request.overrides}
    kept = [o for o in state.get("overrides", []) if o.split("=", 1)[0].lstrip("+~") not in changed]
    split = [] if request.split == "test" else [f"split={request.split}"]
    return [*kept, *request.overrides, *split]


def source_group(state: dict[str, Any], request: Request) -> str:
    """The source run's W&B group: its sweep's, else its configured group, else its own id (so
    a single run and its re-tests are grouped together)."""
    run_dir = request.source if request.source.is_dir() else None
    summary = read_complete_summary(run_dir / "summary.json") if run_dir else None
    configured = (state["config"].get("logger") or {}).get("group")
    group = (summary or {}).get("wandb_group") or configured or state.get("wandb_run_id")
    return str(group or "metarun-eval")


def log_to_tracker(
    cfg: DictConfig,
    state: dict[str, Any],
    request: Request,
    out: Path,
    result: EvalResult,
    rows: Any,
    summary: dict[str, Any],
) -> None:
    """A W&B run of job type ``eval`` in the source run's group, with the result, the
    per-episode table and the source in its config."""
    run_id = stable_run_id(out, None)
    summary["wandb_run_id"] = run_id
    name = f"eval {' '.join(request.overrides)}".strip()
    identity = RunIdentity(run_id, name, source_group(state, request), "eval")
    config = {
        **OmegaConf.to_container(cfg, resolve=True),
        "swept": swept_values(overrides_of(state, request)),
        "source": summary["source"],
    }
    logger = build(cfg, "logger")(identity=identity, run_dir=out, config=config)
    step = int(state.get("step") or 0)
    try:
        logger.log(result.metrics(request.split), step)
        logger.table(f"{request.split}/episodes", rows.columns, rows.rows, step)
        logger.summary(
            {"test/result": result.line(request.split), "inference": summary["inference"]}
        )
    finally:
        logger.finish(0)


def fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    arguments = sys.argv[1:] if argv is None else argv
    if not arguments or arguments[0] in ("-h", "--help"):
        print(f"{USAGE}\n\n{__doc__}")
        return
    try:
        request = parse(arguments)
        result, out = retest(request)
    except (MetarunError, OmegaConfBaseException) as error:
        fail(str(error).splitlines()[0])
    for line in (result.line(request.split), *result.source_lines(request.split)):
        print(line)
    print(f"wrote {out / 'summary.json'} and {out / EPISODES_CSV}")


if __name__ == "__main__":
    main()
