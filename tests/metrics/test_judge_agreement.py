"""The SLA judge and the SLA table agree: generated business transactions and definitions, real Postgres.

Each generated business transaction has 1-3 member correlation ids sharing an identity key,
each with its own milestones, promises and channel (or none: a carrier's or an ERP's trace),
named by any one of them (`transactions.business_id`). For every example the definitions are
published, the metrics job refreshes its rollups on a real database, and then each business's
verdict from `controltower.slajudge` (fed the members' merged facts and the definitions read
back from `sla_definitions`) must match the table: `overdue` exactly when the business is an
open breach (`sla_open_items`, due before now), `pending` when it is an open item not yet due,
`met`/`breached` when it is a sample with that outcome, each with the same due time, and nothing in either table otherwise
(excluded or no channel, closed, no due time, not started).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from collectors.store import EventStore
from controltower import calendars, migrate, slajudge, transactions
from controltower.settings import Settings
from metrics import definitions, rollups
from metrics.definitions import SLA, Definitions
from tests.conftest import mirror_members, truncate_all

NOW = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
CHANNELS = ("amazon", "pos", "walmart")
FROM, TO, CANCEL, OTHER = "order.received", "order.erp_posted", "cancellation.requested", "order.acknowledged"
ATTR = "promise"
_TABLES = "events, transactions, transaction_keys, transaction_milestones, sla_definitions, sla_samples, sla_open_items, sla_deadlines, " \
          "sla_rollup_minute, sla_rollup_hour, event_rollup_minute, event_rollup_hour, metrics_watermarks"

minutes = st.integers(min_value=-600, max_value=600)
# business calendars (controltower.calendars): NOW is Monday 23 Nov 2026, Thanksgiving is Thu 26
CALENDARS = {
    "us": calendars.Calendar("us", "America/New_York", holidays=(datetime(2026, 11, 26).date(),),
                             cutoff=datetime(2026, 1, 1, 14).time(), pickup=datetime(2026, 1, 1, 17).time()),
    "in": calendars.Calendar("in", "Asia/Kolkata", business_days=(1, 2, 3, 4, 5, 6)),
    "uk": calendars.Calendar("uk", "Europe/London", business_days=(7, 1, 2, 3, 4), cutoff=datetime(2026, 1, 1, 9, 30).time()),
}
LOCATIONS = ("DC-EAST", "DC-WEST", "DC-NORTH")
choices = st.builds(
    lambda default, chans, locs: calendars.Choice(CALENDARS, default=default, channels=chans, locations=locs),
    st.one_of(st.none(), st.sampled_from(sorted(CALENDARS)), st.sampled_from(sorted(CALENDARS))),
    st.dictionaries(st.sampled_from(CHANNELS), st.sampled_from(sorted(CALENDARS)), max_size=2),
    st.dictionaries(st.sampled_from(LOCATIONS[:2]), st.sampled_from(sorted(CALENDARS)), max_size=2),
)
days_ms = st.integers(0, 3).map(lambda d: d * calendars.DAY_MS)
channel_sets = st.lists(st.sampled_from(CHANNELS), unique=True, max_size=2).map(tuple)


@st.composite
def slas(draw: st.DrawFn, index: int) -> SLA:
    kind = draw(st.sampled_from(slajudge.LATENCY_KINDS))
    to = draw(st.sampled_from((TO, OTHER)))
    target = draw(st.integers(1, 300)) * 60_000 + draw(st.integers(0, 999))  # odd milliseconds too
    if kind == "deadline" and draw(st.booleans()):
        target = None  # a promise or nothing
    targets = draw(st.dictionaries(st.sampled_from(CHANNELS), st.integers(1, 300).map(lambda m: m * 60_000), max_size=2))
    calendar = draw(st.one_of(st.none(), choices, choices))
    if calendar is not None and draw(st.integers(0, 3)) > 0:  # whole days: business days (else elapsed time)
        target = draw(days_ms) if target is not None else None
        targets = {channel: draw(days_ms) for channel in targets}
    return SLA(
        name=f"sla_{index}", kind=kind, from_milestone=FROM, to_milestone=to, target_ms=target,
        targets_ms=targets if kind == "milestone_latency" else {},
        deadline_attribute=ATTR if kind == "deadline" else None,
        channels=draw(st.one_of(st.just(()), channel_sets)), exclude_channels=draw(channel_sets.map(lambda c: c[:1])),
        closed_by=draw(st.sampled_from(((), (CANCEL,), (CANCEL, "shipment.delivered")))), calendar=calendar,
    )


def _stamp(moment: datetime, offset_minutes: int) -> str:
    sign = "+" if offset_minutes >= 0 else "-"
    hours, mins = divmod(abs(offset_minutes), 60)
    local = moment.astimezone(UTC) + timedelta(minutes=offset_minutes)
    return local.strftime("%Y-%m-%dT%H:%M:%S") + f"{sign}{hours:02d}:{mins:02d}"


promises = st.one_of(
    st.builds(lambda m, off: _stamp(NOW + timedelta(minutes=m), off), minutes, st.sampled_from((0, 60, -300, 330, 840))),
    st.builds(lambda d: (NOW + timedelta(days=d)).strftime("%Y-%m-%d"), st.integers(-3, 3)),
    st.builds(lambda m: (NOW + timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%MZ"), minutes),
    st.sampled_from((
        "0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00", "1969-12-31", "2200-01-01", "2026-02-30",
        "2026-11-23T12:00:00", "tomorrow", "", "2026-11-23T24:00:00Z", "2026-11-23T12:00:00.1234567Z",
        "٢٠٢٦-١١-٢٣", "2026-11-23\n", "2026-11-23T12:00:00+15:00", "2026-11-23T11:30:00.5z", "2026-11-23 17:00+0530",
    )),
    # any text PostgreSQL can store (jsonb refuses U+0000; the collectors reject it at ingest)
    st.integers(-10, 10**6), st.none(), st.text(st.characters(blacklist_characters="\x00"), max_size=12),
)


@st.composite
def member(draw: st.DrawFn, cid: str, first: bool) -> dict:
    """One correlation id of a business transaction: the marketplace's trace, the ERP's, the
    carrier's... each with the milestones it saw, and a channel only if its system knows one."""
    milestones = {}
    for name in (FROM, TO, OTHER, CANCEL):
        if draw(st.integers(0, 2)) == 0 or (name == FROM and first and draw(st.integers(0, 3)) > 0):
            # some days back too: business-day due times fall over days (weekend, holiday, cut-off)
            milestones[name] = NOW + timedelta(days=draw(st.sampled_from((0, 0, 0, -1, -2))), minutes=draw(minutes),
                                               seconds=draw(st.integers(0, 59)),
                                               microseconds=draw(st.integers(0, 999_999)))
    channel = draw(st.sampled_from(CHANNELS)) if draw(st.integers(0, 2)) > 0 else None
    # the milestone rows carry the channel their event named (or none): the business channel decides
    channels = {m: draw(st.sampled_from((*CHANNELS, None))) for m in milestones}
    # the `from` events may carry promises (several events: the earliest valid one counts)
    from_attributes = draw(st.lists(st.one_of(st.just({}), st.builds(lambda v: {ATTR: v}, promises)), max_size=2))
    # and a location (a DC with its own calendar, one without, or not a name at all)
    from_attributes = [a | ({"location": draw(st.sampled_from((*LOCATIONS, 7, None)))} if draw(st.booleans()) else {})
                       for a in from_attributes]
    # first events close together, ties too: the member order is (first_event_at, correlation_id)
    first_event_at = NOW - timedelta(hours=11, minutes=draw(st.integers(0, 3)))
    return {"cid": cid, "channel": channel, "channels": channels, "milestones": milestones,
            "from_attributes": from_attributes, "first_event_at": first_event_at}


