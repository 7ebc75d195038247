"""Shared fixtures for the whole test suite.

Data fixtures: ``omniglot_sample_root`` is the real Omniglot sample that ships next to the
repository (``../shared/data/omniglot``), and ``data_cache_dir`` a session-wide cache directory,
so the sample is decoded once per session and nothing is written to the user's ``~/.cache``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY_ALGORITHM, TINY_SETTINGS

OMNIGLOT_SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"
OMNIGLOT_SAMPLE_FOLDERS = ("images_background_small1", "images_background_small2")


@pytest.fixture(scope="session")
def omniglot_sample_root() -> Path:
    """The real Omniglot sample (both small background folders); a hard failure if absent."""
    missing = [f for f in OMNIGLOT_SAMPLE_FOLDERS if not (OMNIGLOT_SAMPLE / f).is_dir()]
    if missing:
        pytest.fail(
            f"the Omniglot sample is missing: expected {', '.join(missing)} under "
            f"{OMNIGLOT_SAMPLE} (the shared data directory next to the repository)",
            pytrace=False,
        )
    return OMNIGLOT_SAMPLE


@pytest.fixture(scope="session")
def data_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A decoded-data cache shared by every test of the session (never ``~/.cache``)."""
    return tmp_path_factory.mktemp("metarun-data-cache")


@pytest.fixture(scope="session", autouse=True)
def _never_the_users_cache(data_cache_dir: Path) -> Iterator[None]:
    """Every test, and every ``metarun`` process a test starts, caches data in the session's
    directory: a test that forgets ``dataset.cache_dir`` must not fill ``~/.cache``."""
    previous = os.environ.get("METARUN_CACHE_DIR")
    os.environ["METARUN_CACHE_DIR"] = str(data_cache_dir)
    yield
    if previous is None:
        os.environ.pop("METARUN_CACHE_DIR", None)
    else:
        os.environ["METARUN_CACHE_DIR"] = previous


@pytest.fixture(autouse=True)
def _autograd_left_on() -> Iterator[None]:
    """A test (or a script's ``main`` it calls in process) that switches autograd off globally
    would break every later test that trains; fail the test that did it, and switch it back."""
    yield
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("the test left autograd disabled (torch.set_grad_enabled(False))")


@pytest.fixture
def isolated_data_cache(data_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default cache (``METARUN_CACHE_DIR``) at ``data_cache_dir`` for one test, so
    code that forgets to pass ``cache_dir`` still never writes to the user's home."""
    monkeypatch.setenv("METARUN_CACHE_DIR", str(data_cache_dir))
    return data_cache_dir


# -- Whole runs, kept tiny ------------------------------------------------------------------
TINY_RUN = ("experiment=omniglot_sample", *TINY_SETTINGS)  # on the real sample


@pytest.fixture(scope="session")
def tiny_overrides(omniglot_sample_root: Path, data_cache_dir: Path):
    """``tiny_overrides("maml", "seed=1")``: command-line overrides for a seconds-long run."""

    def overrides(algorithm: str, *extra: str) -> list[str]:
        return [
            *TINY_RUN,
            *TINY_ALGORITHM[algorithm],
            f"dataset.root={omniglot_sample_root}",
            f"dataset.cache_dir={data_cache_dir}",
            *extra,
        ]

    return overrides


class RecordedPlans(dict):
    """The plans of every ``FixedEpisodes`` that ``run.py`` draws, listed under ``label``."""

    label: str | None = None


@pytest.fixture
def fixed_plans(monkeypatch: pytest.MonkeyPatch) -> RecordedPlans:
    """Record the fixed validation and test plans of the runs a test makes: set
    ``fixed_plans.label`` before each run; its plans are ``fixed_plans[label]``."""
    from metarun import run as run_module
    from metarun.data.episodes import FixedEpisodes

    plans = RecordedPlans()

    class Recording(FixedEpisodes):
        def __init__(self, sampler, count, seed):
            super().__init__(sampler, count, seed)
            plans.setdefault(plans.label, []).append(self.plan)

    monkeypatch.setattr(run_module, "FixedEpisodes", Recording)
    return plans


@pytest.fixture(scope="session")
def compose_config():
    """Compose the shipped config tree with overrides, as the CLI would (no Hydra run)."""
    from hydra import compose, initialize_config_dir

    from metarun.cli import CONFIG_DIR

    def composed(overrides: list[str]):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)

    return composed
