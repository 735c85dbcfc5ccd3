"""SQLAlchemy Core mirrors of the migrated schema: the only contract between the rooms.

One MetaData for every table. Each module holds the tables of one writing room; a test
reflects the migrated database and fails when these mirrors drift from the migrations.
"""

from controltower.schema import (  # noqa: F401  (registers tables)
    alerts,
    brokers,
    events,
    exceptions,  # noqa: F401  (registers tables: 0016)
    metrics,
    replay,
)
from controltower.schema.base import metadata

__all__ = ["metadata"]
