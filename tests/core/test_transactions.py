"""One business transaction's story and SLA verdicts, through every reader, and never a crash.

The same answer through the function the dashboard uses (`controltower.transactions.get`),
the HTTP API (`GET /v1/transactions/{id}` on a real loopback server) and the CLI
(`controltower search --json`), against a real Postgres; expected values by hand. A business
transaction stitched from four systems' correlation ids reads as one from any member.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controltower import distribute, migrate, transactions
from controltower.vocab import rfc3339
from metrics import compute, definitions, jobs
from tests.conftest import mirror_members
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
        conn.execute(sa.text("DELETE FROM business_members") if distribute.has_members(conn) else sa.text("SELECT 1"))
        conn.execute(sa.text(
            "INSERT INTO transactions (correlation_id, channel, flow, first_event_at, first_event_id, last_event_at,"
            " last_event_id, status, last_milestone, event_count, error_count, retry_count, dead_letter_count, updated_at,"
            " business_id) VALUES ('H1', 'amazon', 'order', :at, 'e1', :at, 'e1', 'ok', 'order.received', 1, 0, 0, 0, :at, 'H1')"), {"at": now - H})
        conn.execute(sa.text("INSERT INTO transaction_milestones VALUES ('H1', 'order.received', :at, 'amazon', :at)"), {"at": now - H})
        mirror_members(conn)
        conn.execute(sa.text(
            "INSERT INTO events (occurred_at, correlation_id, event_id, received_at, channel, flow, stage, status, attributes, source)"
            " VALUES (:at, 'H1', 'e1', :at, 'amazon', 'order', 'received', 'ok', jsonb_build_object('expected_ship_date', CAST(:v AS jsonb)), 'test')"),
            {"at": now - H, "v": json.dumps(value)})
    definitions.publish(migrated_engine, DEFS)
    with migrated_engine.connect() as conn:
        [verdict] = [v for v in transactions.get(conn, "H1", now=now)["sla"] if v["sla"] == "ship_by_expected_date"]
    assert verdict["state"] in ("pending", "overdue", "unjudged")
    assert (verdict["state"] == "unjudged") == ("due_at" not in verdict)


# -- one business transaction across four systems ------------------------------------------------
# The marketplace connector traces the order under its own id, the ERP posts it under another
# (sharing the marketplace order number), the WMS ships against the ERP document, and the carrier
# knows only the tracking number (and no channel). Names sort unlike their times on purpose: the
# canonical member is the earliest, not the smallest id, and never the stored business_id.
MKT, ERP, WMS, CARRIER = "mkt-7f3a", "erp-20261130-0042", "wms-88", "car-1Z999"
ORDER_NO, ERP_DOC, SHIPMENT, TRACKING = "112-0000001-0000001", "4500001", "SHP-88", "1Z999AA10123456784"


def stitched_records(t0: datetime, promise: str) -> list[dict]:
    def rec(cid: str, n: int, milestone: str, minutes: float, system: str, channel: str | None = "amazon",
            status: str = "ok", order_id: str | None = None, **attributes: str) -> dict:
        flow, stage = milestone.split(".")
        record = {"event_id": f"{cid}-{n}", "occurred_at": (t0 + minutes * MIN).isoformat(), "correlation_id": cid,
                  "flow": flow, "stage": stage, "status": status, "system": system, "attributes": attributes}
        if channel:
            record["channel"] = channel
        if order_id:
            record["order_id"] = order_id
        if status != "ok":
            record["error_code"], record["error_message"] = "ERP-503", "posting service unavailable"
        return record

    return [
        rec(MKT, 1, "order.received", 0, "marketplace", external_order_id=ORDER_NO, expected_ship_date=promise),
        rec(MKT, 2, "order.acknowledged", 1, "marketplace", external_order_id=ORDER_NO),
        # the ERP records its own receipt later: the marketplace's earlier one wins
        rec(ERP, 1, "order.received", 1.5, "erp", order_id="SO-1001", external_order_id=ORDER_NO),
        rec(ERP, 2, "order.erp_posted", 1.75, "erp", status="error", order_id="SO-1001", external_order_id=ORDER_NO),
        rec(ERP, 3, "order.erp_posted", 2, "erp", order_id="SO-1001", external_order_id=ORDER_NO, erp_document=ERP_DOC),
        rec(WMS, 1, "fulfilment.released", 20, "wms", erp_document=ERP_DOC, shipment_id=SHIPMENT),
        rec(WMS, 2, "fulfilment.shipped", 60, "wms", erp_document=ERP_DOC, shipment_id=SHIPMENT,
            tracking_number=TRACKING),
        rec(CARRIER, 1, "shipment.first_scan", 90, "carrier", channel=None, tracking_number=TRACKING),
    ]


def ingest_stitched(engine, settings, now: datetime) -> datetime:
    """The four systems' events through the real ingest, which links them into one business
    transaction by their shared identity keys; returns t0."""
    t0 = now - 3 * H
    records = stitched_records(t0, (now + 48 * H).date().isoformat())
    ingest(engine, settings, records, now=now)
    with engine.connect() as conn:
        linked = dict(conn.execute(sa.text("SELECT correlation_id, business_id FROM transactions")).all())
    assert len(linked) == 4 and len(set(linked.values())) == 1, linked  # one business, four members
    definitions.publish(engine, DEFS)
    return t0


def stitched_verdicts(t0: datetime, now: datetime) -> list[dict]:
    promise_end = datetime.combine((now + 48 * H).date(), datetime.max.time(), tzinfo=UTC)
    return [
        {"sla": "erp_posting", "from": "order.received", "to": "order.erp_posted", "state": "met",
         "elapsed_ms": 120_000, "target_ms": 1_800_000, "due_at": rfc3339(t0 + 30 * MIN)},
        {"sla": "order_acknowledgement", "from": "order.received", "to": "order.acknowledged", "state": "met",
         "elapsed_ms": 60_000, "target_ms": 1_800_000, "due_at": rfc3339(t0 + 30 * MIN)},
        {"sla": "ship_by_expected_date", "from": "order.received", "to": "shipment.shipment_confirmed",
         "state": "pending", "elapsed_ms": 3 * 3600_000, "target_ms": None, "due_at": rfc3339(promise_end)},
        # shipped at t0+60 min, never confirmed to Amazon: 2 h against 1 h
        {"sla": "shipment_confirmation", "from": "fulfilment.shipped", "to": "shipment.shipment_confirmed",
         "state": "overdue", "elapsed_ms": 2 * 3600_000, "target_ms": 3600_000, "due_at": rfc3339(t0 + 120 * MIN)},
        {"sla": "warehouse_release", "from": "order.erp_posted", "to": "fulfilment.released", "state": "met",
         "elapsed_ms": 18 * 60_000, "target_ms": 3600_000, "due_at": rfc3339(t0 + 62 * MIN)},
        {"sla": "warehouse_shipping", "from": "fulfilment.released", "to": "fulfilment.shipped", "state": "met",
         "elapsed_ms": 40 * 60_000, "target_ms": 24 * 3600_000, "due_at": rfc3339(t0 + 20 * MIN + 24 * H)},
    ]


def settled(verdicts: list[dict]) -> list[dict]:
    """Verdicts without the elapsed time of open ones (a server reads its own clock)."""
    return [{k: v for k, v in x.items() if not (k == "elapsed_ms" and x["state"] in ("pending", "overdue"))}
            for x in verdicts]


def test_any_member_answers_the_whole_business_transaction(engine, settings, collector, cli):
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = ingest_stitched(engine, settings, now)
    members = sorted([MKT, ERP, WMS, CARRIER])
    assert members == [CARRIER, ERP, MKT, WMS]  # so "sorted" and "canonical" differ below
    expected_milestones = {
        "order.received": (t0, MKT, "marketplace"),
        "order.acknowledged": (t0 + MIN, MKT, "marketplace"),
        "order.erp_posted": (t0 + 2 * MIN, ERP, "erp"),
        "fulfilment.released": (t0 + 20 * MIN, WMS, "wms"),
        "fulfilment.shipped": (t0 + 60 * MIN, WMS, "wms"),
        "shipment.first_scan": (t0 + 90 * MIN, CARRIER, "carrier"),
    }
    with engine.connect() as conn:
        answers = {cid: transactions.get(conn, cid, now=now) for cid in members}
    tx = answers[CARRIER]
    for cid in members:  # every member answers the same business transaction
        assert answers[cid] == tx, cid
    assert tx["correlation_id"] == MKT and tx["correlation_ids"] == members
    assert tx["channel"] == "amazon"  # the business channel: the carrier's scan had none
    assert (tx["order_id"], tx["flow"], tx["status"]) == ("SO-1001", "order", "ok")
    assert (tx["last_milestone"], tx["last_system"]) == ("shipment.first_scan", "carrier")
    assert (tx["first_event_at"], tx["last_event_at"]) == (rfc3339(t0), rfc3339(t0 + 90 * MIN))
    assert (tx["event_count"], tx["error_count"], tx["retry_count"], tx["dead_letter_count"]) == (8, 1, 0, 0)
    assert tx["last_error"] == {"at": rfc3339(t0 + 1.75 * MIN), "code": "ERP-503",
                                "message": "posting service unavailable"}
    assert tx["milestones"] == {m: rfc3339(at) for m, (at, _, _) in expected_milestones.items()}
    assert list(tx["milestones"]) == list(expected_milestones)  # in time order
    assert tx["reached_by"] == {m: {"correlation_id": cid, "system": system}
                                for m, (_, cid, system) in expected_milestones.items()}
    assert tx["keys"] == {"erp_document": [ERP_DOC], "external_order_id": [ORDER_NO], "order_id": ["SO-1001"],
                          "shipment_id": [SHIPMENT], "tracking_number": [TRACKING]}
    assert [(e["correlation_id"], e["event_id"]) for e in tx["events"]] == [
        (MKT, f"{MKT}-1"), (MKT, f"{MKT}-2"), (ERP, f"{ERP}-1"), (ERP, f"{ERP}-2"), (ERP, f"{ERP}-3"),
        (WMS, f"{WMS}-1"), (WMS, f"{WMS}-2"), (CARRIER, f"{CARRIER}-1")]
    assert "channel" not in tx["events"][-1]  # each event as stored: the scan has no channel
    assert [(m["correlation_id"], m["systems"], m["keys"], m["first_event_at"], m["last_event_at"], m["event_count"])
            for m in tx["members"]] == [
        (MKT, ["marketplace"], {"external_order_id": [ORDER_NO]}, rfc3339(t0), rfc3339(t0 + MIN), 2),
        (ERP, ["erp"], {"erp_document": [ERP_DOC], "external_order_id": [ORDER_NO], "order_id": ["SO-1001"]},
         rfc3339(t0 + 1.5 * MIN), rfc3339(t0 + 2 * MIN), 3),
        (WMS, ["wms"], {"erp_document": [ERP_DOC], "shipment_id": [SHIPMENT], "tracking_number": [TRACKING]},
         rfc3339(t0 + 20 * MIN), rfc3339(t0 + 60 * MIN), 2),
        (CARRIER, ["carrier"], {"tracking_number": [TRACKING]}, rfc3339(t0 + 90 * MIN), rfc3339(t0 + 90 * MIN), 1),
    ]
    # SLA verdicts over the merged milestones: the ERP's posting counts for the marketplace's order
    assert tx["sla"] == stitched_verdicts(t0, now)

    api = httpx.get(f"{collector.url}/v1/transactions/{CARRIER}")
    assert api.status_code == 200
    body = api.json()
    assert body["correlation_id"] == MKT and body["correlation_ids"] == members
    assert body["milestones"] == tx["milestones"] and settled(body["sla"]) == settled(stitched_verdicts(t0, now))
    assert body["reached_by"]["shipment.first_scan"] == {"correlation_id": CARRIER, "system": "carrier"}
    assert httpx.get(f"{collector.url}/v1/transactions/{WMS}").json()["correlation_id"] == MKT
    assert httpx.get(f"{collector.url}/v1/transactions/no-such-member").status_code == 404

    # one row per business transaction, whichever member's key matched
    for q, matched_by, matched_ids in (
        (TRACKING, ["tracking_number"], [CARRIER, WMS]),
        (ERP_DOC, ["erp_document"], [ERP, WMS]),
        (ORDER_NO, ["external_order_id"], [ERP, MKT]),
        ("SO-1001", ["order_id"], [ERP]),
        (CARRIER, ["correlation_id"], [CARRIER]),
    ):
        r = httpx.get(f"{collector.url}/v1/transactions", params={"q": q})
        assert r.status_code == 200
        [row] = r.json()["results"]
        assert (row["correlation_id"], row["correlation_ids"]) == (MKT, members), q
        assert (row["matched_by"], row["matched_correlation_ids"]) == (matched_by, matched_ids), q
        assert (row["channel"], row["order_id"], row["status"], row["event_count"]) == ("amazon", "SO-1001", "ok", 8)
        assert row["last_milestone"] == "shipment.first_scan" and row["last_event_at"] == rfc3339(t0 + 90 * MIN)
    found = cli(TRACKING)
    assert [h["correlation_id"] for h in found["results"]] == [MKT]
    assert found["transaction"]["correlation_ids"] == members
    assert settled(found["transaction"]["sla"]) == settled(stitched_verdicts(t0, now))


def picked(t0: datetime) -> dict:
    """The warehouse's pick names the SKU too (a reference key: searchable, links nothing)."""
    return {"event_id": f"{WMS}-pick", "occurred_at": (t0 + 30 * MIN).isoformat(), "correlation_id": WMS,
            "flow": "fulfilment", "stage": "picked", "status": "ok", "system": "wms",
            "attributes": {"erp_document": ERP_DOC, "sku": "SKU-RED"}}


