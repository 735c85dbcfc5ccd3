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
from controltower import identity
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


# A report's order number is found when any member of a business transaction of the channel
# (its business channel) carries it as an order key: the ERP's trace may be the only one that
# does. Three reads Citus routes: the keys by value (transaction_keys' primary key), their
# transactions' businesses by correlation id (primary key), those businesses' channels
# (transactions_business_idx).
_HOLDERS = sa.text("""
SELECT DISTINCT k.value, k.correlation_id FROM transaction_keys k
WHERE k.value = ANY(CAST(:ids AS text[])) AND k.kind = ANY(CAST(:kinds AS text[]))
""")
_BUSINESS_OF = sa.text("""
SELECT correlation_id, business_id FROM transactions WHERE correlation_id = ANY(CAST(:cids AS text[]))
""")
_CHANNELS = sa.text("""
SELECT t.business_id FROM transactions t WHERE t.business_id = ANY(CAST(:bids AS text[]))
GROUP BY t.business_id HAVING """ + identity.BUSINESS_CHANNEL + """ = :channel
""")  # noqa: S608 (constant fragments, no input)


def _found(conn: Connection, ids: list[str], channel: str) -> set[str]:
    holders = conn.execute(_HOLDERS, {"ids": ids, "kinds": list(_funnel.ORDER_KINDS)}).all()
    if not holders:
        return set()
    business = dict(conn.execute(_BUSINESS_OF, {"cids": sorted({h.correlation_id for h in holders})}).tuples().all())
    if not business:
        return set()
    ours = set(conn.execute(_CHANNELS, {"bids": sorted(set(business.values())), "channel": channel}).scalars())
    return {h.value for h in holders if business.get(h.correlation_id) in ours}


def reconcile(conn: Connection, report: Report, *, channel: str, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    """Orders in the channel's report we never saw, and orders we saw that it lacks: both
    counted per business transaction (an order whose number only the ERP's trace carries is
    found; an order received under two traces is one extra at most)."""
    ids = list(report.orders)
    found = _found(conn, ids, channel)
    missing = [{"order": o, "line": report.orders[o]} for o in ids if o not in found]
    since = since or report.since
    until = until or (report.until + timedelta(seconds=1) if report.until else None)
    extra: list[dict[str, Any]] = []
    if since is not None and until is not None:
        for r in _funnel.received(conn, channel=channel, start=since, end=until):
            if not any(number in report.orders for number in r["order_numbers"]):
                extra.append({"correlation_id": r["correlation_id"], "correlation_ids": r["correlation_ids"],
                              "order_id": r["order_id"], "external_order_id": r["external_order_id"],
                              "received_at": r["reached_at"].isoformat()})
    return {
        "channel": channel, "report": str(report.path), "report_orders": len(ids), "matched": len(ids) - len(missing),
        "missing": missing, "extra": extra,
        "since": since.isoformat() if since else None, "until": until.isoformat() if until else None,
    }
