"""Business calendars in the metrics room: YAML errors with file:line, Python and SQL agree on
every due time, and a weekend order is measured end to end as the marketplace measures it."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controltower import calendars, transactions
from controltower.calendars import Calendar
from controltower.errors import ConfigError
from controltower.slajudge import Facts, judge
from metrics import compute, definitions, jobs
from tests.metrics.helpers import ev, ingest

YAML = """\
calendars:
  us-retail:
    timezone: America/New_York
    business_days: [mon, tue, wed, thu, fri]
    holidays: [2026-12-25, 2027-01-01]
    cutoff: "14:00"
    pickup: "17:00"
  dc-east:
    timezone: America/New_York
    business_days: [mon, tue, wed, thu, fri, sat]
slas:
  - name: handling_time
    kind: milestone_latency
    from: order.received
    to: shipment.shipment_confirmed
    target: 1d
    targets:
      ebay: 2d
    calendar:
      default: us-retail
      locations:
        DC-EAST: dc-east
"""


@pytest.mark.parametrize(("old", "new", "error"), [
    ("America/New_York\n    business_days: [mon, tue, wed, thu, fri]", "Mars/Olympus\n    business_days: [mon]",
     "f.yaml:3: calendar us-retail: timezone 'Mars/Olympus' is not a known IANA time zone"),
    ("[mon, tue, wed, thu, fri, sat]", "[mon, tue, wed, thu, fri, sam]",
     "f.yaml:10: calendar dc-east: business_days: 'sam' is not a day name"),
    ("ebay: 2d", "ebay: 36h", "f.yaml:18: handling_time: with a calendar, ebay must be a whole number of business days"),
    ("target: 1d", "target: 90m", "f.yaml:16: handling_time: with a calendar, target must be a whole number"),
    ("default: us-retail", "default: eu-retail", "f.yaml:20: calendar: unknown calendar 'eu-retail' (known: dc-east, us-retail)"),
    ("DC-EAST: dc-east", "DC-EAST: dc-west", "f.yaml:22: calendar: unknown calendar 'dc-west'"),
    ('cutoff: "14:00"', "cutoff: 14", "f.yaml:6: calendar us-retail: cutoff: 14 is not a time"),
    ('pickup: "17:00"', 'pickup: "5pm"', "f.yaml:7: calendar us-retail: pickup: '5pm' is not a time"),
    ("2026-12-25,", "2026-12-32,", "f.yaml:5: "),
    ("2027-01-01]", "next-monday]", "f.yaml:5: calendar us-retail: holidays: 'next-monday' is not a date"),
    ("    pickup: \"17:00\"\n", "    pickup: \"17:00\"\n    closing: \"18:00\"\n", "f.yaml:8: calendar us-retail: unknown key 'closing'"),
])
def test_yaml_errors_name_file_and_line(old, new, error):
    assert old in YAML
    with pytest.raises(ConfigError) as exc:
        definitions.loads(YAML.replace(old, new), "f.yaml")
    assert str(exc.value).startswith(error), str(exc.value)


def test_unquoted_times_read_as_written():
    defs = definitions.loads(YAML.replace('cutoff: "14:00"', "cutoff: 14:00"), "f.yaml")
    assert defs == definitions.loads(YAML, "f.yaml")


def test_yaml_parses_the_calendars_and_the_choice():
    defs = definitions.loads(YAML, "f.yaml")
    sla = defs.get("handling_time")
    assert sla and sla.calendar
    us = sla.calendar.calendars["us-retail"]
    assert (us.business_days, us.holidays, us.cutoff, us.pickup) == (
        (1, 2, 3, 4, 5), (date(2026, 12, 25), date(2027, 1, 1)), time(14), time(17))
    assert sla.calendar.pick("amazon", ["DC-EAST"]).business_days == (1, 2, 3, 4, 5, 6)
    assert [c.name for c in defs.calendars] == ["us-retail", "dc-east"]


def test_shipped_slas_file_has_a_valid_calendar():
    shipped = definitions.load()
    assert "us-retail" in {c.name for c in shipped.calendars}


# -- Python (controltower.calendars.due) and SQL (ct_business_due) give the same instant --

ZONES = ("America/New_York", "Europe/London", "Australia/Sydney", "Asia/Kolkata", "America/Santiago", "Pacific/Chatham")
# around the 2026 DST changes of these zones, weekends and the holidays below
BASE = datetime(2026, 3, 1, tzinfo=UTC)
starts = st.one_of(
    st.builds(lambda m: BASE + timedelta(minutes=m), st.integers(0, 60 * 24 * 70)),  # March–early May
    st.builds(lambda m: datetime(2026, 9, 20, tzinfo=UTC) + timedelta(minutes=m), st.integers(0, 60 * 24 * 60)),  # Sep–Nov
    st.builds(lambda s: BASE + timedelta(seconds=s, microseconds=7), st.integers(0, 86400 * 300)),
)
times = st.one_of(st.none(), st.builds(time, st.integers(0, 23), st.sampled_from((0, 15, 30, 59))),
                  st.sampled_from((time(2, 30), time(1, 30), time(0, 0), time(14), time(17))))
calendars_st = st.builds(
    lambda zone, days, holidays, cutoff, pickup: Calendar("c", zone, tuple(sorted(days)), tuple(sorted(holidays)), cutoff, pickup),
    st.sampled_from(ZONES),
    st.sets(st.integers(1, 7), min_size=1, max_size=7),
    st.sets(st.builds(lambda d: date(2026, 3, 1) + timedelta(days=d), st.integers(0, 280)), max_size=12),
    times, times,
)

_SQL = sa.text(
    "SELECT ct_business_due(:start, :days, :tz, CAST(:workdays AS int[]), CAST(:holidays AS date[]), "
    "CAST(:cutoff AS time), CAST(:pickup AS time))"
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=starts, days=st.integers(0, 12), calendar=calendars_st)
def test_python_and_sql_agree_on_every_due_time(migrated_engine, start, days, calendar):
    with migrated_engine.connect() as conn:
        got = conn.execute(_SQL, {"start": start, "days": days, **calendar.sql_args()}).scalar_one()
    assert got == calendars.due(start, days, calendar)


# -- end to end through metrics.jobs.refresh: the weekend order --

SAT_10 = datetime(2026, 12, 5, 15, tzinfo=UTC)  # Saturday 5 Dec 10:00 New York (EST)
SUN_23 = datetime(2026, 12, 7, 4, tzinfo=UTC)  # Sunday 6 Dec 23:00 New York
TUE_EVENING = datetime(2026, 12, 8, 23, tzinfo=UTC)  # Tuesday 8 Dec 18:00 New York
TUE_PICKUP = datetime(2026, 12, 8, 22, tzinfo=UTC)  # Tuesday 17:00 New York


def _open_breaches(engine, defs, now):
    with engine.connect() as conn:
        rows = compute.sla_table(conn, defs, window=timedelta(days=7), now=now)
        return sum(r["open_breaches"] for r in rows if r["sla"] == "handling_time")  # no row: none


def test_weekend_order_is_not_breached_on_sunday_and_is_on_tuesday_evening(engine, settings):
    defs = definitions.loads(YAML, "f.yaml")
    definitions.publish(engine, defs)
    ingest(engine, settings, [
        ev("W1", "order.received", SAT_10, channel="amazon"),  # 1 business day, us-retail: Tue 17:00
        # the same order from the Saturday-working DC: its own calendar, due Mon 7 Dec end of day
        ev("W2", "order.received", SAT_10, channel="amazon", location="DC-EAST"),
    ], now=SAT_10 + timedelta(minutes=1))
    jobs.refresh(engine, defs, SUN_23)
    assert _open_breaches(engine, defs, SUN_23) == 0
    with engine.connect() as conn:
        items = dict(conn.execute(sa.text("SELECT correlation_id, due_at FROM sla_open_items")).all())
        calendar_of = dict(conn.execute(sa.text("SELECT correlation_id, calendar FROM sla_open_items")).all())
    assert items == {"W1": TUE_PICKUP, "W2": datetime(2026, 12, 8, 5, tzinfo=UTC) - timedelta(microseconds=1)}
    assert calendar_of == {"W1": "us-retail", "W2": "dc-east"}

    jobs.refresh(engine, defs, TUE_EVENING)
    assert _open_breaches(engine, defs, TUE_EVENING) == 2
    jobs.refresh(engine, defs, TUE_PICKUP - timedelta(minutes=1))
    assert _open_breaches(engine, defs, TUE_PICKUP - timedelta(minutes=1)) == 1  # only the DC order

    # the transaction view says the same, with its calendar
    with engine.connect() as conn:
        tx = transactions.get(conn, "W1", now=SUN_23)
    verdict = next(v for v in tx["sla"] if v["sla"] == "handling_time")
    assert (verdict["state"], verdict["due_at"]) == ("pending", "2026-12-08T22:00:00.000Z")
    assert verdict["calendar"]["due"].startswith("Tue 8 Dec 17:00 America/New_York, calendar us-retail: Mon–Fri, cut-off 14:00")


@pytest.mark.parametrize(("start", "pickup", "expected"), [
    # Sun 8 Mar 2026 02:30 does not exist in New York: moved forward to 03:30 EDT = 07:30 UTC
    (datetime(2026, 3, 8, 5, tzinfo=UTC), time(2, 30), datetime(2026, 3, 8, 7, 30, tzinfo=UTC)),
    # Sun 1 Nov 2026 01:30 happens twice: the later, 01:30 EST = 06:30 UTC
    (datetime(2026, 11, 1, 4, 30, tzinfo=UTC), time(1, 30), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)),
    # no pickup on the 23-hour day: local midnight of Mon 9 Mar is 04:00 UTC
    (datetime(2026, 3, 8, 5, tzinfo=UTC), None, datetime(2026, 3, 9, 4, tzinfo=UTC) - timedelta(microseconds=1)),
])
def test_sql_reads_skipped_and_repeated_local_times_by_the_rule(migrated_engine, start, pickup, expected):
    every_day = Calendar("every-day", "America/New_York", (1, 2, 3, 4, 5, 6, 7), (), None, pickup)
    with migrated_engine.connect() as conn:
        assert conn.execute(_SQL, {"start": start, "days": 0, **every_day.sql_args()}).scalar_one() == expected
    assert calendars.due(start, 0, every_day) == expected


@pytest.mark.parametrize(("received", "due"), [
    # Fri 4 Dec 2026 15:00 New York (no cut-off): Mon, Tue → the end of Tue 8 Dec (05:00 UTC Wed)
    (datetime(2026, 12, 4, 20, tzinfo=UTC), datetime(2026, 12, 9, 5, tzinfo=UTC)),
    # Wed 25 Nov 2026: Thanksgiving Thu 26 is a holiday → Fri 27, Mon 30
    (datetime(2026, 11, 25, 15, tzinfo=UTC), datetime(2026, 12, 1, 5, tzinfo=UTC)),
    # Sat 26 Dec: counts from Mon 28 → Tue 29, Wed 30
    (datetime(2026, 12, 26, 15, tzinfo=UTC), datetime(2026, 12, 31, 5, tzinfo=UTC)),
])
def test_shipped_return_refund_counts_two_us_business_days(received, due):
    sla = definitions.load().get("return_refund")
    assert sla is not None
    facts = Facts(milestones={"return.received": received}, channel="amazon")
    verdict = judge(sla.judged, facts, now=received)
    assert (verdict.due_at, verdict.calendar and verdict.calendar.name) == (due - timedelta(microseconds=1), "us-retail")


def test_a_zero_day_target_is_the_same_business_day_with_a_calendar_and_refused_without():
    defs = definitions.loads(YAML.replace("target: 1d", "target: 0d"), "f.yaml")
    sla = defs.get("handling_time")
    assert sla.target_ms == 0
    cal = Calendar("us-retail", "America/New_York", holidays=frozenset(), cutoff=time(14), pickup=time(17))
    monday_morning = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 10:00 in New York
    assert calendars.due(monday_morning, 0, cal) == datetime(2026, 11, 30, 22, 0, tzinfo=UTC)  # 17:00 there
    plain = ("slas:\n  - name: same_day\n    kind: milestone_latency\n    from: order.received\n"
             "    to: shipment.shipment_confirmed\n    target: 0d\n")
    with pytest.raises(ConfigError) as exc:
        definitions.loads(plain, "f.yaml")
    assert "f.yaml:6: target: must be greater than zero (0d, the same business day, needs a calendar)" in str(exc.value)
