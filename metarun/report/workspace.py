"""``metarun-dashboard``: a W&B workspace for one sweep, built from code.

W&B's own library for workspaces and reports (``wandb-workspaces``, maintained by W&B; the
``dashboard`` extra installs it) describes views as objects, so the views a sweep needs can be
made rather than clicked together: the validation curves of every member, a parallel-coordinates
plot from the swept keys (``swept.<key>`` in each run's config) to the test score and its
interval, the run comparer showing only the settings that differ, and the per-episode table of
the test (``test/episodes``). The runs are the sweep's W&B group (the sweep directory's name).

The swept keys and the metric come from the sweep directory, as ``metarun-report`` reads it;
the entity and project from the members' logger settings unless given. ``--dry-run`` prints the
view's JSON instead of saving it (no network or API key needed); saving needs both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, NoReturn

import yaml

from metarun.errors import MetarunError
from metarun.report.members import Sweep, collect_sweep
from metarun.report.tables import split_keys

PROG = "metarun-dashboard"
EXIT_BAD_INPUT = 2
INSTALL = "pip install 'metarun[dashboard]'"


def fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def logger_settings(sweep: Sweep) -> dict[str, Any]:
    """The first member's ``logger`` config (project, entity), from ``.hydra/config.yaml``."""
    for member in sweep.members:
        path = member.path / ".hydra" / "config.yaml"
        try:
            config = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        return config.get("logger") or {}
    return {}


def workspace(sweep: Sweep, entity: str, project: str) -> Any:
    """The view of ``sweep``'s runs: curves, comparison and per-episode sections."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    metrics = list(dict.fromkeys(m.metric for m in sweep.members if m.metric)) or ["acc"]
    _, swept = split_keys(sweep.members)
    curves = [wr.LinePlot(title=f"val {m}", y=[f"val/{m}", f"val/best_{m}"]) for m in metrics]
    curves.append(wr.LinePlot(title="training loss", y=["train/loss"], smoothing_factor=0.6))
    columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(f"swept.{k}")) for k in swept]
    for metric in metrics:
        for name in (f"test/{metric}", f"test/{metric}_ci95"):
            columns.append(wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(name)))
    compare = [
        wr.ParallelCoordinatesPlot(title="swept keys to test score", columns=columns),
        wr.RunComparer(diff_only="split"),
    ]
    return ws.Workspace(
        entity=entity,
        project=project,
        name=f"metarun sweep {sweep.path.name}",
        sections=[
            ws.Section(name="Validation curves", panels=curves, is_open=True),
            ws.Section(name="Swept keys and test results", panels=compare, is_open=True),
            ws.Section(
                name="Test episodes",
                panels=[wr.WeavePanelSummaryTable(table_name="test/episodes")],
            ),
        ],
        runset_settings=ws.RunsetSettings(filters=[ws.Metric("Group") == sweep.path.name]),
    )


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n", 1)[0])
    made.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="a metarun -m directory")
    made.add_argument("--entity", help="W&B entity (default: the members' logger.entity)")
    made.add_argument("--project", help="W&B project (default: the members' logger.project)")
    made.add_argument("--dry-run", action="store_true", help="print the view's JSON, save nothing")
    return made


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        sweep = collect_sweep(args.sweep_dir)
    except MetarunError as error:
        fail(str(error))
    settings = logger_settings(sweep)
    entity = args.entity or settings.get("entity")
    project = args.project or settings.get("project") or "metarun"
    if not entity:
        fail("--entity: the sweep's runs name no W&B entity (logger.entity); give --entity")
    try:
        view = workspace(sweep, entity, project)
    except ImportError:
        fail(f"building W&B workspaces needs the dashboard extra: {INSTALL}")
    if args.dry_run:
        print(view._to_model().model_dump_json(indent=2))
        return
    try:
        view.save()
    except Exception as error:  # network, credentials: say so in one line
        fail(f"W&B did not save the workspace ({type(error).__name__}: {error})")
    print(f"saved {view.url}")


if __name__ == "__main__":
    main()
