from __future__ import annotations

import logging
from pathlib import Path

import pytest

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
