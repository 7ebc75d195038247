from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from cli_helpers import metarun

from metarun.errors import ConfigError
from metarun.tracking import wandb as wandb_logger
from metarun.tracking.logger import RunIdentity
from metarun.tracking.wandb import WandbLogger, has_credentials, resolve_mode

IDENTITY = RunIdentity("abc123def456", "algorithm=maml", "sweep-1", "maml")


@pytest.fixture
def no_credentials(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "empty-netrc"))


def test_credentials_come_from_the_environment_or_netrc(monkeypatch, tmp_path, no_credentials):
    assert not has_credentials()
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai login user password 0123456789abcdef\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert has_credentials()
    monkeypatch.setenv("NETRC", str(tmp_path / "empty-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert has_credentials()


def test_auto_and_online_fall_back_to_offline_without_credentials(no_credentials) -> None:
    assert resolve_mode("auto") == "offline"
    assert resolve_mode("online") == "offline"  # never a login prompt
    assert resolve_mode("disabled") == "disabled"
    with pytest.raises(ConfigError, match="logger.mode"):
        resolve_mode("sometimes")


def test_offline_run_writes_files_with_group_and_config(tmp_path, no_credentials, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="metarun"):
        logger = WandbLogger(IDENTITY, tmp_path, {"seed": 3, "algorithm": {"inner_lr": 0.4}})
    assert any("wandb sync" in r.getMessage() for r in caplog.records)
    assert logger.run is not None
    assert logger.run.group == "sweep-1" and logger.run.job_type == "maml"
    assert logger.run.name == "algorithm=maml" and logger.run.id == "abc123def456"
    assert logger.run.config["algorithm"]["inner_lr"] == 0.4
    logger.log({"train/loss": 1.0}, step=1)
    logger.summary({"test/acc": 90.0})
    logger.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*-abc123def456"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_a_picture_is_logged_as_a_wandb_image(tmp_path, no_credentials, caplog) -> None:
    from metarun.pictures import new_figure, png_bytes

    figure = new_figure(1, 1)
    figure.add_subplot().plot([0, 1], [1, 0])
    logger = WandbLogger(IDENTITY, tmp_path, {})
    with caplog.at_level(logging.WARNING):
        logger.image("val/samples", png_bytes(figure, dpi=30), step=5)
        logger.image("val/samples", b"not a png", step=6)  # a broken picture: a warning
    logger.finish()
    (run,) = (tmp_path / "wandb").glob("offline-run-*-abc123def456")
    assert len(list((run / "files" / "media" / "images" / "val").glob("samples_*.png"))) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("could not log the picture val/samples" in w for w in warnings)


def test_a_failing_wandb_is_a_warning_not_a_crash(tmp_path, no_credentials, monkeypatch, caplog):
    import wandb

    def broken_init(**_):
        raise RuntimeError("service unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING):
        logger = WandbLogger(IDENTITY, tmp_path, {}, mode="offline")
    assert logger.run is None
    assert "service unreachable" in caplog.text
    logger.log({"a": 1.0}, 1)  # all no-ops now
    logger.summary({})
    logger.finish()


def test_a_failure_mid_run_disables_wandb(tmp_path, no_credentials, caplog) -> None:
    class FlakyRun:
        finished = False

        def log(self, *_, **__):
            raise OSError("disk full")

        def finish(self, exit_code=0):
            FlakyRun.finished = True

    logger = WandbLogger(IDENTITY, tmp_path, {}, mode="disabled")
    logger.run = FlakyRun()
    with caplog.at_level(logging.WARNING):
        logger.log({"a": 1.0}, 1)
    assert logger.run is None and FlakyRun.finished and "disk full" in caplog.text


def test_disabled_mode_starts_nothing(tmp_path) -> None:
    logger = WandbLogger(IDENTITY, tmp_path, {}, mode="disabled")
    assert logger.run is None and not (tmp_path / "wandb").exists()
    assert wandb_logger.MODES == ("auto", "online", "offline", "disabled")


def wandb_records(path: Path) -> list:
    """The records of a ``.wandb`` file: a 7-byte header, then LevelDB-log blocks of 32 KiB whose
    chunks (checksum, length, type) carry serialized ``Record`` protobufs."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B data file"
    records, pending, offset, block = [], b"", 7, 32768
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # a block's tail too short for a header is padding
            offset += block - offset % block
            continue
        length = int.from_bytes(data[offset + 4 : offset + 6], "little")
        kind = data[offset + 6]
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0:  # zero padding
            continue
        pending = chunk if kind in (1, 2) else pending + chunk  # full/first vs middle/last
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def test_a_sweep_member_offline_run_carries_group_name_config_and_artifact(
    tmp_path, tiny_overrides, no_credentials
) -> None:
    sweep_dir = tmp_path / "sweep-7"
    overrides = [o for o in tiny_overrides("protonet") if o != "logger=none"]
    done = metarun(
        "-m",
        *overrides,
        "logger.log_checkpoints=true",
        "seed=5",
        f"hydra.sweep.dir={sweep_dir}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    member = sweep_dir / "0"
    summary = json.loads((member / "summary.json").read_text())
    run_id = summary["wandb_run_id"]
    assert (member / "run_id").read_text().strip() == run_id
    (data_file,) = (member / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb")
    records = wandb_records(data_file)
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs and runs[0].run_group == "sweep-7" and runs[0].job_type == "protonet"
    assert "seed=5" in runs[0].display_name and runs[0].run_id == run_id
    config = {item.key: json.loads(item.value_json) for item in runs[0].config.update}
    assert config["seed"] == 5 and config["dataset"]["ways"] == 3  # resolved, not interpolated
    assert config["dataset"]["root"] == overrides[-2].split("=", 1)[1]
    summaries = [r.summary for r in records if r.WhichOneof("record_type") == "summary"]
    final = {item.key: json.loads(item.value_json) for s in summaries for item in s.update}
    assert final["test/acc"] == pytest.approx(summary["test"]["mean"])
    assert final["test/acc_ci95"] == pytest.approx(summary["test"]["ci95"])
    assert final["perf/episodes_per_s"] == pytest.approx(summary["episodes_per_s"])
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    tables = [a for a in artifacts if a.type == "run_table"]  # test/episodes, one row each
    assert len(tables) == 1 and "testepisodes" in tables[0].name
    artifacts = [a for a in artifacts if a.type != "run_table"]
    assert [(a.name, a.type) for a in artifacts] == [(f"model-{run_id}", "model")]
    metadata = json.loads(artifacts[0].metadata)
    assert metadata["test/acc"] == pytest.approx(summary["test"]["mean"])
