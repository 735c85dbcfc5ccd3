"""One transaction's SLA verdicts are the SLA table's, through every reader, and never crash.

The same verdicts through the function the dashboard uses (`controltower.transactions.get`),
the HTTP API (`GET /v1/transactions/{id}` on a real loopback server) and the CLI
(`controltower search --json`), against a real Postgres; expected values by hand.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controltower import migrate, transactions
from controltower.vocab import rfc3339
from metrics import compute, definitions, jobs
from tests.metrics.helpers import ev, ingest

DEFS = definitions.load()
H, MIN = timedelta(hours=1), timedelta(minutes=1)


@pytest.fixture
def cli(monkeypatch, database_url, capsys):
    from wiring.cli import main

    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", database_url)

    def run(*args: str) -> dict:
        capsys.readouterr()
        main(["search", *args, "--json"])
        return json.loads(capsys.readouterr().out)

    return run


def _story(engine, settings, now):
    start = now - 2 * H
    ingest(engine, settings, [
        # a store sale: acknowledged at the till, so order_acknowledgement does not apply
        ev("POS-1", "order.received", start, channel="pos"),
        ev("POS-1", "order.erp_posted", start + 10 * MIN, channel="pos"),
        # an Amazon order cancelled before the ERP posted it: nothing is owed any more
        ev("CXL-1", "order.received", start, channel="amazon", expected_ship_date=(now + 24 * H).date().isoformat()),
        ev("CXL-1", "order.acknowledged", start + 5 * MIN, channel="amazon"),
        ev("CXL-1", "cancellation.requested", start + 10 * MIN, channel="amazon"),
    ], now=now)
    definitions.publish(engine, DEFS)
    jobs.refresh(engine, DEFS, now)
    return start


def test_pos_and_cancelled_orders_are_judged_like_the_sla_table_everywhere(engine, settings, collector, cli):
    now = datetime.now(UTC).replace(microsecond=0)
    start = _story(engine, settings, now)
    pos = [{"sla": "erp_posting", "from": "order.received", "to": "order.erp_posted", "state": "met",
            "elapsed_ms": 600_000, "target_ms": 1_800_000, "due_at": rfc3339(start + 30 * MIN)}]
    cancelled = [
        {"sla": "erp_posting", "from": "order.received", "to": "order.erp_posted", "state": "closed",
         "elapsed_ms": 600_000, "target_ms": 1_800_000, "due_at": rfc3339(start + 30 * MIN),
         "closed_by": "cancellation.requested", "reason": "closed by cancellation.requested"},
        {"sla": "order_acknowledgement", "from": "order.received", "to": "order.acknowledged", "state": "met",
         "elapsed_ms": 300_000, "target_ms": 1_800_000, "due_at": rfc3339(start + 30 * MIN)},
        {"sla": "ship_by_expected_date", "from": "order.received", "to": "shipment.shipment_confirmed",
         "state": "closed", "elapsed_ms": 600_000, "target_ms": None,
         "due_at": rfc3339(datetime.combine((now + 24 * H).date(), datetime.max.time(), tzinfo=UTC)),
         "closed_by": "cancellation.requested", "reason": "closed by cancellation.requested"},
    ]
    with engine.connect() as conn:
        assert transactions.get(conn, "POS-1", now=now)["sla"] == pos
        assert transactions.get(conn, "CXL-1", now=now)["sla"] == cancelled
        # the SLA table agrees: neither order is an open breach or an open item of any SLA
        assert conn.execute(sa.text("SELECT count(*) FROM sla_open_items")).scalar() == 0
        assert [r["correlation_id"] for r in compute.open_breaches(conn, sla="order_acknowledgement", now=now)] == []
    for cid, expected in (("POS-1", pos), ("CXL-1", cancelled)):
        api = httpx.get(f"{collector.url}/v1/transactions/{cid}")
        assert api.status_code == 200 and api.json()["sla"] == expected
        assert cli(cid)["transaction"]["sla"] == expected


def test_pos_order_text_output_shows_no_acknowledgement(engine, settings, monkeypatch, database_url, capsys):
    from wiring.cli import main

    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", database_url)
    _story(engine, settings, datetime.now(UTC).replace(microsecond=0))
    capsys.readouterr()
    main(["search", "POS-1"])
    out = capsys.readouterr().out
    assert "SLA erp_posting: met" in out
    assert "order_acknowledgement" not in out and "overdue" not in out


BAD_PROMISES = {
    "Y1": "0001-01-01T00:00:00+05:00",  # before year 1 in UTC: not representable in Python
    "Y9999": "9999-12-31T23:00:00-05:00",  # year 10000 in UTC
    "GARBAGE": "next tuesday-ish",
}


def test_readers_never_crash_on_stored_out_of_range_or_garbage_deadlines(engine, settings, collector, cli):
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - 2 * H
    ingest(engine, settings, [ev(cid, "order.received", start, channel="amazon") for cid in BAD_PROMISES], now=now)
    with engine.begin() as conn:
        # stored by hand, as an older collector (or a restore) could have stored them
        for cid, raw in BAD_PROMISES.items():
            conn.execute(
                sa.text("UPDATE events SET attributes = attributes || jsonb_build_object('expected_ship_date', CAST(:raw AS text))"
                        " WHERE correlation_id = :cid"),
                {"cid": cid, "raw": raw},
            )
        for cid, due in (("Y1", "0001-01-01T00:00:00+05:00"), ("Y9999", "9999-12-31T23:00:00-05:00")):
            conn.execute(sa.text("INSERT INTO sla_deadlines VALUES ('ship_by_expected_date', :cid, CAST(:due AS timestamptz))"),
                         {"cid": cid, "due": due})
        conn.execute(sa.text(
            "INSERT INTO sla_open_items VALUES ('settlement', 'OLD', 'amazon', CAST(:s AS timestamptz), CAST(:d AS timestamptz))"),
            {"s": "0001-01-01T00:00:00+05:00", "d": "0001-01-02T00:00:00+05:00"})
    definitions.publish(engine, DEFS)
    jobs.refresh(engine, DEFS, now)  # the metrics job reads them too

    expected = {
        cid: {"sla": "ship_by_expected_date", "from": "order.received", "to": "shipment.shipment_confirmed",
              "state": "unjudged", "elapsed_ms": 7_200_000, "target_ms": None}
        for cid in BAD_PROMISES
    }
    with engine.connect() as conn:
        for cid, raw in BAD_PROMISES.items():
            verdict = next(v for v in transactions.get(conn, cid, now=now)["sla"] if v["sla"] == "ship_by_expected_date")
            reason = verdict.pop("reason")
            assert verdict == expected[cid]
            assert reason.startswith(f"expected_ship_date {raw!r} is ") and "ignored" in reason
        assert "invalid date" in next(
            v["reason"] for v in transactions.get(conn, "GARBAGE", now=now)["sla"] if v["sla"] == "ship_by_expected_date")
        # neither stored deadline became a due time: no open breach of the promise SLA
        assert compute.open_breaches(conn, sla="ship_by_expected_date", now=now) == []
        [old] = compute.open_breaches(conn, sla="settlement", now=now)
        assert old["started_at"] is None and old["due_at"] is None and old["age_ms"] is None
        assert old["reason"].startswith("invalid date")
        settlement = {r["sla"]: r for r in compute.sla_table(conn, DEFS, window=H, now=now, channel="amazon")}["settlement"]
        assert settlement["open_breaches"] == 1 and settlement["oldest_breach_ms"] is None
    for cid in BAD_PROMISES:
        api = httpx.get(f"{collector.url}/v1/transactions/{cid}")
        assert api.status_code == 200
        assert [v["state"] for v in api.json()["sla"] if v["sla"] == "ship_by_expected_date"] == ["unjudged"]
        assert cli(cid)["transaction"]["correlation_id"] == cid


def test_open_breaches_for_the_dashboard_all_slas_longest_overdue_first(engine):
    from controltower import breaches

    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    with engine.begin() as conn:
        for sla, cid, channel, started, due in (
            ("erp_posting", "A", "amazon", "2026-11-23T09:00:00Z", "2026-11-23T09:30:00Z"),
            ("order_acknowledgement", "B", "walmart", "2026-11-23T07:00:00Z", "2026-11-23T11:00:00Z"),
            ("erp_posting", "C", "amazon", "2026-11-23T11:50:00Z", "2026-11-23T12:20:00Z"),  # not yet due
            ("erp_posting", "D", "ebay", "0001-01-01T00:00:00+05:00", "0001-01-01T00:30:00+05:00"),  # stored garbage
        ):
            conn.execute(sa.text("INSERT INTO sla_open_items VALUES (:sla, :cid, :ch, CAST(:s AS timestamptz), CAST(:d AS timestamptz))"),
                         {"sla": sla, "cid": cid, "ch": channel, "s": started, "d": due})
        rows = breaches.open_breaches(conn, now=now, order="due")
        assert [(r["correlation_id"], r["sla"], r["age_ms"], r["overdue_ms"]) for r in rows] == [
            ("D", "erp_posting", None, None),
            ("A", "erp_posting", 3 * 3600_000, 150 * 60_000),
            ("B", "order_acknowledgement", 5 * 3600_000, 3600_000),
        ]
        assert rows[0]["reason"] == breaches.INVALID and "reason" not in rows[1]
        assert [r["correlation_id"] for r in breaches.open_breaches(conn, now=now, channel="walmart")] == ["B"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40)
    | st.sampled_from(["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00", "２０２６-１１-２５", "2026-11-25\u200b",
                       "2026-11-25T10:00:00+14:59", "-infinity", "infinity", "epoch", "1e400"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=5), children, max_size=3),
    max_leaves=20,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=json_values)
def test_any_stored_promise_gives_a_verdict_never_an_error(migrated_engine, value):
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    migrate.ensure_partitions(migrated_engine, {now.date()})
    with migrated_engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE events, transactions, transaction_milestones"))
        conn.execute(sa.text(
            "INSERT INTO transactions (correlation_id, channel, flow, first_event_at, first_event_id, last_event_at,"
            " last_event_id, status, last_milestone, event_count, error_count, retry_count, dead_letter_count, updated_at,"
            " business_id) VALUES ('H1', 'amazon', 'order', :at, 'e1', :at, 'e1', 'ok', 'order.received', 1, 0, 0, 0, :at, 'H1')"), {"at": now - H})
        conn.execute(sa.text("INSERT INTO transaction_milestones VALUES ('H1', 'order.received', :at, 'amazon', :at)"), {"at": now - H})
        conn.execute(sa.text(
            "INSERT INTO events (occurred_at, correlation_id, event_id, received_at, channel, flow, stage, status, attributes, source)"
            " VALUES (:at, 'H1', 'e1', :at, 'amazon', 'order', 'received', 'ok', jsonb_build_object('expected_ship_date', CAST(:v AS jsonb)), 'test')"),
            {"at": now - H, "v": json.dumps(value)})
    definitions.publish(migrated_engine, DEFS)
    with migrated_engine.connect() as conn:
        [verdict] = [v for v in transactions.get(conn, "H1", now=now)["sla"] if v["sla"] == "ship_by_expected_date"]
    assert verdict["state"] in ("pending", "overdue", "unjudged")
    assert (verdict["state"] == "unjudged") == ("due_at" not in verdict)
