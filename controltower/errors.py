"""The project's error base class and the few errors every room shares.

Messages say what, where and what was expected; the CLI prints `str(error)` as one line.
"""

from __future__ import annotations


class ControlTowerError(Exception):
    """Base class for every error this project raises on purpose."""


class ConfigError(ControlTowerError):
    """A setting or a configuration file is invalid; the message names the key and the value."""


class StorageUnavailable(ControlTowerError):
    """The database cannot be reached right now; callers answer 503 and retry later."""


class EventError(ControlTowerError):
    """One record is not a valid canonical event; the message names the field."""
