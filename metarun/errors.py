"""Errors a user can fix by changing their input.

The CLI prints these as one line and exits with status 2, without a traceback: the message
names the config key or file at fault and what would be valid. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations


class MetarunError(Exception):
    """Bad input: a config value, a data folder or a checkpoint the user can fix."""


class ConfigError(MetarunError):
    """A config key holds a value that cannot work."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class DataError(MetarunError):
    """A data set is missing, incomplete or corrupt on disk."""


class CheckpointError(MetarunError):
    """A checkpoint cannot be read or does not belong to this run."""
