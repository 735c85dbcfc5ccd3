"""Hand-built event sets for SLA tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from collectors.store import EventStore

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)


def ev(cid: str, milestone: str, at: datetime, *, channel: str = "amazon", status: str = "ok", n: int = 0, **attributes: Any) -> dict[str, Any]:
    flow, stage = milestone.split(".")
    return {
        "event_id": f"{cid}:{milestone}:{n}", "occurred_at": at.isoformat(), "correlation_id": cid,
        "order_id": f"SO-{cid}", "channel": channel, "flow": flow, "stage": stage, "status": status,
        "system": "middleware", "attributes": attributes,
    }


def ingest(engine, settings, records: list[dict[str, Any]], *, now: datetime = NOW) -> None:
    result = EventStore(engine, settings).ingest(records, source="test", now=now)
    assert not result.rejected, result.rejected


def minutes(m: float) -> timedelta:
    return timedelta(minutes=m)
