"""The metrics job, run by the scheduler's leader: rollups, then the SLA table and hop health.

`refresh(engine, definitions, now)` is also what `controltower sla --refresh`, the demo and the
tests call. The stored table (`sla_status` for the standard windows, `hop_health`) is what the
dashboard and the alert evaluator read.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Engine

from controltower.context import AppContext
from controltower.jobs import ScheduledJob
from controltower.schema.metrics import hop_health, sla_status
from controltower.settings import Settings
from metrics import compute, definitions, exceptionrules, exceptions, rollups, signals

log = logging.getLogger(__name__)
WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24)}
_STATUS_COLUMNS = [c.name for c in sla_status.columns]
REFRESH_STAGE = 10  # position in the scheduler's per-tick pipeline (alerts evaluate at 20, deliver at 30)


def load_definitions(settings: Any) -> definitions.Definitions:
    return definitions.load(settings.slas_file)


def refresh(engine: Engine, defs: definitions.Definitions, now: datetime, settings: Settings | None = None) -> dict[str, Any]:
    stats = rollups.refresh_rollups(engine, defs, now)
    stats |= signals.refresh(engine, defs, now, settings)  # orphans, duplicate orders (settings: grace, keys)
    rules = exceptionrules.load(settings.exceptions_file if settings is not None else None)
    stats |= exceptions.refresh(engine, defs, now, rules)  # the exception work queue: group, reopen, auto-resolve
    with engine.connect() as conn:
        tables = {name: compute.sla_table(conn, defs, window=window, now=now) for name, window in WINDOWS.items()}
    hops = compute.hop_health(defs, tables["1h"])
    with engine.begin() as conn:
        conn.execute(sla_status.delete())
        for name, table in tables.items():
            rows = [{k: v for k, v in r.items() if k in _STATUS_COLUMNS} | {"window": name, "computed_at": now} for r in table]
            if rows:
                conn.execute(insert(sla_status), rows)
        conn.execute(hop_health.delete())
        if hops:
            conn.execute(insert(hop_health), [h | {"computed_at": now} for h in hops])
    stats["sla_rows"] = sum(len(t) for t in tables.values())
    return stats


def jobs(context: AppContext) -> list[ScheduledJob]:
    defs = load_definitions(context.settings)
    definitions.publish(context.engine, defs)
    exceptionrules.load(context.settings.exceptions_file)  # a bad file stops the scheduler at start, naming the line

    def run(now: datetime) -> object:
        return refresh(context.engine, defs, now, context.settings)

    # First stage of the scheduler's per-tick pipeline: the alert evaluation after it reads this tick's table.
    return [ScheduledJob("metrics.refresh", run, context.settings.evaluation_interval, pipeline=REFRESH_STAGE)]


def stored_table(engine: Engine, window: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(sla_status).where(sla_status.c.window == window))]
