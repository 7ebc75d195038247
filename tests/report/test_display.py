from __future__ import annotations

from metarun.report.display import clock, config_table, header_lines, member_table, score
from metarun.report.files import members_csv
from metarun.report.members import collect_sweep
from metarun.report.tables import build_report


def test_numbers_print_as_the_run_prints_them() -> None:
    assert score("acc", 97.93) == "97.9" and score("mse", 0.22749) == "0.227"
    assert [clock(s) for s in (None, 0.44, 59.9, 59.97, 754.0, 3723.0)] == [
        "",
        "0.4 s",
        "59.9 s",
        "1:00",
        "12:34",
        "1:02:03",
    ]


def test_member_table(seed_sweep) -> None:
    table = member_table(build_report(collect_sweep(seed_sweep)))
    assert table.headers == [
        "member",
        "optimizer.lr",
        "seed",
        "status",
        "test acc (95% CI)",
        "best val acc",
        "steps",
        "train time",
    ]
    assert table.rows[0] == ["4", "0.01", "1", "complete", "97.0 ± 0.5", "84.0 @ 4", "4", "50.0 s"]
    assert table.rows[-1] == ["5", "0.01", "2", "incomplete", "", "85.0 @ 4", "4", ""]
    assert table.faint == [False] * 5 + [True]


def test_config_table(seed_sweep) -> None:
    table = config_table(build_report(collect_sweep(seed_sweep)))
    assert table.headers == [
        "optimizer.lr",
        "seeds",
        "test acc (95% CI over seeds)",
        "train time",
        "members",
    ]
    # 96.5 ± 12.7062 * std([96, 97]) / sqrt(2) = 6.35; 93.0 ± 4.3027 * sqrt(7) / sqrt(3) = 6.57
    assert table.rows == [
        ["0.01", "2", "96.5 ± 6.4", "45.0 s", "3, 4; incomplete: 5"],
        ["0.001", "3", "93.0 ± 6.6", "20.0 s", "0, 1, 2"],
    ]


def test_mixed_metrics_name_theirs_in_each_cell(tmp_path, member_writer) -> None:
    member_writer(tmp_path, 0, ["dataset=omniglot"], test=(91.0, 0.5), curve=[(2, 90.0)])
    member_writer(
        tmp_path, 1, ["dataset=sinusoid"], test=(0.25, 0.02), metric="mse", curve=[(2, 0.3)]
    )
    report = build_report(collect_sweep(tmp_path))
    table = member_table(report)
    assert table.headers[3:5] == ["test (95% CI)", "best val"]
    assert [row[3] for row in table.rows] == ["acc 91.0 ± 0.5", "mse 0.250 ± 0.020"]
    assert "test metric: acc (higher is better), mse (lower is better)" in "\n".join(
        header_lines(report)
    )


def test_header_lines(seed_sweep) -> None:
    lines = header_lines(build_report(collect_sweep(seed_sweep), sort="member"))
    assert lines == [
        f"sweep: {seed_sweep.resolve()}",
        "members: 6 (5 complete, 1 without a complete summary.json)",
        "test metric: acc (higher is better); rows sorted by member number",
        "same in every member: experiment=omniglot_sample logger=none",
    ]


def test_an_optuna_result_is_quoted(tmp_path, member_writer) -> None:
    member_writer(tmp_path, 0, ["optimizer.lr=0.0123"], test=(48.0, 1.0))
    member_writer(tmp_path, 1, ["optimizer.lr=0.0456"], test=(47.0, 1.0))
    (tmp_path / "optimization_results.yaml").write_text(
        "name: optuna\nbest_params:\n  optimizer.lr: 0.0123\nbest_value: 48.5\n"
    )
    lines = header_lines(build_report(collect_sweep(tmp_path)))
    assert lines[-1] == "Optuna's best (optimization_results.yaml): optimizer.lr=0.0123 -> 48.5"


def test_multi_source_members_show_each_sources_result(tmp_path, member_writer) -> None:
    member_writer(
        tmp_path,
        0,
        ["algorithm=protonet"],
        test=(70.0, 1.0),
        sources={"kanji": (80.0, 1.2, False), "omniglot": (60.0, 1.5, True)},
    )
    member_writer(
        tmp_path,
        1,
        ["algorithm=cnaps"],
        test=(65.0, 1.1),
        sources={"kanji": (78.0, 1.3, False), "omniglot": (52.5, 1.6, True)},
    )
    report = build_report(collect_sweep(tmp_path))
    table = member_table(report)
    assert table.headers[3:6] == ["test acc (95% CI)", "kanji (in domain)", "omniglot (held out)"]
    by_member = {row[0]: row for row in table.rows}
    assert by_member["0"][3:6] == ["70.0 ± 1.0", "80.0 ± 1.2", "60.0 ± 1.5"]
    assert by_member["1"][3:6] == ["65.0 ± 1.1", "78.0 ± 1.3", "52.5 ± 1.6"]
    csv_header = members_csv(report).splitlines()[0].split(",")
    assert csv_header[7:11] == [
        "test_kanji_mean",
        "test_kanji_ci95",
        "test_omniglot_mean",
        "test_omniglot_ci95",
    ]
