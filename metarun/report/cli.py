"""The ``metarun-report`` command: read a multirun directory, write the report, show it.

Offline and read-only on the runs: it reads the files each member wrote and writes only its own
report files. Mistakes a user can fix (a missing path, a directory that is not a sweep, an
unwritable output directory) end in one line on stderr and exit status 2, as ``metarun`` does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from metarun.errors import MetarunError
from metarun.report.files import (
    COMPARISONS_CSV,
    CONFIGS_CSV,
    MEMBERS_CSV,
    REPORT_MD,
    write_tables,
)
from metarun.report.members import collect_runs, collect_sweep
from metarun.report.plots import write_plots
from metarun.report.tables import build_report
from metarun.report.terminal import show

PROG = "metarun-report"
EXIT_BAD_INPUT = 2


def fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


class OneLineParser(argparse.ArgumentParser):
    """argparse prints its usage before an error; keep to the one-line convention."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {PROG} --help)")


def parser() -> argparse.ArgumentParser:
    made = OneLineParser(
        prog=PROG,
        description=(
            "Compare the members of a sweep (metarun -m) offline: one table of every member "
            "with its swept settings, test score and training time, aggregated over seeds when "
            "seed was swept, and configurations compared episode by episode on the test "
            f"episodes they share. Writes {REPORT_MD}, {MEMBERS_CSV}, {CONFIGS_CSV} (seeds "
            f"swept), {COMPARISONS_CSV} (episodes recorded) and val_<metric>*.png, "
            "paired_<metric>.png plots."
        ),
    )
    made.add_argument(
        "sweep_dir",
        type=Path,
        nargs="+",
        metavar="SWEEP_DIR",
        help=(
            "a multirun directory, e.g. outputs/multirun/<date>_<time>; or several run "
            "directories (each with its summary.json), compared with each other"
        ),
    )
    made.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where to write the report (default: SWEEP_DIR; for runs, their common parent)",
    )
    made.add_argument(
        "--sort",
        choices=("score", "member"),
        default="score",
        help="row order: best test score first (default), or by member number",
    )
    return made


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    dirs: list[Path] = args.sweep_dir
    try:
        sweep = collect_sweep(dirs[0]) if len(dirs) == 1 else collect_runs(dirs)
        report = build_report(sweep, sort=args.sort)
    except MetarunError as error:
        fail(str(error))
    except OSError as error:
        fail(f"cannot read {error.filename or dirs[0]}: {error.strerror or error}")
    out_dir: Path = args.out or (dirs[0] if len(dirs) == 1 else sweep.path)
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out {out_dir} is a file; give a directory (it is created if missing)")
    try:
        plots = write_plots(report, out_dir)
        written = write_tables(report, out_dir, plots) + plots
    except OSError as error:
        fail(
            f"cannot write the report to {out_dir} ({error.strerror or error}); "
            f"give a writable directory with --out DIR"
        )
    show(report)
    print(f"\nwrote {', '.join(p.name for p in written)} to {out_dir}")


if __name__ == "__main__":
    main()
