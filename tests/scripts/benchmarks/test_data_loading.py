"""scripts/benchmarks/data_loading.py: a sampler's episodes/s beside training's, on one tiny
layout instead of the data sets' real ones (which take gigabytes), without the cache builds."""

from __future__ import annotations

from pathlib import Path

from script_modules import load_benchmark

data_loading = load_benchmark("data_loading")


def test_the_sampler_table_runs_on_a_tiny_layout(monkeypatch, capsys) -> None:
    monkeypatch.setattr(data_loading, "LAYOUTS", (data_loading.Layout("tiny", 5, 16, 1, 28),))
    monkeypatch.setattr(data_loading, "EPISODES", 2)
    data_loading.main(["--device", "cpu", "--repeats", "1", "--no-caches"])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| tiny |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:3] == ["tiny", "5x16x1x28²", "cpu"], row
    assert all(float(cell.replace(",", "")) > 0 for cell in cells[3:5]), row
    assert cells[5].endswith("x") and "cache builds" not in out
    assert "total wall time" in out


def test_the_omniglot_sample_is_looked_for_beside_the_repository() -> None:
    repository = Path(__file__).resolve().parents[3]
    assert data_loading.OMNIGLOT_SAMPLE == repository.parent / "shared" / "data" / "omniglot"
