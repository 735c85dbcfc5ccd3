"""Route time intervals (Alertmanager's `time_intervals`): parsing with file:line errors, `contains`
table-driven (weekdays, days of month from the end, months, years, time zones, DST, 24:00), and
mute / active intervals on routes in evaluation (held firing goes out after the mute; resolved
during a mute is dropped)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.evaluate import evaluate
from alerts.rules import parse
from alerts.timeintervals import contains, parse_time_intervals
from controltower.errors import ConfigError
from controltower.yamlfile import loads
from tests.alerts.test_evaluate import outbox, put_row


def intervals(text: str):
    return parse_time_intervals(loads(text, "t.yaml"), loads(text, "t.yaml").data["time_intervals"], "time_intervals")


def one(period: str):
    return intervals(f"time_intervals:\n  - name: x\n    time_intervals:\n      - {period}\n")["x"]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# 2026-11-23 is a Monday; 2026-03-29 is the EU switch to summer time (02:00 CET -> 03:00 CEST);
# 2026-10-25 back to winter time.
CASES = [
    # (period, instant, expected)
    ('{times: [{start_time: "09:00", end_time: "17:00"}]}', utc(2026, 11, 23, 9, 0), True),
    ('{times: [{start_time: "09:00", end_time: "17:00"}]}', utc(2026, 11, 23, 16, 59), True),
    ('{times: [{start_time: "09:00", end_time: "17:00"}]}', utc(2026, 11, 23, 17, 0), False),  # end exclusive
    ('{times: [{start_time: "09:00", end_time: "17:00"}]}', utc(2026, 11, 23, 8, 59), False),
    ('{times: [{start_time: "22:00", end_time: "24:00"}]}', utc(2026, 11, 23, 23, 59), True),
    ('{times: [{start_time: "22:00", end_time: "24:00"}]}', utc(2026, 11, 24, 0, 0), False),
    ("{times: [{start_time: 17:00, end_time: 24:00}]}", utc(2026, 11, 23, 18, 0), True),  # unquoted (YAML 1.1)
    ('{weekdays: ["monday:friday"]}', utc(2026, 11, 23, 12), True),  # Monday
    ('{weekdays: ["monday:friday"]}', utc(2026, 11, 27, 23, 59), True),  # Friday
    ('{weekdays: ["monday:friday"]}', utc(2026, 11, 28, 0, 0), False),  # Saturday
    ('{weekdays: ["saturday", "Sunday"]}', utc(2026, 11, 29, 10), True),
    ('{days_of_month: ["1:5"]}', utc(2026, 11, 5, 23), True),
    ('{days_of_month: ["1:5"]}', utc(2026, 11, 6, 0), False),
    ('{days_of_month: ["-1"]}', utc(2026, 2, 28, 12), True),  # last day of a 28-day February
    ('{days_of_month: ["-1"]}', utc(2028, 2, 28, 12), False),  # 2028 is a leap year
    ('{days_of_month: ["-1"]}', utc(2028, 2, 29, 12), True),
    ('{days_of_month: ["-3:-1"]}', utc(2026, 11, 28, 0), True),  # 28, 29, 30 November
    ('{days_of_month: ["-3:-1"]}', utc(2026, 11, 27, 23), False),
    ('{days_of_month: ["31"]}', utc(2026, 12, 1, 0), False),  # no 31 November: never spills into December
    ('{days_of_month: ["31"]}', utc(2026, 12, 31, 0), True),
    ('{months: ["december"]}', utc(2026, 12, 1), True),
    ('{months: ["january:march", "11"]}', utc(2026, 11, 15), True),
    ('{months: ["january:march"]}', utc(2026, 4, 1), False),
    ('{years: ["2026:2027"]}', utc(2027, 12, 31, 23, 59), True),
    ('{years: ["2026:2027"]}', utc(2028, 1, 1), False),
    # Time zones: the wall clock of the location.
    ('{times: [{start_time: "09:00", end_time: "17:00"}], location: Europe/Berlin}', utc(2026, 11, 23, 8, 0), True),
    ('{times: [{start_time: "09:00", end_time: "17:00"}], location: Europe/Berlin}', utc(2026, 11, 23, 16, 0), False),
    ('{weekdays: [monday], location: America/New_York}', utc(2026, 11, 24, 3, 0), True),  # Mon 22:00 in New York
    # DST: 09:00 stays nine in the morning on both sides of the change.
    ('{times: [{start_time: "09:00", end_time: "17:00"}], location: Europe/Berlin}', utc(2026, 3, 28, 7, 30), False),
    ('{times: [{start_time: "09:00", end_time: "17:00"}], location: Europe/Berlin}', utc(2026, 3, 29, 7, 30), True),
    ('{times: [{start_time: "09:00", end_time: "17:00"}], location: Europe/Berlin}', utc(2026, 10, 25, 7, 30), False),
    ('{times: [{start_time: "09:00", end_time: "17:00"}], location: Europe/Berlin}', utc(2026, 10, 25, 8, 0), True),
    # The skipped hour on 29 March: 00:59 UTC is 01:59 CET, 01:00 UTC is already 03:00 CEST.
    ('{times: [{start_time: "02:00", end_time: "03:00"}], location: Europe/Berlin}', utc(2026, 3, 29, 0, 59), False),
    ('{times: [{start_time: "02:00", end_time: "03:00"}], location: Europe/Berlin}', utc(2026, 3, 29, 1, 0), False),
    # All fields together.
    ('{times: [{start_time: "09:00", end_time: "17:00"}], weekdays: ["monday:friday"], months: [november],'
     ' years: ["2026"], location: Europe/Berlin}', utc(2026, 11, 23, 10), True),
    ('{times: [{start_time: "09:00", end_time: "17:00"}], weekdays: ["monday:friday"], months: [november],'
     ' years: ["2026"], location: Europe/Berlin}', utc(2026, 11, 28, 10), False),
]


@pytest.mark.parametrize(("period", "at", "expected"), CASES)
def test_contains(period, at, expected):
    assert contains(one(period), at) is expected


def test_a_named_interval_contains_when_any_period_does():
    iv = intervals("""time_intervals:
  - name: off-hours
    time_intervals:
      - times: [{start_time: "00:00", end_time: "08:00"}]
      - weekdays: [saturday, sunday]