@pytest.fixture(params=["as-this-server", "routed"])
def search_shape(request, monkeypatch):
    """Search's statements for this server, then the routed ones a Citus cluster uses (run here on
    any server, so plain CI checks they answer the same)."""
    if request.param == "routed":
        monkeypatch.setattr(transactions.distribute, "on_citus", lambda conn: True)
    return request.param


def test_search_pages_business_transactions_newest_first(engine, settings, search_shape):
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = ingest_stitched(engine, settings, now)
    # two more orders with the same SKU (a reference key): three businesses, one of them stitched
    ingest(engine, settings, [
        ev("SOLO-1", "order.received", t0 + 100 * MIN, sku="SKU-RED"),
        ev("SOLO-2", "order.received", t0 + 30 * MIN, sku="SKU-RED"),
    ], now=now)
    ingest(engine, settings, [picked(t0)], now=now)
    with engine.connect() as conn:
        rows = transactions.search(conn, "SKU-RED")
        # newest last event first: SOLO-1 (t0+100), the stitched order (t0+90), SOLO-2 (t0+30)
        assert [(r["correlation_id"], r["correlation_ids"]) for r in rows] == [
            ("SOLO-1", ["SOLO-1"]), (MKT, [CARRIER, ERP, MKT, WMS]), ("SOLO-2", ["SOLO-2"])]
        assert (rows[1]["matched_by"], rows[1]["matched_correlation_ids"]) == (["sku"], [WMS])
        assert rows[0]["matched_by"] == ["sku"] and rows[1]["event_count"] == 9
        assert [r["correlation_id"] for r in transactions.search(conn, "SKU-RED", limit=1, offset=1)] == [MKT]
        assert [r["correlation_id"] for r in transactions.search(conn, "SKU-RED", limit=2, offset=2)] == ["SOLO-2"]