@st.composite
def business(draw: st.DrawFn, index: int) -> dict:
    """A business transaction of 1-3 members sharing an identity key; named by any member."""
    members = [draw(member(f"T{index}.{j}", j == 0)) for j in range(draw(st.integers(1, 3)))]
    bid = draw(st.sampled_from([m["cid"] for m in members]))
    return {"bid": bid, "key": f"SO-{index}", "members": members}


def _store(engine, businesses: list[dict]) -> None:
    with engine.begin() as conn:
        for biz in businesses:
            for tx in biz["members"]:
                conn.execute(
                    sa.text(
                        "INSERT INTO transactions (correlation_id, channel, flow, first_event_at, first_event_id,"
                        " last_event_at, last_event_id, status, last_milestone, event_count, error_count, retry_count,"
                        " dead_letter_count, updated_at, business_id) VALUES (:cid, :ch, 'order', :first, 'e0', :last,"
                        " 'e0', 'ok', 'order.received', 1, 0, 0, 0, :rec, :bid)"
                    ),
                    {"cid": tx["cid"], "ch": tx["channel"], "first": tx["first_event_at"],
                     "last": NOW + timedelta(hours=11), "rec": NOW, "bid": biz["bid"]},
                )
                conn.execute(
                    sa.text("INSERT INTO transaction_keys VALUES (:v, 'order_id', :cid, :at)"),
                    {"v": biz["key"], "cid": tx["cid"], "at": tx["first_event_at"]},
                )
                for milestone, at in tx["milestones"].items():
                    conn.execute(
                        sa.text("INSERT INTO transaction_milestones VALUES (:cid, :m, :at, :ch, :rec)"),
                        {"cid": tx["cid"], "m": milestone, "at": at, "ch": tx["channels"][milestone], "rec": NOW},
                    )
                at = tx["milestones"].get(FROM, NOW)
                for n, attributes in enumerate(tx["from_attributes"]):
                    conn.execute(
                        sa.text(
                            "INSERT INTO events (occurred_at, correlation_id, event_id, received_at, channel, flow, stage,"
                            " status, attributes, source) VALUES (:at, :cid, :eid, :rec, :ch, 'order', 'received', 'ok',"
                            " CAST(:attrs AS jsonb), 'test')"
                        ),
                        {"at": at, "cid": tx["cid"], "eid": f"e{n}", "rec": NOW, "ch": tx["channel"],
                         "attrs": orjson.dumps(attributes).decode()},
                    )
        mirror_members(conn)


