"""``metarun-report`` end to end, on a real sweep made by ``metarun -m`` (see conftest.py)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest
import yaml
from PIL import Image

from metarun.report.cli import main

FILES = ["report.md", "report.csv", "report_by_config.csv", "val_acc.png", "val_acc_by_config.png"]
PAIRED = ["comparisons.csv", "paired_acc.png"]  # once runs record episodes.csv


def expected_files(sweep: Path) -> list[str]:
    """The files a report writes: with the paired comparisons when the members recorded their
    test episodes (the real sweep does once metarun writes episodes.csv)."""
    if not any(sweep.glob("*/episodes.csv")):
        return FILES
    return [*FILES[:3], PAIRED[0], *FILES[3:], PAIRED[1]]


def overrides_of(member: Path) -> dict[str, str]:
    lines = yaml.safe_load((member / ".hydra" / "overrides.yaml").read_text())
    return dict(line.split("=", 1) for line in lines)


def summary_of(member: Path) -> dict:
    return json.loads((member / "summary.json").read_text())


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def crash_a_third_seed(sweep: Path) -> Path:
    """Member 4: lr 0.002 with seed 2, killed at step 3, as such a job leaves its directory:
    Hydra's .hydra/, metrics.jsonl up to the crash, no summary.json."""
    members = [m for m in sweep.iterdir() if m.name.isdigit()]
    wanted = {"optimizer.lr": "0.002", "seed": "1"}
    (source,) = [m for m in members if overrides_of(m).items() >= wanted.items()]
    crashed = sweep / "4"
    shutil.copytree(source / ".hydra", crashed / ".hydra")
    saved = crashed / ".hydra" / "overrides.yaml"
    saved.write_text(saved.read_text().replace("- seed=1\n", "- seed=2\n"))
    records = [json.loads(line) for line in (source / "metrics.jsonl").read_text().splitlines()]
    kept = [r for r in records if r["step"] <= 3 and not any(k.startswith("test/") for k in r)]
    (crashed / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    return crashed


@pytest.fixture(scope="module")
def reported(finished_sweep: Path, tmp_path_factory, run_command):
    """A copy of the real sweep plus a crashed member, and ``metarun-report`` run on it."""
    sweep = tmp_path_factory.mktemp("reported") / finished_sweep.name
    shutil.copytree(finished_sweep, sweep, ignore=shutil.ignore_patterns("checkpoints"))
    crash_a_third_seed(sweep)
    done = run_command("metarun-report", str(sweep), cwd=sweep.parent)
    assert done.returncode == 0, done.stderr
    return sweep, done


def test_the_report_is_written_and_shown(reported) -> None:
    sweep, done = reported
    for name in expected_files(sweep):
        assert (sweep / name).is_file(), name
    assert "Traceback" not in done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == f"wrote {', '.join(expected_files(sweep))} to {sweep}"
    # No terminal: plain text, which is report.md without the plots section.
    shown = done.stdout[: done.stdout.rindex("\nwrote ")]
    assert (sweep / "report.md").read_text().startswith(shown.rstrip("\n"))
    assert "\x1b[" not in done.stdout


def test_member_csv_holds_every_members_summary(reported) -> None:
    sweep, _ = reported
    rows = read_csv(sweep / "report.csv")
    assert list(rows[0])[:4] == ["member", "optimizer.lr", "seed", "status"]
    assert "dataset.ways" not in rows[0] and "resume" not in rows[0]  # constants: no columns
    assert sorted(int(r["member"]) for r in rows) == [0, 1, 2, 3, 4]
    for row in rows:
        member = sweep / row["member"]
        assert {k: row[k] for k in ("optimizer.lr", "seed")} == {
            k: overrides_of(member)[k] for k in ("optimizer.lr", "seed")
        }
        if row["member"] == "4":
            continue
        summary = summary_of(member)
        assert row["status"] == "complete" and row["metric"] == "acc"
        assert float(row["test_mean"]) == summary["test"]["mean"]  # full precision
        assert float(row["test_ci95"]) == summary["test"]["ci95"]
        assert int(row["test_episodes"]) == summary["test"]["episodes"] == 6
        assert float(row["best_val"]) == summary["best_val"]["score"]
        assert int(row["best_val_step"]) == summary["best_val"]["step"]
        assert int(row["steps"]) == summary["steps"] == 4
        assert float(row["train_seconds"]) == summary["train_seconds"]
    complete = [float(r["test_mean"]) for r in rows if r["status"] == "complete"]
    assert complete == sorted(complete, reverse=True)  # best first, accuracy: higher
    crashed = rows[-1]
    assert (crashed["member"], crashed["seed"], crashed["status"]) == ("4", "2", "incomplete")
    assert (crashed["steps"], crashed["test_mean"], crashed["train_seconds"]) == ("3", "", "")
    logged = (sweep / "4" / "metrics.jsonl").read_text().splitlines()
    first_val = next(r["val/acc"] for r in map(json.loads, logged) if "val/acc" in r)
    assert (float(crashed["best_val"]), crashed["best_val_step"]) == (first_val, "2")  # so far


def test_seeds_are_aggregated_with_a_t_interval(reported) -> None:
    sweep, _ = reported
    rows = read_csv(sweep / "report_by_config.csv")
    assert list(rows[0]) == [
        "optimizer.lr",
        "inference",  # measured by every run (ProtoNet: inductive)
        "seeds",
        "metric",
        "test_mean",
        "test_ci95",
        "test_std",
        "train_seconds_mean",
        "members",
        "incomplete_members",
    ]
    assert sorted(r["optimizer.lr"] for r in rows) == ["0.001", "0.002"]
    for row in rows:
        members = [sweep / n for n in row["members"].split()]
        assert {overrides_of(m)["seed"] for m in members} == {"0", "1"}
        assert all(overrides_of(m)["optimizer.lr"] == row["optimizer.lr"] for m in members)
        means = [summary_of(m)["test"]["mean"] for m in members]
        times = [summary_of(m)["train_seconds"] for m in members]
        assert row["seeds"] == "2"
        assert float(row["test_mean"]) == pytest.approx(statistics.mean(means), rel=1e-12)
        assert float(row["test_std"]) == pytest.approx(statistics.stdev(means), rel=1e-9)
        # Two seeds: t with one degree of freedom, 12.706, not the normal 1.96.
        expected = 12.7062 * statistics.stdev(means) / math.sqrt(2)
        assert float(row["test_ci95"]) == pytest.approx(expected, rel=1e-9)
        assert float(row["train_seconds_mean"]) == pytest.approx(statistics.mean(times))
        assert row["incomplete_members"] == ("4" if row["optimizer.lr"] == "0.002" else "")
    assert float(rows[0]["test_mean"]) >= float(rows[1]["test_mean"])


def test_markdown_report(reported) -> None:
    sweep, _ = reported
    text = (sweep / "report.md").read_text()
    assert text.startswith(f"# Sweep report: {sweep.name}\n")
    assert f"- sweep: {sweep.resolve()}" in text
    assert "- members: 5 (4 complete, 1 without a complete summary.json)" in text
    assert "- test metric: acc (higher is better); rows sorted by best test score first" in text
    configs, members = text.index("## By configuration"), text.index("## Members")
    fixed = text[:configs]  # the settings every member shares, above the tables
    assert "dataset.ways=3" in fixed and "optimizer.lr=" not in fixed and "resume" not in text
    assert configs < members < text.index("## Validation curves")
    section = text[members:].split("\n## ", 2)[0]  # the members table, not the comparisons'
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table[0].split("|")[1:-1] == [
        " member ",
        " optimizer.lr ",
        " seed ",
        " status     ",
        " inference ",
        " test acc (95% CI) ",
        " best val acc ",
        " steps ",
        " train time ",
    ]
    for line in table[2:]:
        cells = [c.strip() for c in line.split("|")[1:-1]]
        if cells[3] == "complete":
            test = summary_of(sweep / cells[0])["test"]
            assert cells[4] == "inductive"  # ProtoNet, as measured
            assert cells[5] == f"{test['mean']:.1f} ± {test['ci95']:.1f}"
    assert [c.strip() for c in table[-1].split("|")[1:-1]][:4] == ["4", "0.002", "2", "incomplete"]
    for plot in ("val_acc.png", "val_acc_by_config.png"):
        assert f"![{plot[:-4]}]({plot})" in text


def test_plots_are_valid_pngs(reported) -> None:
    sweep, _ = reported
    for name in ("val_acc.png", "val_acc_by_config.png"):
        assert (sweep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(sweep / name) as image:
            image.verify()
        with Image.open(sweep / name) as image:
            assert image.size[0] > 400 and image.size[1] > 200


def test_out_dir_and_member_order(reported, tmp_path, capsys) -> None:
    sweep, _ = reported
    before = (sweep / "report.md").read_bytes()
    out = tmp_path / "elsewhere" / "report"
    main([str(sweep), "--out", str(out), "--sort", "member"])  # in-process: no second startup
    assert capsys.readouterr().out.endswith(f"to {out}\n")
    assert sorted(p.name for p in out.iterdir()) == sorted(expected_files(sweep))
    assert [r["member"] for r in read_csv(out / "report.csv")] == ["0", "1", "2", "3", "4"]
    assert "rows sorted by member number" in (out / "report.md").read_text()
    assert (sweep / "report.md").read_bytes() == before


def test_a_bad_path_is_one_line(tmp_path, run_command) -> None:
    missing = tmp_path / "outputs" / "multirun" / "nope"
    done = run_command("metarun-report", str(missing), cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"metarun-report: error: {missing} does not exist; give a directory written by "
        "`metarun -m`, such as outputs/multirun/<date>_<time>, that holds numbered member "
        "directories (0/, 1/, ...)"
    ]


def one_line_error(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("metarun-report: error: "), err
    return err[0]


def test_other_bad_input_is_one_line(tmp_path, capsys, member_writer) -> None:
    assert "x.txt does not exist" in one_line_error(capsys, str(tmp_path / "x.txt"))
    (tmp_path / "x.txt").write_text("")
    assert f"{tmp_path / 'x.txt'} is not a directory" in one_line_error(
        capsys, str(tmp_path / "x.txt")
    )
    assert "holds no member directories" in one_line_error(capsys, str(tmp_path))
    member_writer(tmp_path / "sweep", 0, ["seed=0"], test=(50.0, 1.0))
    line = one_line_error(capsys, str(tmp_path / "sweep"), "--out", str(tmp_path / "x.txt"))
    assert f"--out {tmp_path / 'x.txt'} is a file" in line
    line = one_line_error(capsys, str(tmp_path / "sweep"), "--sort", "fastest")
    assert "invalid choice: 'fastest'" in line and "--help" in line
    line = one_line_error(capsys, str(tmp_path / "sweep"), "--out", str(tmp_path / "x.txt" / "in"))
    assert f"cannot write the report to {tmp_path / 'x.txt' / 'in'} (Not a directory)" in line
    assert "required: SWEEP_DIR" in one_line_error(capsys)
