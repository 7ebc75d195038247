"""``logger=none``: a logger that records nothing, so no code path asks ``if logger:``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class NullLogger:
    def __init__(self, **_: Any) -> None:
        pass

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def image(self, name: str, png: bytes, step: int) -> None:
        pass

    def checkpoint(self, path: Path, metadata: dict[str, Any]) -> None:
        pass

    def table(self, name: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        pass

    def preempting(self) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass
