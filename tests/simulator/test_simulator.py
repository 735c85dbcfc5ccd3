"""The retail simulator: determinism, fault specs, ground truth against the database, live HTTP."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from collectors.files import import_files
from collectors.store import EventStore
from controltower.errors import ConfigError
from controltower.identity import CANONICAL_MEMBER
from simulator.emit import FileSink, HttpSink, StoreSink
from simulator.faults import FaultPlan, parse_fault, parse_faults
from simulator.model import SimEvent, Simulation, iso
from simulator.run import run_demo_simulator, simulate
from wiring.cli import app

START = datetime(2026, 3, 2, 8, tzinfo=UTC).timestamp()
MODES = pytest.mark.parametrize("ids", ["shared", "real"])

# Orders no member of whose business transaction was posted, named by the canonical member.
# Real-ID mode needs ingest linking (transactions.business_id) for this to see whole orders.
UNPOSTED_SQL = f"""
SELECT {CANONICAL_MEMBER} FROM transactions t GROUP BY t.business_id
HAVING NOT EXISTS (SELECT 1 FROM transactions u JOIN transaction_milestones m ON m.correlation_id = u.correlation_id
                   WHERE u.business_id = t.business_id AND m.milestone = 'order.erp_posted')
   AND EXISTS (SELECT 1 FROM transactions u JOIN transaction_milestones m ON m.correlation_id = u.correlation_id
               WHERE u.business_id = t.business_id AND m.milestone = 'order.received')
"""  # noqa: S608 (a constant fragment from controltower.identity)


def stream(seed: int, hours: float = 6, faults: tuple[str, ...] = (), ids: str = "shared") -> list[dict]:
    plan = FaultPlan.resolve(parse_faults(faults), START)
    sim = Simulation(seed=seed, start=START, faults=plan, ids=ids)
    return [e.record for chunk in sim.hours(START + hours * 3600) for e in chunk]


class Recording:
    """A sink that keeps what it was given and passes it on."""

    def __init__(self, inner):
        self.inner, self.events, self.totals = inner, [], inner.totals

    def send(self, events):
        self.events.extend(events)
        self.inner.send(events)

    def close(self):
        self.inner.close()


def scalar(engine, sql: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar_one()


@MODES
def test_same_seed_same_stream_and_another_seed_differs(ids):
    first = stream(7, ids=ids)
    assert len(first) > 300
    assert first == stream(7, ids=ids)
    assert [r["event_id"] for r in first] != [r["event_id"] for r in stream(8, ids=ids)]
    times = [r["occurred_at"] for r in first]
    assert times == sorted(times)
    assert len({r["event_id"] for r in first}) == len(first)


@MODES
def test_stream_carries_channel_formats_and_business_keys(ids):
    received = [r for r in stream(7, ids=ids) if r["flow"] == "order" and r["stage"] == "received"]
    by_channel = {r["channel"]: r for r in received}
    assert set(by_channel) == {"amazon", "shopify", "ebay", "walmart", "pos"}
    ext = {ch: r["attributes"]["external_order_id"] for ch, r in by_channel.items()}
    assert [len(p) for p in ext["amazon"].split("-")] == [3, 7, 7]
    assert [len(p) for p in ext["ebay"].split("-")] == [2, 5, 5]
    assert len(ext["walmart"]) == 15 and ext["walmart"].isdigit()
    assert ext["shopify"].startswith("#") and by_channel["shopify"]["attributes"]["marketplace_order_id"].isdigit()
    assert all(r["order_id"].startswith("SO-") and "expected_ship_date" in r["attributes"] for r in received)
    assert all("email" in r["payload"]["customer"] for r in received)


def test_fault_specs_parse():
    spec = parse_fault("erp_outage@10m+30m")
    assert (spec.kind, spec.offset, spec.duration) == ("erp_outage", 600, 1800)
    stall = parse_fault("inventory_stall:amazon:wh-east@1h")
    assert (stall.channel, stall.location, stall.offset, stall.duration) == ("amazon", "wh-east", 3600, None)
    kinds = [s.kind for s in parse_faults(["slow_ack:walmart+2h, peak", "duplicate_storm"])]
    assert kinds == ["slow_ack", "peak", "duplicate_storm"]
    window = FaultPlan.resolve([spec], 1000.0).windows[0]
    assert (window.start, window.end) == (1600.0, 3400.0)


def test_a_fault_can_count_back_from_the_present():
    """`@-START`: placed before the present whatever the backfill and catch-up (the demo's outage)."""
    spec = parse_fault("erp_outage@-2h+3h")
    assert (spec.before_present, spec.offset, spec.duration) == (True, 7200, 10800)
    plan = FaultPlan.resolve([spec, parse_fault("peak@1h+1h")], start=1000.0, present=100_000.0)
    assert [(w.start, w.end) for w in plan.windows] == [(92_800.0, 103_600.0), (4600.0, 8200.0)]
    with pytest.raises(ConfigError, match="needs a run that knows the present"):
        FaultPlan.resolve([spec], 1000.0)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("nope@1m", 'unknown kind "nope"'),
        ("slow_ack", "needs a channel"),
        ("slow_ack:etsy", 'unknown channel "etsy"'),
        ("erp_outage:amazon", 'unexpected ":amazon"'),
        ("inventory_stall:amazon:moon", 'unknown location "moon"'),
        ("erp_outage@soon", '"soon" is not a duration'),
        ("erp_outage+0m", 'duration "+0m" is zero'),
        ("peak+", "nothing after '+'"),
        ("erp_outage@-+1h", "nothing after '@-'"),
        ("erp_outage@-soon", '"soon" is not a duration'),
    ],
)
def test_bad_fault_specs_name_the_bad_part(text, names):
    with pytest.raises(ConfigError, match="fault") as info:
        parse_fault(text)
    assert names in str(info.value)


