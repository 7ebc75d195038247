from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from metarun.report.members import collect_sweep
from metarun.report.plots import seed_mean_curve, write_plots
from metarun.report.tables import build_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.read_bytes().startswith(PNG_SIGNATURE), path
    with Image.open(path) as image:
        image.verify()  # a truncated or corrupt file raises
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 200


def test_seed_mean_curve_averages_the_steps_every_seed_reached(tmp_path, member_writer) -> None:
    member_writer(tmp_path, 0, ["seed=0"], test=(1.0, 0.1), curve=[(2, 40.0), (4, 60.0)])
    member_writer(tmp_path, 1, ["seed=1"], test=(1.0, 0.1), curve=[(2, 50.0), (4, 70.0), (6, 9.0)])
    member_writer(tmp_path, 2, ["seed=2"], curve=[(2, 0.0)])  # incomplete: not averaged
    (row,) = build_report(collect_sweep(tmp_path)).configs
    steps, mean, low, high = seed_mean_curve(row)
    assert steps == [2, 4]
    assert mean == pytest.approx([45.0, 65.0])
    assert (low, high) == ([40.0, 60.0], [50.0, 70.0])


def test_one_plot_per_metric_and_one_by_configuration(tmp_path, seed_sweep) -> None:
    written = write_plots(build_report(collect_sweep(seed_sweep)), tmp_path)
    assert [p.name for p in written] == ["val_acc.png", "val_acc_by_config.png"]
    for path in written:
        assert_png(path)


def test_a_sweep_over_data_sets_gets_a_plot_per_metric(tmp_path, member_writer) -> None:
    sweep = tmp_path / "sweep"
    member_writer(sweep, 0, ["dataset=omniglot"], test=(91.0, 0.5), curve=[(2, 80.0), (4, 90.0)])
    member_writer(sweep, 1, ["dataset=sinusoid"], metric="mse", curve=[(2, 0.9), (4, 0.5)])
    member_writer(sweep, 2, ["dataset=omniglot"])  # nothing logged yet: no line, no error
    written = write_plots(build_report(collect_sweep(sweep)), tmp_path / "out")
    assert [p.name for p in written] == ["val_acc.png", "val_mse.png"]
    for path in written:
        assert_png(path)


def test_no_validation_yet_means_no_plot(tmp_path, member_writer) -> None:
    member_writer(tmp_path, 0, ["seed=0"], steps=3)
    member_writer(tmp_path, 1, ["seed=1"])
    assert write_plots(build_report(collect_sweep(tmp_path)), tmp_path) == []


def test_many_members_still_plot(tmp_path, member_writer) -> None:
    for number in range(25):  # more lines than a legend can hold
        member_writer(
            tmp_path,
            number,
            [f"optimizer.lr={number / 100}"],
            test=(50.0, 1.0),
            curve=[(1, number), (2, number + 1.0)],
        )
    (path,) = write_plots(build_report(collect_sweep(tmp_path)), tmp_path)
    assert_png(path)
