"""Alerting's record of itself (`alert_evaluations`): the last successful cycle, each rule's last error.

Written by the evaluator at the end of every cycle, in the cycle's transaction: the cycle row
(`rule = ''`) gets the time of the last successful cycle and the evaluation interval; each rule
gets its last success or its error (`failing_since`, `consecutive_failures`), and the impact
amounts it ignored are added up. A cycle that fails as a whole is recorded in a transaction of
its own. Read through `controltower.alertops.evaluation_health` and `alerts.selfmetrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine

from controltower.schema.alerts import alert_evaluations

log = logging.getLogger(__name__)

CYCLE = ""  # the row of the evaluation cycle as a whole
MAX_ERROR = 300


def describe(exc: BaseException) -> str:
    """One line naming the error, short: an error quoting a hostile value must not store it whole."""
    first = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def _upsert(conn: Connection, rows: list[dict[str, object]], **changes: object) -> None:
    """Insert `rows`; for a rule already recorded, set the run fields and `changes`."""
    t = alert_evaluations
    stmt = insert(t)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[t.c.rule],
            set_={
                "last_run_at": stmt.excluded.last_run_at,
                "interval_seconds": sa.func.coalesce(stmt.excluded.interval_seconds, t.c.interval_seconds),
                **changes,
            },
        ),
        rows,
    )


def _succeeded(conn: Connection, rows: list[dict[str, object]]) -> None:
    t, new = alert_evaluations, insert(alert_evaluations).excluded
    _upsert(conn, rows, last_success_at=new.last_success_at, failing_since=None, consecutive_failures=0,
            ignored_amounts_total=t.c.ignored_amounts_total + new.ignored_amounts_total)


def _failed(conn: Connection, rows: list[dict[str, object]]) -> None:
    t, new = alert_evaluations, insert(alert_evaluations).excluded
    _upsert(conn, rows, last_error=new.last_error, last_error_at=new.last_error_at,
            failing_since=sa.func.coalesce(t.c.failing_since, new.failing_since),
            consecutive_failures=t.c.consecutive_failures + 1)


def record_cycle(
    conn: Connection,
    now: datetime,
    rules: Sequence[str],
    failures: Mapping[str, str],
    ignored: Mapping[str, int],
    interval_seconds: float | None,
) -> None:
    """A completed cycle: its time, every rule's outcome; rules no longer in the file are forgotten."""
    ok = [
        {"rule": name, "last_run_at": now, "last_success_at": now, "consecutive_failures": 0,
         "ignored_amounts_total": int(ignored.get(name, 0)), "interval_seconds": None}
        for name in rules if name not in failures
    ]
    ok.append({"rule": CYCLE, "last_run_at": now, "last_success_at": now, "consecutive_failures": 0,
               "ignored_amounts_total": 0, "interval_seconds": interval_seconds})
    _succeeded(conn, ok)
    if failures:
        _failed(conn, [
            {"rule": name, "last_run_at": now, "last_error": error, "last_error_at": now, "failing_since": now,
             "consecutive_failures": 1, "interval_seconds": None}
            for name, error in sorted(failures.items())
        ])
    conn.execute(
        alert_evaluations.delete().where(
            alert_evaluations.c.rule != CYCLE, alert_evaluations.c.rule.not_in(list(rules))
        )
    )


def record_cycle_failure(engine: Engine, now: datetime, error: str, interval_seconds: float | None) -> None:
    """A cycle that failed as a whole (its transaction rolled back): say so in a transaction of its own."""
    try:
        with engine.begin() as conn:
            _failed(conn, [{"rule": CYCLE, "last_run_at": now, "last_error": error, "last_error_at": now,
                            "failing_since": now, "consecutive_failures": 1, "interval_seconds": interval_seconds}])
    except sa.exc.SQLAlchemyError as exc:  # the database itself is gone: the stale last_success_at tells it
        log.warning("could not record the failed alert evaluation cycle: %s", describe(exc))