def test_search_text_output_names_every_member(engine, settings, monkeypatch, database_url, capsys):
    from wiring.cli import main

    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", database_url)
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = ingest_stitched(engine, settings, now)
    capsys.readouterr()
    main(["search", TRACKING])
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [MKT, "channel", "amazon", "order", "SO-1001", "status", "ok"]
    assert out[1].strip() == "4 correlation ids, one business transaction:"
    assert [o.split()[:3] for o in out[2:6]] == [
        ["member", MKT, "marketplace"], ["member", ERP, "erp"], ["member", WMS, "wms"], ["member", CARRIER, "carrier"]]
    assert out[4].split()[3:] == [rfc3339(t0 + 20 * MIN), "→", rfc3339(t0 + 60 * MIN), "2", "events",
                                  f"erp_document={ERP_DOC},", f"shipment_id={SHIPMENT},", f"tracking_number={TRACKING}"]
    assert "  SLA erp_posting: met (2 min of 30 min)" in out
    scan = next(o for o in out if "shipment.first_scan" in o)
    assert scan.split()[:3] == [rfc3339(t0 + 90 * MIN), CARRIER, "carrier"]  # each event says its member


def _chain(n: int, t0: datetime, prefix: str = "BIG") -> list[dict]:
    """`n` correlation ids linked into one business transaction by a chain of identity keys
    (member i shares a shipment id with one neighbour and a tracking number with the other; no
    value is on more than two ids), each naming the reference key SKU-HOT."""
    return [ev(f"{prefix}-{i:05d}", "order.received", t0 + i * timedelta(seconds=1), sku="SKU-HOT",
               shipment_id=f"{prefix}-S{i // 2}", tracking_number=f"{prefix}-T{(i + 1) // 2}") for i in range(n)]