""")["off-hours"]
    assert contains(iv, utc(2026, 11, 23, 7, 59)) and contains(iv, utc(2026, 11, 28, 12))
    assert not contains(iv, utc(2026, 11, 23, 8, 0))


BAD = [
    ('{times: [{start_time: "17:00", end_time: "09:00"}]}', "t.yaml:4: times: start_time must be before end_time"),
    ('{times: [{start_time: "9am", end_time: "17:00"}]}', "t.yaml:4: start_time: '9am' is not a time of day"),
    ('{times: [{start_time: "00:00", end_time: "24:30"}]}', "t.yaml:4: end_time: '24:30' is not a time of day"),
    ('{weekdays: ["funday"]}', "t.yaml:4: weekdays: 'funday' is not valid"),
    ('{weekdays: ["friday:monday"]}', "t.yaml:4: weekdays: range 'friday:monday' starts after it ends"),
    ('{days_of_month: ["0"]}', "t.yaml:4: days_of_month: '0' is not valid"),
    ('{days_of_month: ["-1:5"]}', "t.yaml:4: days_of_month: range '-1:5' mixes"),
    ('{days_of_month: ["32"]}', "t.yaml:4: days_of_month: '32' is not valid"),
    ('{months: ["smarch"]}', "t.yaml:4: months: 'smarch' is not valid"),
    ("{location: Mars/Olympus}", "t.yaml:4: location: 'Mars/Olympus' is not a known time zone"),
    ("{hours: [1]}", "t.yaml:4: unknown field 'hours'"),
]


@pytest.mark.parametrize(("period", "message"), BAD)
def test_bad_periods_name_file_and_line(period, message):
    with pytest.raises(ConfigError) as err:
        one(period)
    assert str(err.value).startswith(message)


RULES = """
time_intervals:
  - name: night
    time_intervals:
      - times: [{start_time: "00:00", end_time: "06:00"}]
  - name: office
    time_intervals:
      - times: [{start_time: "09:00", end_time: "17:00"}]
        weekdays: ["monday:friday"]
