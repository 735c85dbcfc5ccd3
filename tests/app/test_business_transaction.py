"""The transaction page tells one business transaction across four systems: the story names each
system and the ID it used, the members are listed, and any member's id or key opens the same
page. Real Postgres, AppTest, expected text by hand (the scenario of tests/core/test_transactions)."""

# ruff: noqa: F811  (the `app_env` fixture comes from test_dashboard)
from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from sqlalchemy.engine import Engine

from app import shaping
from app.story import ids_used, transaction_story
from controltower.settings import Settings
from controltower.vocab import rfc3339
from tests.app.test_dashboard import app_env, markdown_text, plain, run, table_with  # noqa: F401 (fixtures)
from tests.core.test_transactions import (
    CARRIER,
    ERP,
    ERP_DOC,
    MIN,
    MKT,
    ORDER_NO,
    SHIPMENT,
    TRACKING,
    WMS,
    ingest_stitched,
    picked,
)
from tests.metrics.helpers import ev, ingest


def _hhmm(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%H:%M}"


def test_the_story_names_each_system_and_the_id_it_used(engine: Engine, settings: Settings, app_env: None) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = ingest_stitched(engine, settings, now)

    previous = [t0.date()]  # the story names the date whenever it changes from the step before

    def on(minutes: float) -> str:
        moment = t0 + minutes * MIN
        same_day = moment.date() == previous[0]
        previous[0] = moment.date()
        return f"at {_hhmm(moment)}" if same_day else f"on {moment:%d %b}".replace(" 0", " ") + f" at {_hhmm(moment)}"

    expected_steps = (
        f"Amazon received order {ORDER_NO} {on(0)} and acknowledged it {on(1)}; "
        f"the ERP posted it as {ERP_DOC} {on(2)}; "
        f"the warehouse released it as {SHIPMENT} with tracking {TRACKING} {on(20)} and shipped it {on(60)}; "
        f"the carrier scanned it with tracking {TRACKING} {on(90)}; "
        "posting to the ERP failed once, then succeeded — blocking step: shipment confirmation, overdue since "
    )
    for params in ({"id": CARRIER}, {"q": TRACKING}, {"q": ERP_DOC}, {"id": MKT}):
        at = run("views/transaction.py", **params)
        story = plain(at.info[0].value)
        assert story.startswith(expected_steps), (params, story)
        members = table_with(at, "Systems")
        assert list(members["Correlation id"]) == [MKT, ERP, WMS, CARRIER]  # earliest first
        assert list(members["Systems"]) == ["marketplace", "erp", "wms", "carrier"]
        assert members.iloc[2]["Keys"] == f"erp_document {ERP_DOC} · shipment_id {SHIPMENT} · tracking_number {TRACKING}"
        assert list(members["Channel"]) == ["amazon", "amazon", "amazon", "–"]
        assert members.iloc[3]["First event"] == pd.Timestamp(t0 + 90 * MIN)
        header = markdown_text(at)
        assert f"correlation id <code>{MKT}</code> · one business transaction of 4 correlation ids across " \
               "marketplace, erp, wms, carrier" in header
        milestones = table_with(at, "Milestone")
        assert milestones[["Milestone", "System", "Correlation id"]].values.tolist() == [
            ["order.received", "marketplace", MKT], ["order.acknowledged", "marketplace", MKT],
            ["order.erp_posted", "erp", ERP], ["fulfilment.released", "wms", WMS], ["fulfilment.shipped", "wms", WMS],
            ["shipment.first_scan", "carrier", CARRIER]]
        verdicts = table_with(at, "From → to")
        states = dict(zip(verdicts["SLA"], verdicts["State"], strict=True))
        assert states["erp_posting"] == "met" and states["shipment_confirmation"] == "overdue"
        events = table_with(at, "milestone")
        assert list(events["correlation_id"]) == [MKT, MKT, ERP, ERP, ERP, WMS, WMS, CARRIER]
        # a key two members carry finds one business transaction: no pick list
        assert not any("matched_by" in d.value.columns for d in at.dataframe)


def test_search_hits_list_one_row_per_business_transaction(engine: Engine, settings: Settings, app_env: None) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = ingest_stitched(engine, settings, now)
    scan = {**picked(t0), "event_id": f"{CARRIER}-sku", "correlation_id": CARRIER, "system": "carrier",
            "flow": "shipment", "stage": "in_transit", "attributes": {"tracking_number": TRACKING, "sku": "SKU-RED"}}
    ingest(engine, settings, [picked(t0), scan], now=now)  # two members name the same SKU
    ingest(engine, settings, [ev("SOLO-1", "order.received", t0, sku="SKU-RED")], now=now)  # and another order
    at = run("views/transaction.py", q="SKU-RED")
    hits = table_with(at, "matched_by")  # one row per business transaction, newest first
    assert hits[["correlation_id", "members", "matched_by"]].values.tolist() == [
        [MKT, f"{CARRIER}, {ERP}, {MKT}, {WMS}", "sku"], ["SOLO-1", "SOLO-1", "sku"]]
    assert plain(at.info[0].value).startswith(f"Amazon received order {ORDER_NO} ")  # the newest is shown