def _facts(biz: dict) -> slajudge.Facts:
    ordered = sorted(biz["members"], key=lambda m: (m["first_event_at"], m["cid"]))
    return slajudge.Facts.merged(
        slajudge.Facts(milestones=m["milestones"], channel=m["channel"], channels=m["channels"],
                       attributes={FROM: m["from_attributes"]})
        for m in ordered
    )


def _table(engine) -> dict[tuple[str, str], tuple[str, datetime]]:
    out = {}
    with engine.connect() as conn:
        for sla, cid, due in conn.execute(sa.text("SELECT sla, correlation_id, due_at FROM sla_open_items")):
            out[(sla, cid)] = ("overdue" if due < NOW else "pending", due)
        for sla, cid, met, due in conn.execute(sa.text("SELECT sla, correlation_id, met, due_at FROM sla_samples")):
            assert (sla, cid) not in out, (sla, cid)
            out[(sla, cid)] = ("met" if met else "breached", due)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_judge_and_sla_table_agree_on_every_open_breach_and_sample(migrated_engine, data):
    engine = migrated_engine
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {_TABLES}"))  # noqa: S608 (constant list)
    migrate.ensure_partitions(engine, {(NOW + timedelta(days=d)).date() for d in (-3, -2, -1, 0, 1)})
    defs = Definitions(tuple(data.draw(slas(i)) for i in range(data.draw(st.integers(1, 3)))))
    businesses = [data.draw(business(i)) for i in range(data.draw(st.integers(1, 5)))]
    _store(engine, businesses)
    definitions.publish(engine, defs)
    rollups.refresh_rollups(engine, defs, NOW)

    with engine.connect() as conn:
        published = transactions.published(conn)
    assert sorted(d.name for d in published) == sorted(s.name for s in defs.slas)
    expected = {}
    for biz in businesses:
        facts = _facts(biz)
        event(f"members {len(biz['members'])}" + (" without channel" if facts.channel is None else ""))
        for sla in published:
            verdict = slajudge.judge(sla, facts, now=NOW)
            event(f"verdict {verdict.state}" + (" (promise ignored)" if verdict.reason and "ignored" in verdict.reason else ""))
            if verdict.calendar is not None:
                event(f"verdict {verdict.state} by calendar {verdict.calendar.name}")
            if verdict.state in ("met", "breached", "pending", "overdue"):
                expected[(sla.name, biz["bid"])] = (verdict.state, verdict.due_at)
    assert _table(engine) == expected


# -- the same agreement through real ingest: traces linked by shared keys, in any arrival order --

structured_promises = st.one_of(
    st.builds(lambda m, off: _stamp(NOW + timedelta(minutes=m), off), minutes, st.sampled_from((0, 60, -300, 330, 840))),
    st.builds(lambda d: (NOW + timedelta(days=d)).strftime("%Y-%m-%d"), st.integers(-3, 3)),
)  # ingest refuses what is not a promise (the direct-write test above covers those)
past = st.integers(min_value=-600, max_value=-1)


@st.composite
def linked_business(draw: st.DrawFn, index: int) -> list[dict]:
    """1-3 traces of one order; trace 0 and 1 share the order number, 1 and 2 the ERP document
    (a transitive link). A trace knows one channel or none, and may omit it on some events."""
    members = []
    for j in range(draw(st.integers(1, 3))):
        keys = ({"external_order_id": f"EXT-{index}"} if j <= 1 else {}) | ({"erp_document": f"DOC-{index}"} if j >= 1 else {})
        channel = draw(st.sampled_from((*CHANNELS, None)))
        events = []
        for n in range(draw(st.integers(1, 3))):
            milestone = draw(st.sampled_from((FROM, FROM, TO, OTHER, CANCEL)))
            at = NOW + timedelta(minutes=draw(past), seconds=draw(st.integers(0, 59)))
            attributes = dict(keys)
            if milestone == FROM and draw(st.booleans()):
                attributes[ATTR] = draw(structured_promises)
            if milestone == FROM and draw(st.booleans()):
                attributes["location"] = draw(st.sampled_from(LOCATIONS))
            flow, stage = milestone.split(".")
            record = {"event_id": f"e{n}", "occurred_at": at.isoformat(), "correlation_id": f"L{index}.{j}",
                      "flow": flow, "stage": stage, "status": "ok", "system": "middleware", "attributes": attributes}
            if channel is not None and draw(st.integers(0, 3)) > 0:
                record["channel"] = channel
            events.append(record)
        members.append({"cid": f"L{index}.{j}", "events": events})
    return members