def test_search_of_a_key_on_every_member_of_a_big_business_is_linear(engine, settings, search_shape):
    """Found by review: the search grouped by the matched-members array, so every member row
    carried all matched ids (members²: 2,000 members spilled ~40 MB to disk, 5,000 ~300 MB and
    2 s). Under a 4 MB temp-file limit the search must still answer."""
    now = datetime.now(UTC).replace(microsecond=0)
    records = _chain(2000, now - 2 * H)
    for start in range(0, len(records), 500):
        ingest(engine, settings, records[start:start + 500], now=now)
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT count(DISTINCT business_id) FROM transactions")).scalar() == 1
        conn.execute(sa.text("SET LOCAL temp_file_limit = '4MB'"))
        rows = transactions.search(conn, "SKU-HOT")
    assert [(r["correlation_id"], len(r["correlation_ids"]), len(r["matched_correlation_ids"])) for r in rows] == [
        ("BIG-00000", 2000, 2000)]
    assert rows[0]["matched_by"] == ["sku"]


def test_search_text_output_says_when_more_match_than_it_lists(engine, settings, monkeypatch, database_url, capsys):
    """Found by review: a SKU on 30 orders printed "20 transactions match", the page size."""
    from wiring.cli import main

    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", database_url)
    now = datetime.now(UTC).replace(microsecond=0)
    ingest(engine, settings, [ev(f"W-{i:02d}", "order.received", now - (40 - i) * MIN, sku="SKU-ALL")
                              for i in range(30)], now=now)
    capsys.readouterr()
    main(["search", "SKU-ALL"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "more than 20 transactions match 'SKU-ALL'; the newest 20:"
    main(["search", "SKU-ALL", "--json"])
    assert [r["correlation_id"] for r in json.loads(capsys.readouterr().out)["results"]] == [
        f"W-{i:02d}" for i in range(29, 9, -1)]


def test_search_text_output_says_when_it_lists_fewer_members_than_there_are(engine, settings, monkeypatch,
                                                                            database_url, capsys):
    """Found by review: 1,001 members printed 1,000 member lines under "1001 correlation ids", no word of the rest."""
    from wiring.cli import main

    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", database_url)
    now = datetime.now(UTC).replace(microsecond=0)
    records = _chain(1001, now - 2 * H)
    for start in range(0, len(records), 500):
        ingest(engine, settings, records[start:start + 500], now=now)
    capsys.readouterr()
    main(["search", "BIG-01000"])
    out = capsys.readouterr().out.splitlines()
    assert out[1].strip() == "1001 correlation ids, one business transaction:"
    assert sum(o.startswith("  member ") for o in out) == 1000
    assert out[1002] == "  (the first 1,000 of 1,001 listed; --json has every id)"


def test_search_text_output_says_when_it_prints_fewer_events_than_counted(engine, settings, monkeypatch,
                                                                          database_url, capsys):
    """Found by review: 5,005 events printed the earliest 5,000 with no word of the rest."""
    from wiring.cli import main

    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", database_url)
    now = datetime.now(UTC).replace(microsecond=0)
    records = [dict(r, event_id=f"{r['event_id']}:{n}") for r in _chain(1001, now - 2 * H) for n in range(5)]
    for start in range(0, len(records), 1000):
        ingest(engine, settings, records[start:start + 1000], now=now)
    capsys.readouterr()
    main(["search", "BIG-00000"])
    out = capsys.readouterr().out.splitlines()
    assert sum(" order.received" in o for o in out) == 5000
    assert out[-1] == "  (the earliest 5,000 of the 5,005 events this transaction counted)"


def test_search_over_http_takes_ascii_integers_and_each_parameter_once(engine, settings, collector):
    """Found by review: limit/offset went through int(), so "٥" (Arabic-Indic five), "1_0" and " 5" were
    read as numbers; a repeated q/limit/offset silently took the last one (what a proxy checked first
    is not what was searched). The identity lists refuse both; so does search now."""
    now = datetime.now(UTC).replace(microsecond=0)
    ingest(engine, settings, [ev("A-1", "order.received", now - H, sku="S1")], now=now)
    url = collector.url + "/v1/transactions"
    assert httpx.get(url, params={"q": "S1", "limit": "5", "offset": "0"}).json()["results"][0]["correlation_id"] == "A-1"
    for params in ({"q": "S1", "limit": "٥"}, {"q": "S1", "limit": "1_0"}, {"q": "S1", "limit": " 5"},
                   {"q": "S1", "offset": "٠"}, {"q": "S1", "limit": "+5"}):
        r = httpx.get(url, params=params)
        assert (r.status_code, r.json()["error"]) == (400, "limit and offset must be integers"), (params, r.text)
    for params, name in (([("q", "zzz"), ("q", "S1")], "q"), ([("q", "S1"), ("limit", "1"), ("limit", "2")], "limit"),
                         ([("q", "S1"), ("offset", "0"), ("offset", "1")], "offset")):
        r = httpx.get(url, params=params)
        assert (r.status_code, r.json()["error"]) == (400, f"{name}: given more than once"), (params, r.text)


def test_a_business_order_id_is_its_earliest_members_as_in_the_breach_and_identity_lists(engine, settings):
    """Found by review: get and search took min(order_id) over members while the breach list, the
    identity lists and this module's own rule ("first" fields follow the earliest member) take the
    earliest member's: the ERP's "4500001" sorted before the channel's "SO-9" and headed the page."""
    from controltower import breaches

    now = datetime.now(UTC).replace(microsecond=0)
    mkt = ev("MKT-9", "order.received", now - 2 * H, external_order_id="112-9")
    mkt["order_id"] = "SO-9"
    erp = ev("ERP-9", "order.erp_posted", now - H, external_order_id="112-9")
    erp["order_id"] = "4500001"
    ingest(engine, settings, [mkt, erp], now=now)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO sla_open_items (sla, correlation_id, channel, started_at, due_at) "
                             "SELECT 'erp_posting', business_id, 'amazon', :s, :d FROM transactions "
                             "WHERE correlation_id = 'MKT-9'"), {"s": now - 2 * H, "d": now - H})
    with engine.connect() as conn:
        assert transactions.get(conn, "ERP-9")["order_id"] == "SO-9"
        assert [r["order_id"] for r in transactions.search(conn, "112-9")] == ["SO-9"]
        assert [r["order_id"] for r in breaches.open_breaches(conn, now=now)] == ["SO-9"]