@MODES
def test_erp_outage_truth_matches_stream_and_database(engine, settings, tmp_path, ids):
    """Real mode needs ingest linking (channel-less carrier records accepted, business_id set)."""
    now = datetime.now(UTC)
    sink = Recording(StoreSink(engine, settings))
    truth = simulate(
        seed=3, faults=parse_faults(["erp_outage@4h"]), rate_scale=0.5, backfill=6 * 3600,
        store=sink, now=now, truth_path=tmp_path / "truth.json", ids=ids,
    )
    outage_start = now - timedelta(hours=2)
    received = {e.business_key for e in sink.events if e.milestone == "order.received"}
    posted = {e.business_key for e in sink.events if e.milestone == "order.erp_posted"}
    unposted = {o["correlation_id"] for o in truth["unposted_orders"]}
    assert unposted == received - posted
    assert truth["unposted_count"] == len(unposted) > 20
    assert not [e for e in sink.events if e.milestone == "order.erp_posted" and e.at >= outage_start.timestamp()]
    assert truth["faults"][0]["start"] == iso(outage_start.timestamp()) and truth["faults"][0]["end"] is None
    assert json.loads((tmp_path / "truth.json").read_text())["unposted_count"] == len(unposted)
    with engine.connect() as conn:
        stored = {row[0] for row in conn.execute(sa.text(UNPOSTED_SQL))}
    assert stored == unposted
    assert sink.totals.rejected == 0 and sink.totals.accepted == truth["events_total"]


@MODES
def test_duplicate_storm_counts_duplicates_and_stores_once(engine, settings, ids):
    now = datetime.now(UTC)
    options = {"seed": 5, "faults": parse_faults(["duplicate_storm@30m+30m"]), "rate_scale": 0.5,
               "backfill": 2 * 3600, "now": now, "ids": ids}
    truth = simulate(store=StoreSink(engine, settings), **options)
    store_totals = truth["sinks"]["store"]
    assert truth["duplicate_records"] > 20
    assert store_totals["duplicates"] == truth["duplicate_records"]
    assert scalar(engine, "SELECT count(*) FROM events") == truth["events_total"] == store_totals["accepted"]
    again = simulate(store=StoreSink(engine, settings), **options)["sinks"]["store"]
    assert again["accepted"] == 0 and again["duplicates"] == again["sent"]


@MODES
def test_live_run_over_http_stores_events_and_rejects_only_drift(collector, engine, ids):
    truth = simulate(
        seed=11, faults=parse_faults(["schema_drift:amazon@30m+1h", "duplicate_storm@1h+30m"]),
        rate_scale=0.3, live=HttpSink(collector.url), speed=3600, duration=3.0, ids=ids,
    )
    http = truth["sinks"]["http"]
    assert truth["events_total"] > 50 and truth["malformed_records"] > 0 and truth["duplicate_records"] > 0
    assert http["rejected"] == truth["malformed_records"]
    assert http["duplicates"] == truth["duplicate_records"]
    assert http["accepted"] == truth["events_total"] == scalar(engine, "SELECT count(*) FROM events")
    assert all(
        any(field in message for field in ("correlation_id", "latency_ms", "occurred_at"))
        for message in http["rejection_samples"]
    )
    assert datetime.fromisoformat(truth["end"]) <= datetime.now(UTC)


def test_a_batch_with_every_record_rejected_is_counted_and_the_run_goes_on(collector, engine, caplog):
    """A 400 listing every record as rejected used to stop the simulator (and the demo) for good."""
    at = datetime.now(UTC).timestamp() - 60

    def record(cid: str, **changes) -> SimEvent:
        base = {"event_id": f"{cid}:order.received", "occurred_at": iso(at), "correlation_id": cid,
                "channel": "ebay", "flow": "order", "stage": "received", "status": "ok", "system": "marketplace"}
        return SimEvent(at, base | changes, malformed=bool(changes))

    bad = [record("bad-1", status="exploded"), record("bad-2", correlation_id=""), record("bad-3", latency_ms=-5)]
    good = [record("good-1"), record("good-2")]
    sink = HttpSink(collector.url)
    with caplog.at_level("WARNING", logger="simulator.emit"):
        sink.send(bad)  # the collector answers 400: none of the 3 could be stored
        sink.send(good)
    sink.close()
    assert (sink.totals.sent, sink.totals.rejected, sink.totals.accepted) == (5, 3, 2)
    assert len(sink.totals.rejections) == 3
    assert scalar(engine, "SELECT count(*) FROM events") == 2
    assert any("3 of 3 records rejected" in r.getMessage() for r in caplog.records)


def test_a_body_refused_as_a_whole_counts_every_record_and_other_errors_still_stop():
    import httpx

    from simulator.emit import EmitError, _answer

    whole = httpx.Response(400, json={"error": "the body is not JSON", "accepted": 0, "duplicates": 0, "rejected": []})
    answer = _answer("http://c/v1/events", whole, 4)
    assert [r["error"] for r in answer["rejected"]] == ["the body is not JSON"] * 4
    with pytest.raises(EmitError, match="401"):
        _answer("http://c/v1/events", httpx.Response(401, json={"error": "a valid key is required"}), 4)


def test_live_stop_event_ends_an_open_ended_run(collector):
    stop = threading.Event()
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    truth = simulate(seed=2, rate_scale=0.1, live=HttpSink(collector.url, stop=stop), speed=600, stop=stop)
    timer.join()
    assert truth["sinks"]["http"]["rejected"] == 0


def test_current_events_can_travel_as_spans(collector, engine):
    at = datetime.now(UTC).timestamp() - 1
    record = {"event_id": "x:order.received:1", "occurred_at": iso(at), "correlation_id": "span-order-1",
              "channel": "shopify", "flow": "order", "stage": "received", "status": "ok",
              "system": "marketplace", "attributes": {"external_order_id": "#1042"}}
    sink = HttpSink(collector.url, span_share=1.0)
    sink.send([SimEvent(at, record)])
    sink.close()
    assert sink.totals.spans == 1
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT correlation_id, trace_id, system FROM events")).one()
    assert row.correlation_id == "span-order-1" and row.trace_id and row.system == "marketplace"


@MODES
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_3pl_file_feed_is_importable(tmp_path, engine, settings, fmt, ids):
    """In real mode the 3PL's records carry no channel (needs ingest linking to be accepted)."""
    now = datetime.now(UTC).timestamp()
    plan = FaultPlan.resolve([], now - 8 * 3600)
    sim = Simulation(seed=4, start=now - 8 * 3600, faults=plan, ids=ids)
    shipped = [e for e in sim.take_before(now) if FileSink.wants(e)]
    files = FileSink(tmp_path, fmt=fmt, every_records=10**6)
    files.send(shipped)
    files.close()
    written = sorted(tmp_path.glob(f"*.{fmt}"))
    assert len(shipped) > 5 and len(written) == 1
    store = EventStore(engine, settings)
    report = import_files(written, lambda records, source: store.ingest(records, source=source, now=datetime.now(UTC)), progress=False)
    assert report.errors == [] and report.accepted == len(shipped)
    assert all(("channel" in e.record) == (ids == "shared") for e in shipped)


def test_cli_backfill_and_bad_fault(tmp_path, engine, monkeypatch):
    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    truth = tmp_path / "truth.json"
    result = CliRunner().invoke(app, ["simulate", "--backfill", "2h", "--rate-scale", "0.2", "--truth", str(truth)])
    assert result.exit_code == 0, result.output
    assert json.loads(truth.read_text())["events_total"] == scalar(engine, "SELECT count(*) FROM events") > 0
    bad = CliRunner().invoke(app, ["simulate", "--backfill", "2h", "--fault", "erp_outage@soon"])
    assert bad.exit_code == 1 and 'fault "erp_outage@soon" start' in bad.output
    old = CliRunner().invoke(app, ["simulate", "--backfill", "40d"])
    assert old.exit_code == 1 and "max_event_age" in old.output
    wrong = CliRunner().invoke(app, ["simulate", "--backfill", "2h", "--ids", "mine"])
    assert wrong.exit_code == 1 and "--ids: 'mine' is not one of shared, real" in wrong.output


def test_cli_backfill_in_real_ids(tmp_path, engine, monkeypatch):
    """Needs ingest linking: the carrier's scans carry no channel."""
    monkeypatch.setenv("CONTROLTOWER_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    truth = tmp_path / "truth.json"
    result = CliRunner().invoke(app, ["simulate", "--backfill", "6h", "--rate-scale", "0.5", "--ids", "real",
                                      "--truth", str(truth)])
    assert result.exit_code == 0, result.output
    written = json.loads(truth.read_text())
    assert written["ids"] == "real" and "real ids" in result.output
    assert written["events_total"] == scalar(engine, "SELECT count(*) FROM events") > 0
    assert scalar(engine, "SELECT count(*) FROM events WHERE channel IS NULL") > 0


def test_demo_entry_point_backfills_then_runs_live_until_stopped(collector, engine, settings, tmp_path):
    stop = threading.Event()
    timer = threading.Timer(1.5, stop.set)
    timer.start()
    truth = run_demo_simulator(
        collector.url, engine, settings, speed=600, seed=9, faults=["inventory_stall:ebay"],
        stop=stop, truth_path=tmp_path / "truth.json", backfill=2 * 3600, rate_scale=0.2,
        drop_folder=tmp_path / "drop",
    )
    timer.join()
    assert truth["ids"] == "real"  # what the demo runs
    assert set(truth["sinks"]) == {"store", "http", "files"}
    assert truth["sinks"]["store"]["accepted"] > 0 and truth["sinks"]["http"]["rejected"] == 0
    assert {(f["channel"], f["location"]) for f in truth["stalled_feeds"]} == {("ebay", "wh-east"), ("ebay", "3pl-west")}
    assert json.loads((tmp_path / "truth.json").read_text())["end"] == truth["end"]
