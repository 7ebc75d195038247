from __future__ import annotations

import csv
import io

import pytest

from metarun.report.display import TextTable
from metarun.report.files import (
    CONFIGS_CSV,
    MEMBERS_CSV,
    REPORT_MD,
    configs_csv,
    markdown,
    markdown_table,
    members_csv,
    write_tables,
)
from metarun.report.members import collect_sweep
from metarun.report.tables import build_report


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_markdown_tables_line_up_and_escape_pipes() -> None:
    table = TextTable(["key", "n"], [["a|b", "1"], ["c", "100"]], frozenset({1}), [False, True])
    assert markdown_table(table).splitlines() == [
        "| key  |   n |",
        "| ---- | --: |",
        "| a\\|b |   1 |",
        "| c    | 100 |",
    ]


def test_member_csv_keeps_full_precision_and_blank_cells(seed_sweep) -> None:
    report = build_report(collect_sweep(seed_sweep), sort="member")
    written = rows(members_csv(report))
    assert list(written[0]) == [
        "member",
        "optimizer.lr",
        "seed",
        "status",
        "metric",
        "test_mean",
        "test_ci95",
        "test_episodes",
        "best_val",
        "best_val_step",
        "steps",
        "train_seconds",
    ]
    assert written[1] == {
        "member": "1",
        "optimizer.lr": "0.001",
        "seed": "1",
        "status": "complete",
        "metric": "acc",
        "test_mean": "94.0",
        "test_ci95": "0.6",
        "test_episodes": "600",
        "best_val": "81.0",
        "best_val_step": "4",
        "steps": "4",
        "train_seconds": "20.0",
    }
    assert (written[5]["status"], written[5]["test_mean"], written[5]["steps"]) == (
        "incomplete",
        "",
        "4",
    )


def test_config_csv(seed_sweep) -> None:
    written = rows(configs_csv(build_report(collect_sweep(seed_sweep))))
    assert [r["optimizer.lr"] for r in written] == ["0.01", "0.001"]
    first = written[0]
    assert (first["seeds"], first["metric"], first["members"], first["incomplete_members"]) == (
        "2",
        "acc",
        "3 4",
        "5",
    )
    assert float(first["test_mean"]) == pytest.approx(96.5)
    assert float(first["test_ci95"]) == pytest.approx(12.7062 * 0.5)  # t(1) * std / sqrt(2)
    assert float(first["test_std"]) == pytest.approx(0.5**0.5)
    assert float(first["train_seconds_mean"]) == pytest.approx(45.0)


def test_write_tables_writes_the_config_csv_only_when_seeds_were_swept(
    tmp_path, seed_sweep, member_writer
) -> None:
    out = tmp_path / "out"
    written = write_tables(build_report(collect_sweep(seed_sweep)), out)
    assert [p.name for p in written] == [REPORT_MD, MEMBERS_CSV, CONFIGS_CSV]
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files
    text = (out / REPORT_MD).read_text()
    assert text.index("## By configuration") < text.index("## Members")
    no_seeds = tmp_path / "no-seeds"
    member_writer(no_seeds, 0, ["optimizer.lr=0.1"], test=(50.0, 1.0))
    member_writer(no_seeds, 1, ["optimizer.lr=0.2"], test=(60.0, 1.0))
    written = write_tables(build_report(collect_sweep(no_seeds)), no_seeds)
    assert [p.name for p in written] == [REPORT_MD, MEMBERS_CSV]
    assert "## By configuration" not in (no_seeds / REPORT_MD).read_text()


def test_markdown_links_the_plots(seed_sweep) -> None:
    report = build_report(collect_sweep(seed_sweep))
    with_plots = markdown(report, [seed_sweep / "val_acc.png"])
    assert with_plots.endswith("## Validation curves\n\n![val_acc](val_acc.png)\n")
    assert "Validation curves" not in markdown(report)