receivers:
  hook: {type: log}
  day-desk: {type: log}
default_receivers: [hook]
routes:
  - match: {channel: amazon}
    receivers: [hook]
    mute_time_intervals: [night]
  - match: {channel: ebay}
    receivers: [day-desk]
    active_time_intervals: [office]
rules:
  - name: UnpostedOrders
    sla: erp_posting
    field: open_breaches
    op: ">"
    value: 0
"""


def test_route_references_must_exist():
    bad = RULES.replace("mute_time_intervals: [night]", "mute_time_intervals: [nite]")
    with pytest.raises(ConfigError, match=r"^t.yaml:17: unknown time interval 'nite' \(defined: night, office\)"):
        parse(loads(bad, "t.yaml"))


def test_muted_route_holds_firing_until_the_mute_ends_and_drops_resolved(engine):
    rs = parse(loads(RULES, "t.yaml"))
    night = utc(2026, 11, 23, 2, 0)  # Monday 02:00 UTC: amazon's route is muted
    put_row(engine, channel="amazon", open_breaches=3)
    [t] = evaluate(engine, rs.rules, night, routes=rs.routes)
    assert (t.to_state, t.notification, t.deferred) == ("firing", None, "muted")
    assert outbox(engine) == []
    # still muted five minutes later: nothing
    evaluate(engine, rs.rules, night + timedelta(minutes=5), routes=rs.routes)
    assert outbox(engine) == []
    # 06:00: the mute is over and the alert still fires -> the held firing notification goes out
    [t] = evaluate(engine, rs.rules, utc(2026, 11, 23, 6, 0), routes=rs.routes)
    assert (t.notification, t.deferred, t.receivers) == ("firing", None, ("hook",))
    assert [(r["kind"], r["receiver"]) for r in outbox(engine)] == [("firing", "hook")]
    # resolves the next night, during the mute: the state resolves, the notice is dropped
    put_row(engine, channel="amazon", open_breaches=0)
    [t] = evaluate(engine, rs.rules, utc(2026, 11, 24, 1, 0), routes=rs.routes)
    assert (t.to_state, t.notification, t.deferred) == ("resolved", None, "muted")
    assert len(outbox(engine)) == 1


def test_fired_and_resolved_inside_a_mute_sends_nothing(engine):
    rs = parse(loads(RULES, "t.yaml"))
    put_row(engine, channel="amazon", open_breaches=3)
    evaluate(engine, rs.rules, utc(2026, 11, 23, 1, 0), routes=rs.routes)
    put_row(engine, channel="amazon", open_breaches=0)
    [t] = evaluate(engine, rs.rules, utc(2026, 11, 23, 2, 0), routes=rs.routes)
    assert (t.from_state, t.to_state, t.notification) == ("firing", "resolved", None)
    evaluate(engine, rs.rules, utc(2026, 11, 23, 7, 0), routes=rs.routes)
    assert outbox(engine) == []


def test_active_time_intervals_send_only_inside_them(engine):
    rs = parse(loads(RULES, "t.yaml"))
    put_row(engine, channel="ebay", open_breaches=2)
    saturday = utc(2026, 11, 28, 10, 0)
    [t] = evaluate(engine, rs.rules, saturday, routes=rs.routes)
    assert t.deferred == "muted" and outbox(engine) == []
    monday = utc(2026, 11, 30, 9, 0)
    [t] = evaluate(engine, rs.rules, monday, routes=rs.routes)
    assert t.notification == "firing" and [r["receiver"] for r in outbox(engine)] == ["day-desk"]


def test_routes_without_intervals_and_unrouted_alerts_are_never_muted(engine):
    rs = parse(loads(RULES, "t.yaml"))
    put_row(engine, channel="walmart", open_breaches=1)  # no route: the rule's (default) receivers
    [t] = evaluate(engine, rs.rules, utc(2026, 11, 23, 2, 0), routes=rs.routes)
    assert t.notification == "firing" and [r["receiver"] for r in outbox(engine)] == ["hook"]