def test_search_display_and_breach_members() -> None:
    rows = [{"correlation_id": MKT, "correlation_ids": [CARRIER, ERP, MKT, WMS], "channel": None, "flow": "order",
             "order_id": "SO-1001", "status": "ok", "last_milestone": "shipment.first_scan",
             "last_event_at": rfc3339(datetime(2026, 11, 30, tzinfo=UTC)), "error_count": 1,
             "matched_by": ["sku", "tracking_number"]}]
    shown = shaping.search_display(rows).iloc[0]
    assert shown["members"] == f"{CARRIER}, {ERP}, {MKT}, {WMS}" and shown["channel"] == "–"
    assert shown["matched_by"] == "sku, tracking_number"
    breaches = pd.DataFrame({
        "correlation_id": [MKT, "SOLO"], "correlation_ids": [[MKT, CARRIER], ["SOLO"]], "order_id": [None, "SO-2"],
        "channel": ["amazon", "ebay"], "sla": ["erp_posting", "erp_posting"],
        "started_at": [datetime(2026, 11, 30, tzinfo=UTC)] * 2, "age_ms": [60_000, 120_000],
        "overdue_ms": [1000, 2000], "last_milestone": [None, None], "status": ["ok", "ok"]})
    assert list(shaping.breaches_display(breaches)["Members"]) == [f"{MKT}, {CARRIER}", "SOLO"]
    # without member lists (or only singletons) the column is not shown
    assert "Members" not in shaping.breaches_display(breaches.drop(columns="correlation_ids"))
    assert "Members" not in shaping.breaches_display(breaches.iloc[1:])


def test_ids_used_follow_the_system_and_the_flow() -> None:
    keys = {"erp_document": ["4500001"], "external_order_id": ["112-1"], "order_id": ["SO-1"]}
    assert ids_used({"keys": keys}, "erp", "order") == [("erp_document", ["4500001"])]
    assert ids_used({"keys": keys}, "marketplace", "order") == [("external_order_id", ["112-1"])]
    split = {"shipment_id": ["SHP-1"], "tracking_number": ["1Z1", "1Z2"], "erp_document": ["4500001"]}
    assert ids_used({"keys": split}, "wms", "fulfilment") == [("shipment_id", ["SHP-1"]), ("tracking_number", ["1Z1", "1Z2"])]
    assert ids_used({"keys": {"rma": ["R-9"], "order_id": ["SO-1"]}}, "erp", "return") == [("rma", ["R-9"])]
    # a system the tables do not know: the identity keys it brought that were not named yet
    assert ids_used({"keys": keys}, "edi-gateway", "order", {("external_order_id", "112-1")}) == [
        ("order_id", ["SO-1"]), ("erp_document", ["4500001"])]
    assert ids_used({"keys": {"sku": ["SKU-1"]}}, "edi-gateway", "order") == []


def test_story_across_systems_pure() -> None:
    tx = {
        "channel": "walmart", "flow": "order", "correlation_ids": ["a", "b", "c"],
        "milestones": {"order.received": "2026-11-22T09:12:04.000Z", "order.erp_posted": "2026-11-22T09:14:00.000Z",
                       "fulfilment.shipped": "2026-11-23T08:00:00.000Z"},
        "reached_by": {"order.received": {"correlation_id": "a", "system": "marketplace"},
                       "order.erp_posted": {"correlation_id": "b", "system": "erp"},
                       "fulfilment.shipped": {"correlation_id": "c", "system": "3pl"}},
        "members": [{"correlation_id": "a", "keys": {"marketplace_order_id": ["WM-77"], "order_id": ["SO-1"]}},
                    {"correlation_id": "b", "keys": {"erp_document": ["4500001"], "order_id": ["SO-1"]}},
                    {"correlation_id": "c", "keys": {"tracking_number": ["1Z1", "1Z2"]}}],
        "events": [], "sla": [],
    }
    assert transaction_story(tx) == (
        "Walmart received order WM-77 at 09:12; the ERP posted it as 4500001 at 09:14; "
        "the 3PL shipped it with tracking 1Z1 and 1Z2 on 23 Nov at 08:00.")
    # the ERP saw the order first: the order is introduced by its document, the marketplace has none
    tx["reached_by"]["order.received"] = {"correlation_id": "b", "system": "erp"}
    tx["members"][0]["keys"] = {}
    assert transaction_story(tx).startswith("The ERP received the order as 4500001 at 09:12 and posted it at 09:14; ")
    # one correlation id only: the single-system wording stays
    assert transaction_story({**tx, "correlation_ids": ["a"]}).startswith("Received from Walmart 09:12, posted to")


