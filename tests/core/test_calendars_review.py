"""Hostile review of business calendars: a due time never falls before its start, a calendar
that could leave the search for a business day unbounded (or host-dependent) is refused when
loaded, and a long holiday list stays cheap."""

from __future__ import annotations

import time as clock
from datetime import UTC, date, datetime, time, timedelta

import pytest

from controltower.calendars import Calendar, due
from controltower.errors import ConfigError
from metrics import definitions

NY_MON_1730 = datetime(2026, 3, 9, 21, 30, tzinfo=UTC)  # Monday 9 Mar 17:30 New York (EDT)
NY_MON_1900 = datetime(2026, 3, 9, 23, 0, tzinfo=UTC)  # Monday 19:00 New York
NY_TUE_1700 = datetime(2026, 3, 10, 21, 0, tzinfo=UTC)  # Tuesday 17:00 New York
NY_WED_1700 = datetime(2026, 3, 11, 21, 0, tzinfo=UTC)


def test_an_order_after_the_pickup_without_a_cutoff_is_due_at_the_next_pickup():
    # the carrier has left: it cannot ship today, so it counts from the next business day
    cal = Calendar("dc", "America/New_York", pickup=time(17))
    assert due(NY_MON_1900, 0, cal) == NY_TUE_1700
    assert due(NY_MON_1900, 1, cal) == NY_WED_1700


def test_a_due_time_is_never_before_its_start():
    for cutoff in (None, time(14), time(17)):
        cal = Calendar("dc", "America/New_York", cutoff=cutoff, pickup=time(17))
        for start in (NY_MON_1730, NY_MON_1900):
            assert due(start, 0, cal) > start, cutoff


YAML = """\
calendars:
  dc:
    timezone: America/New_York
    cutoff: "14:00"
    pickup: "17:00"
slas:
  - name: handling_time
    kind: milestone_latency
    from: order.received
    to: shipment.shipment_confirmed
    target: 1d
    calendar: dc
"""


def _years_of_holidays(first: date, n: int) -> str:
    return "[" + ", ".join((first + timedelta(days=i)).isoformat() for i in range(n)) + "]"


@pytest.mark.parametrize(("old", "new", "error"), [
    ('cutoff: "14:00"', 'cutoff: "18:00"',
     "f.yaml:4: calendar dc: cutoff 18:00 is after pickup 17:00 (an order between them would be due before it came)"),
    ("America/New_York", "localtime", "f.yaml:3: calendar dc: timezone 'localtime' is not a known IANA time zone"),
    ("America/New_York", "Factory", "f.yaml:3: calendar dc: timezone 'Factory' is not a known IANA time zone"),
    ('pickup: "17:00"', f'pickup: "17:00"\n    holidays: {_years_of_holidays(date(2026, 1, 1), 400)}',
     "f.yaml:6: calendar dc: holidays: no business day from 2026-01-01 to 2027-02-04 (at most 366 days in a row"),
])
def test_calendars_that_could_not_be_counted_are_refused_when_loaded(old, new, error):
    with pytest.raises(ConfigError) as exc:
        definitions.loads(YAML.replace(old, new), "f.yaml")
    assert str(exc.value).startswith(error), str(exc.value)


def test_cutoff_equal_to_pickup_and_a_long_closure_are_accepted():
    text = YAML.replace('cutoff: "14:00"', 'cutoff: "17:00"').replace(
        'pickup: "17:00"', f'pickup: "17:00"\n    holidays: {_years_of_holidays(date(2026, 3, 9), 300)}')
    cal = definitions.loads(text, "f.yaml").calendars[0]
    # closed 9 Mar 2026 for 300 days: the first business day after is Mon 4 Jan 2027
    assert due(NY_MON_1730, 0, cal) == datetime(2027, 1, 4, 22, tzinfo=UTC)


def test_a_hundred_thousand_holidays_stay_cheap():
    # every other day since 1800: a business day is never more than a weekend + a day away
    cal = Calendar("many", "UTC", holidays=tuple(date(1800, 1, 1) + timedelta(days=2 * i) for i in range(100_000)))
    t0 = clock.perf_counter()
    for h in range(200):
        due(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=h), 10, cal)
    assert clock.perf_counter() - t0 < 1.0


def test_a_holiday_in_year_9999_is_refused_not_a_traceback():
    text = YAML.replace('pickup: "17:00"', 'pickup: "17:00"\n    holidays: [2026-12-25, 9999-12-31]')
    with pytest.raises(ConfigError) as exc:
        definitions.loads(text, "f.yaml")
    assert str(exc.value).startswith("f.yaml:6: calendar dc: holidays: 9999-12-31 is outside 1970–2200"), str(exc.value)
