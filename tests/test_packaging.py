"""The wheel carries the configs, and the command works from any directory once installed."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_a_plain_install_ships_the_configs_and_runs_elsewhere(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("metarun-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in REPO.joinpath("configs").rglob("*.yaml"):
        assert f"metarun/configs/{config.relative_to(REPO / 'configs').as_posix()}" in names
    assert "metarun/data/splits/omniglot_vinyals.json" in names
    assert "metarun/report/cli.py" in names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "metarun-report = metarun.report.cli:main" in scripts

    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    program = (
        "import sys, metarun.cli as cli; print(cli.CONFIG_DIR, file=sys.stderr); "
        "sys.argv = ['metarun', '--cfg', 'job', 'algorithm=protonet']; cli.main()"
    )
    shown = subprocess.run(
        [sys.executable, "-c", program], cwd=elsewhere, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(target)}, timeout=300,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr.strip().startswith(str(target / "metarun" / "configs"))
    assert yaml.safe_load(shown.stdout)["algorithm"]["train_ways"] == 60