def test_page_verdicts_are_the_cores_for_any_member(engine: Engine, settings: Settings, app_env: None) -> None:
    from app import queries

    ingest_stitched(engine, settings, datetime.now(UTC).replace(microsecond=0))
    at = run("views/transaction.py", id=CARRIER)
    shown = table_with(at, "From → to")
    core = shaping.verdicts_frame(queries.get_transaction(engine, ERP, now=datetime.now(UTC)))
    assert shown.values.tolist() == core.values.tolist()
    assert len(core) == 6  # every SLA the merged milestones started


def test_story_groups_runs_of_one_system_and_names_ids_once() -> None:
    """As the simulator's real-ID mode tells it: the connector's trace holds the marketplace's
    receipt and the middleware's steps; the confirmation is another trace of the middleware."""
    def at(minute: int) -> str:
        return f"2026-11-22T10:{minute:02d}:00.000Z"

    tx = {
        "channel": "shopify", "flow": "order", "correlation_ids": ["conn", "erp", "confirm"],
        "milestones": {"order.received": at(0), "order.validated": at(1), "order.acknowledged": at(2),
                       "order.erp_posted": at(5), "fulfilment.released": at(9), "shipment.shipment_confirmed": at(30)},
        "reached_by": {"order.received": {"correlation_id": "conn", "system": "marketplace"},
                       "order.validated": {"correlation_id": "conn", "system": "middleware"},
                       "order.acknowledged": {"correlation_id": "conn", "system": "middleware"},
                       "order.erp_posted": {"correlation_id": "erp", "system": "erp"},
                       "fulfilment.released": {"correlation_id": "erp", "system": "erp"},
                       "shipment.shipment_confirmed": {"correlation_id": "confirm", "system": "middleware"}},
        "members": [{"correlation_id": "conn", "keys": {"external_order_id": ["#1001"], "order_id": ["SO-1"]}},
                    {"correlation_id": "erp", "keys": {"erp_document": ["4500001"], "order_id": ["SO-1"]}},
                    {"correlation_id": "confirm", "keys": {"order_id": ["SO-1"], "tracking_number": ["1Z7"]}}],
        "events": [], "sla": [],
    }
    assert transaction_story(tx) == (
        "Shopify received order #1001 at 10:00; the middleware validated it at 10:01 and acknowledged it at 10:02; "
        "the ERP posted it as 4500001 at 10:05 and released it at 10:09; "
        "the middleware confirmed it as shipped to Shopify with tracking 1Z7 at 10:30.")


def test_story_names_a_members_ids_once_dates_once_and_every_erp_document() -> None:
    tx = {
        "channel": "shopify", "flow": "order", "correlation_ids": ["conn", "erp", "erp2"],
        "milestones": {"order.received": "2026-11-22T23:50:00.000Z", "order.erp_posted": "2026-11-23T00:10:00.000Z",
                       "fulfilment.released": "2026-11-23T00:20:00.000Z",
                       "cancellation.requested": "2026-11-23T01:00:00.000Z"},
        "reached_by": {"order.received": {"correlation_id": "conn", "system": "marketplace"},
                       "order.erp_posted": {"correlation_id": "erp", "system": "erp"},
                       "fulfilment.released": {"correlation_id": "erp2", "system": "erp"},
                       "cancellation.requested": {"correlation_id": "conn", "system": "marketplace"}},
        "members": [{"correlation_id": "conn", "keys": {"marketplace_order_id": ["#77"]}},
                    {"correlation_id": "erp", "keys": {"erp_document": ["4500001"], "order_id": ["SO-1"]}},
                    {"correlation_id": "erp2", "keys": {"erp_document": ["4600001"], "order_id": ["SO-1"]}}],
        "events": [], "sla": [],
    }
    assert transaction_story(tx) == (
        "Shopify received order #77 at 23:50; the ERP posted it as 4500001 on 23 Nov at 00:10; "
        "the ERP released it as 4600001 at 00:20; Shopify cancelled it at 01:00; "
        "the ERP holds it under 2 documents, 4500001 and 4600001.")


def test_story_of_a_channel_less_scan_names_the_carrier_and_its_tracking_number() -> None:
    tx = {"channel": None, "flow": "shipment", "correlation_ids": ["ups-1"],
          "milestones": {"shipment.first_scan": "2026-11-22T11:02:00.000Z"},
          "reached_by": {"shipment.first_scan": {"correlation_id": "ups-1", "system": "carrier"}},
          "members": [{"correlation_id": "ups-1", "keys": {"tracking_number": ["1Z1"]}}], "events": [], "sla": []}
    assert transaction_story(tx) == "The carrier scanned the shipment with tracking 1Z1 at 11:02."
    assert transaction_story({**tx, "milestones": {}}) == "No milestone reached yet for this order."


