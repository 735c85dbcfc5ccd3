"""What a process hands each room: the frozen settings and the database engine.

Built once by a composition root (`serve`, `scheduler`, the dashboard, a CLI command).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine

from controltower.db import engine_from_settings
from controltower.settings import Settings


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    engine: Engine

    @classmethod
    def open(cls, settings: Settings, *, pool_size: int = 5, application_name: str = "controltower") -> AppContext:
        return cls(settings, engine_from_settings(settings, pool_size=pool_size, application_name=application_name))