def _member_facts(member: dict) -> tuple[tuple[datetime, str], slajudge.Facts]:
    """What ingest keeps of one trace, worked out from its events: the earliest time of each
    milestone, its channel (the one its events name, if any), its `from` events' attributes."""
    milestones: dict[str, datetime] = {}
    channel = None
    promised_attributes = []
    for e in member["events"]:
        at = datetime.fromisoformat(e["occurred_at"])
        name = f"{e['flow']}.{e['stage']}"
        milestones[name] = min(at, milestones.get(name, at))
        channel = channel or e.get("channel")
        if name == FROM:
            promised_attributes.append(e["attributes"])
    first = min((datetime.fromisoformat(e["occurred_at"]), e["event_id"]) for e in member["events"])[0]
    facts = slajudge.Facts(milestones=milestones, channel=channel, attributes={FROM: promised_attributes})
    return (first, member["cid"]), facts


def _derived(engine) -> dict[str, list]:
    out = {}
    with engine.connect() as conn:
        for name in ("sla_samples", "sla_open_items", "sla_rollup_minute", "sla_rollup_hour"):
            out[name] = sorted(tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {name}")))  # noqa: S608 (constant names)
        # a channel-less event may stay under `unknown` until its minute is recounted (see
        # metrics.rollups) when its business gains a channel without a link: totals must agree
        out["event_rollup_minute"] = sorted(tuple(r) for r in conn.execute(sa.text(
            "SELECT minute, flow, stage, status, sum(count) FROM event_rollup_minute GROUP BY 1, 2, 3, 4")))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_judge_and_sla_table_agree_on_linked_traces_in_any_arrival_order(migrated_engine, data):
    engine = migrated_engine
    truncate_all(engine)
    migrate.ensure_partitions(engine, {(NOW + timedelta(days=d)).date() for d in (-1, 0, 1)})
    defs = Definitions(tuple(data.draw(slas(i)) for i in range(data.draw(st.integers(1, 3)))))
    definitions.publish(engine, defs)
    businesses = [data.draw(linked_business(i)) for i in range(data.draw(st.integers(1, 4)))]
    records = [e for members in businesses for m in members for e in m["events"]]
    records = data.draw(st.permutations(records))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(records)), max_size=2)))
    batches = [records[a:b] for a, b in zip([0, *cuts], [*cuts, len(records)], strict=True)]
    # a refresh after every batch: a link in a later batch merges transactions already counted
    for k, batch in enumerate(batches):
        at = NOW - timedelta(minutes=30) + timedelta(minutes=5 * k)
        if batch:
            result = EventStore(engine, Settings.load({"database_url": str(engine.url)}, environ={})).ingest(
                batch, source="test", now=at)
            assert not result.rejected, result.rejected
        rollups.refresh_rollups(engine, defs, at + timedelta(minutes=3))
    rollups.refresh_rollups(engine, defs, NOW)

    with engine.connect() as conn:
        published = transactions.published(conn)
        business_of = dict(conn.execute(sa.text("SELECT correlation_id, business_id FROM transactions")).all())
    expected = {}
    for members in businesses:
        ids = {business_of[m["cid"]] for m in members}
        assert len(ids) == 1, ids  # one business per order, whatever the arrival order
        facts = slajudge.Facts.merged(f for _, f in sorted(_member_facts(m) for m in members))
        event(f"linked members {len(members)}")
        for sla in published:
            verdict = slajudge.judge(sla, facts, now=NOW)
            if verdict.state in ("met", "breached", "pending", "overdue"):
                expected[(sla.name, business_of[members[0]["cid"]])] = (verdict.state, verdict.due_at)
    got = _table(engine)
    assert got == expected, {k: (got.get(k), expected.get(k)) for k in got.keys() | expected.keys() if got.get(k) != expected.get(k)}
    incremental = _derived(engine)
    rollups.rebuild(engine, defs, NOW)
    rebuilt = _derived(engine)
    assert rebuilt == incremental, {k: (sorted(set(incremental[k]) - set(rebuilt[k])), sorted(set(rebuilt[k]) - set(incremental[k])))
                                    for k in rebuilt if rebuilt[k] != incremental[k]}
