"""``metarun-dashboard``: the W&B view of a sweep, built offline (``--dry-run``)."""

from __future__ import annotations

import json

import pytest
import yaml

from metarun.report.workspace import main


def test_the_view_shows_curves_swept_keys_test_results_and_episodes(
    tmp_path, member_writer, capsys
) -> None:
    sweep = tmp_path / "2026-12-04_10-00-00-000000"
    for number, (lr, seed) in enumerate([(0.1, 0), (0.1, 1), (0.2, 0)]):
        member = member_writer(
            sweep, number, [f"optimizer.lr={lr}", f"seed={seed}"], test=(80.0, 1.0),
            curve=[(2, 50.0)],
        )  # fmt: skip
        config = {"logger": {"entity": "team", "project": "omniglot"}}
        (member / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    main([str(sweep), "--dry-run"])
    view = json.loads(capsys.readouterr().out)
    text = json.dumps(view)
    assert (view["entity"], view["project"]) == ("team", "omniglot")
    assert view["display_name"] == f"metarun sweep {sweep.name}"
    swept = ("config:swept.value.optimizer.lr", "config:swept.value.seed")  # W&B's accessors
    for shown in (*swept, "summary:test/acc_ci95", "val/best_acc"):
        assert shown in text, shown
    assert "test/episodes" in text and sweep.name in text  # the table; the group filter


def test_a_sweep_naming_no_entity_is_one_line(tmp_path, member_writer, capsys) -> None:
    member_writer(tmp_path, 0, ["seed=0"], test=(80.0, 1.0))
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path), "--dry-run"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("metarun-dashboard: error: --entity:")