def test_a_key_on_more_orders_than_the_page_shows_says_more_match(engine: Engine, settings: Settings,
                                                                  app_env: None) -> None:
    """Found by review: a SKU on 60 orders read "50 transactions match", the page size, not the truth."""
    now = datetime.now(UTC).replace(microsecond=0)
    ingest(engine, settings, [ev(f"W-{i:03d}", "order.received", now - MIN * (100 - i), sku="SKU-ALL")
                              for i in range(60)], now=now)
    at = run("views/transaction.py", q="SKU-ALL")
    captions = [plain(c.value) for c in at.caption]
    assert "More than 50 transactions match “SKU-ALL”; the newest 50 are shown." in captions, captions
    hits = table_with(at, "matched_by")
    assert len(hits) == 50 and hits["correlation_id"].iloc[0] == "W-059"


def _big_business(engine: Engine, settings: Settings, members: int, events_each: int) -> datetime:
    """`members` correlation ids linked by a chain of identity keys (real ingest), `events_each` events each."""
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - 3 * 60 * MIN
    stages = ("order.received", "order.acknowledged", "order.validated", "order.erp_posted", "fulfilment.released")
    records = [ev(f"BIG-{i:05d}", stage, t0 + i * MIN / 100 + k * MIN / 1000,
                  shipment_id=f"S{i // 2}", tracking_number=f"T{(i + 1) // 2}")
               for i in range(members) for k, stage in enumerate(stages[:events_each])]
    for start in range(0, len(records), 1000):
        ingest(engine, settings, records[start:start + 1000], now=now)
    return t0


def test_a_business_of_more_members_than_listed_says_how_many_are_listed(engine: Engine, settings: Settings,
                                                                         app_env: None) -> None:
    """Found by review: 1,001 members listed 1,000 rows under "1001 correlation ids joined", no word of the rest."""
    _big_business(engine, settings, 1001, 1)
    at = run("views/transaction.py", id="BIG-01000")
    assert len(table_with(at, "Systems")) == 1000
    captions = [plain(c.value) for c in at.caption]
    assert "The first 1,000 of 1,001 correlation ids are listed, earliest first." in captions, captions


def test_a_business_of_more_events_than_loaded_says_how_many_are_shown(engine: Engine, settings: Settings,
                                                                       app_env: None) -> None:
    """Found by review: 5,005 events loaded the earliest 5,000 and said "Payloads of the first 100 of 5000
    events", as if that were all of them."""
    _big_business(engine, settings, 1001, 5)
    at = run("views/transaction.py", id="BIG-00000")
    assert len(table_with(at, "milestone")) == 5000
    captions = [plain(c.value) for c in at.caption]
    assert "The earliest 5,000 of the 5,005 events this transaction counted are shown." in captions, captions


def test_the_keys_line_of_a_big_business_is_bounded(engine: Engine, settings: Settings, app_env: None) -> None:
    """Found by review: the keys line wrote every member's every key (1,001 members: 3,003 code elements,
    one line); it names the first 20 of each kind and counts the rest (the members table lists them)."""
    _big_business(engine, settings, 1001, 1)
    at = run("views/transaction.py", id="BIG-00000")
    line = next(m.value for m in at.markdown if "<b>Tracking number:</b>" in m.value)
    assert line.count("<code>") == 3 * 20, line[:300]
    assert "<b>Order id:</b> " + ", ".join(f"<code>SO-BIG-{i:05d}</code>" for i in range(20)) + " and 981 more" in line
    assert "<code>T500</code>" not in line and "<code>T19</code>, and" not in line


def test_the_breach_page_counts_more_overdue_items_than_it_lists(engine: Engine, settings: Settings,
                                                                 app_env: None) -> None:
    """Found by review: "Overdue items" was the length of the list, which stops at 5,000: 5,001 read "5,000"."""
    import sqlalchemy as sa

    now = datetime.now(UTC)
    ingest(engine, settings, [ev("B-1", "order.received", now - 120 * MIN)], now=now)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO sla_open_items (sla, correlation_id, channel, started_at, due_at) "
            "SELECT 'erp_posting', 'B-' || i, CASE WHEN i = 5001 THEN 'ebay' ELSE 'amazon' END, "
            "       :now - interval '2 hours', :now - interval '1 hour' + i * interval '1 ms' "
            "FROM generate_series(1, 5001) i"), {"now": now})
    at = run("views/breaches.py")
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Overdue items"], metrics["Channels affected"]) == ("5,001", "2"), metrics
    assert len(table_with(at, "Transaction")) == 5000
    captions = " ".join(plain(c.value) for c in at.caption)
    assert "the 5,000 most overdue of 5,001 are listed" in captions, captions
