"""Reconciliation: a channel's own order report vs what we collected (the funnel is in the core).

A webhook subscription silently removed (Shopify drops one after 8 failed retries over 4 h)
leaves no error anywhere: only comparing the channel's order report with what was collected
shows the orders we never saw. The reverse (orders we have that the channel does not) finds
test orders, duplicates and orders from the wrong account.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from controltower import funnel as _funnel
from controltower.errors import ConfigError

ORDER_COLUMNS = ("external_order_id", "amazon-order-id", "order-id", "order_id", "order number", "ordernumber", "purchase order number", "name")
DATE_COLUMNS = ("purchase-date", "purchase_date", "order_date", "order date", "created_at", "order-date", "date")


@dataclass
class Report:
    """A channel's order report: order numbers and the time span it covers."""

    path: Path
    orders: dict[str, int] = field(default_factory=dict)  # order number -> line
    since: datetime | None = None
    until: datetime | None = None


def read_report(path: Path, *, column: str | None = None) -> Report:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    dialect = csv.excel_tab if text.split("\n", 1)[0].count("\t") > text.split("\n", 1)[0].count(",") else csv.excel
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    headers = {h.strip().lower(): h for h in reader.fieldnames or []}
    if not headers:
        raise ConfigError(f"{path}: empty report (no header row)")
    wanted = column.lower() if column else next((c for c in ORDER_COLUMNS if c in headers), None)
    if wanted is None or wanted not in headers:
        raise ConfigError(f"{path}:1: no order number column (looked for {column or ', '.join(ORDER_COLUMNS)}; use --column)")
    date_column = next((headers[c] for c in DATE_COLUMNS if c in headers), None)
    report = Report(path)
    for row in reader:
        value = (row.get(headers[wanted]) or "").strip()
        if not value:
            raise ConfigError(f"{path}:{reader.line_num}: empty order number")
        report.orders.setdefault(value, reader.line_num)
        if date_column and row.get(date_column):
            try:
                moment = datetime.fromisoformat(row[date_column].strip().replace("Z", "+00:00"))
            except ValueError:
                raise ConfigError(f"{path}:{reader.line_num}: {date_column}: {row[date_column]!r} is not a date/time") from None
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            report.since = min(report.since or moment, moment)
            report.until = max(report.until or moment, moment)
    return report


def reconcile(conn: Connection, report: Report, *, channel: str, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    """Orders in the channel's report we never saw, and orders we saw that it lacks."""
    ids = list(report.orders)
    found = {
        r.value
        for r in conn.execute(
            sa.text("""
                SELECT DISTINCT k.value FROM transaction_keys k JOIN transactions t ON t.correlation_id = k.correlation_id
                WHERE k.value = ANY(:ids) AND k.kind IN ('external_order_id', 'order_id') AND t.channel = :channel
            """),
            {"ids": ids, "channel": channel},
        )
    }
    missing = [{"order": o, "line": report.orders[o]} for o in ids if o not in found]
    since = since or report.since
    until = until or (report.until + timedelta(seconds=1) if report.until else None)
    extra: list[dict[str, Any]] = []
    if since is not None and until is not None:
        ours = conn.execute(
            sa.text("""
                SELECT r.correlation_id, t.order_id, r.reached_at,
                       (SELECT min(k.value) FROM transaction_keys k
                        WHERE k.correlation_id = r.correlation_id AND k.kind = 'external_order_id') AS external_order_id
                FROM transaction_milestones r JOIN transactions t ON t.correlation_id = r.correlation_id
                WHERE r.milestone = :first AND r.channel = :channel AND r.reached_at >= :since AND r.reached_at < :until
            """),
            {"channel": channel, "since": since, "until": until, "first": _funnel.MILESTONES[0]},
        )
        for r in ours:
            if r.external_order_id not in report.orders and r.order_id not in report.orders:
                extra.append({"correlation_id": r.correlation_id, "order_id": r.order_id,
                              "external_order_id": r.external_order_id, "received_at": r.reached_at.isoformat()})
    return {
        "channel": channel, "report": str(report.path), "report_orders": len(ids), "matched": len(ids) - len(missing),
        "missing": missing, "extra": extra,
        "since": since.isoformat() if since else None, "until": until.isoformat() if until else None,
    }
