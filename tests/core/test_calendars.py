"""Business calendars, table-driven: due times worked out by hand on a wall calendar.

December 2026: Fri 4, Sat 5, Sun 6, Mon 7, Tue 8, Wed 9; Fri 25 is Christmas. New York is
UTC-5 in December (EST) and UTC-4 in summer (EDT); DST began Sun 8 Mar 2026 02:00 (→ 03:00)
and ends Sun 1 Nov 2026 02:00 (→ 01:00).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from controltower import calendars
from controltower.calendars import Calendar, Choice, due
from controltower.slajudge import Definition, Facts, judge

NY = "America/New_York"
US = Calendar("us-retail", NY, holidays=(date(2026, 12, 25),), cutoff=time(14), pickup=time(17))
PLAIN = Calendar("plain", NY)  # Mon–Fri, no cut-off, due at the end of the day
EVERY_DAY = Calendar("every-day", NY, business_days=(1, 2, 3, 4, 5, 6, 7))


def ny(*args: int) -> datetime:
    """A New York wall-clock time in December (EST, UTC-5) as UTC."""
    return datetime(*args, tzinfo=UTC) + timedelta(hours=5)


@pytest.mark.parametrize(("start", "days", "calendar", "expected"), [
    # the weekend order: Saturday 10:00 counts from Monday; 1 business day → Tuesday pickup
    (ny(2026, 12, 5, 10), 1, US, ny(2026, 12, 8, 17)),
    (ny(2026, 12, 5, 10), 0, US, ny(2026, 12, 7, 17)),  # 0 days: the start day itself (Monday)
    (ny(2026, 12, 6, 23), 1, US, ny(2026, 12, 8, 17)),  # Sunday night too
    # Friday before the 14:00 cut-off counts from Friday; at or after it, from Monday
    (ny(2026, 12, 4, 13, 59), 1, US, ny(2026, 12, 7, 17)),
    (ny(2026, 12, 4, 14, 0), 1, US, ny(2026, 12, 8, 17)),
    (ny(2026, 12, 4, 14, 0), 0, US, ny(2026, 12, 7, 17)),
    # Christmas Friday is a holiday: Thu 24 15:00 (after cut-off) → Mon 28; +2 → Wed 30
    (ny(2026, 12, 24, 15), 2, US, ny(2026, 12, 30, 17)),
    (ny(2026, 12, 23, 9), 1, US, ny(2026, 12, 24, 17)),
    (ny(2026, 12, 24, 9), 1, US, ny(2026, 12, 28, 17)),  # skips the holiday
    # no pickup: the end of the local day; no cut-off: a late start still counts that day
    (ny(2026, 12, 4, 23, 30), 1, PLAIN, ny(2026, 12, 8) - timedelta(microseconds=1)),
    # the local date decides: Sat 5 Dec 03:00 UTC is still Friday 22:00 in New York
    (datetime(2026, 12, 5, 3, tzinfo=UTC), 0, PLAIN, ny(2026, 12, 5) - timedelta(microseconds=1)),
])
def test_due_times_by_hand(start, days, calendar, expected):
    assert due(start, days, calendar) == expected


def test_end_of_day_across_a_dst_change_is_local_midnight():
    # Sat 7 Mar 2026 + 1 day on an every-day calendar: due the end of Sun 8 Mar, a 23-hour day
    # in New York: local midnight of Mon 9 Mar is 04:00 UTC (EDT)
    assert due(datetime(2026, 3, 7, 15, tzinfo=UTC), 1, EVERY_DAY) == datetime(2026, 3, 9, 4, tzinfo=UTC) - timedelta(microseconds=1)


def test_a_skipped_pickup_moves_forward_and_a_repeated_one_takes_its_later_occurrence():
    gap = Calendar("gap", NY, business_days=(1, 2, 3, 4, 5, 6, 7), pickup=time(2, 30))
    # Sun 8 Mar 2026 02:30 does not exist in New York: 03:30 EDT = 07:30 UTC
    assert due(datetime(2026, 3, 8, 5, tzinfo=UTC), 0, gap) == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    twice = Calendar("twice", NY, business_days=(1, 2, 3, 4, 5, 6, 7), pickup=time(1, 30))
    # Sun 1 Nov 2026 01:30 happens twice: the later one is 01:30 EST = 06:30 UTC
    assert due(datetime(2026, 11, 1, 4, 30, tzinfo=UTC), 0, twice) == datetime(2026, 11, 1, 6, 30, tzinfo=UTC)


def test_cutoff_is_read_in_local_time_across_dst():
    # Fri 6 Mar 2026 is EST: 14:00 local = 19:00 UTC; Mon 9 Mar is EDT: 14:00 local = 18:00 UTC
    assert due(datetime(2026, 3, 6, 18, 59, tzinfo=UTC), 0, US) == datetime(2026, 3, 6, 22, tzinfo=UTC)
    assert due(datetime(2026, 3, 9, 18, 0, tzinfo=UTC), 0, US) == datetime(2026, 3, 10, 21, tzinfo=UTC)


def test_choice_location_beats_channel_beats_default():
    other = Calendar("dc-east", NY, business_days=(1, 2, 3, 4, 5, 6))
    choice = Choice({"us-retail": US, "plain": PLAIN, "dc-east": other}, default="plain",
                    channels={"amazon": "us-retail"}, locations={"DC-EAST": "dc-east"})
    assert choice.pick("amazon", ["DC-EAST"]) is other
    assert choice.pick("amazon", ["DC-WEST", None, 7]) is US
    assert choice.pick("shopify", []) is PLAIN
    assert Choice({"us-retail": US}, channels={"amazon": "us-retail"}).pick("ebay") is None
    # several mapped locations: the least in code-point order
    two = Choice({"plain": PLAIN, "us-retail": US}, locations={"b": "plain", "a": "us-retail"})
    assert two.pick(None, ["b", "a"]) is US
    assert Choice.from_dict(choice.as_dict()) == choice


SHIP = Definition("handling_time", "milestone_latency", "order.received", "shipment.shipment_confirmed",
                  target_ms=1 * calendars.DAY_MS, calendar=Choice({"us-retail": US}, default="us-retail"))


def test_the_weekend_order_is_not_breached_on_sunday():
    facts = Facts(milestones={"order.received": ny(2026, 12, 5, 10)}, channel="amazon")
    sunday = judge(SHIP, facts, now=ny(2026, 12, 6, 23))
    assert (sunday.state, sunday.due_at) == ("pending", ny(2026, 12, 8, 17))
    assert judge(SHIP, facts, now=ny(2026, 12, 8, 18)).state == "overdue"
    shown = sunday.as_dict()["calendar"]
    assert shown["name"] == "us-retail"
    assert shown["due"] == ("Tue 8 Dec 17:00 America/New_York, calendar us-retail: "
                            "Mon–Fri, cut-off 14:00, pickup 17:00, 1 holiday")
    # without the calendar the same target is 24 elapsed hours: breached on Sunday
    plain = Definition(**{**SHIP.__dict__, "calendar": None})
    assert judge(plain, facts, now=ny(2026, 12, 6, 23)).state == "overdue"


def test_a_promise_still_wins_and_a_partial_day_target_is_elapsed_time():
    promise = Definition("ship_by", "deadline", "order.received", "shipment.shipment_confirmed",
                         deadline_attribute="ship_by", target_ms=calendars.DAY_MS, calendar=SHIP.calendar)
    facts = Facts(milestones={"order.received": ny(2026, 12, 5, 10)}, channel="amazon",
                  attributes={"order.received": [{"ship_by": "2026-12-06T12:00:00Z"}]})
    verdict = judge(promise, facts, now=ny(2026, 12, 6, 23))
    assert (verdict.state, verdict.due_at, verdict.calendar) == ("overdue", datetime(2026, 12, 6, 12, tzinfo=UTC), None)
    hours = Definition(**{**SHIP.__dict__, "target_ms": 36 * 3600_000})
    assert judge(hours, facts, now=ny(2026, 12, 6, 23)).due_at == ny(2026, 12, 5, 10) + timedelta(hours=36)


def test_published_row_round_trips_the_calendar():
    back = Definition.from_row(SHIP.row())
    assert back.calendar == SHIP.calendar
    assert Definition.from_row({**SHIP.row(), "definition": {"calendar": {"calendars": {"x": {}}}}}).calendar is None
