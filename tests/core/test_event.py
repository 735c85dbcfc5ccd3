"""The canonical event's record rules that need no database: deadlines and key fan-out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controltower.errors import EventError
from controltower.event import Limits, check_attributes, check_deadline

YEARS = (2000, 2100)
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(lambda m: timedelta(minutes=m))


@given(moment=st.datetimes(), offset=offsets, sep=st.sampled_from(["T", " "]))
def test_a_timestamp_deadline_is_accepted_exactly_when_offset_and_years_are_sane(moment, offset, sep):
    aware = moment.replace(tzinfo=timezone(offset))
    text = aware.isoformat(sep=sep)
    try:
        utc_year = aware.astimezone(UTC).year
    except OverflowError:
        utc_year = 0
    sane = abs(offset) <= timedelta(hours=14) and all(YEARS[0] <= y <= YEARS[1] for y in (moment.year, utc_year))
    if sane:
        check_deadline(text, "expected_ship_date", YEARS)
    else:
        with pytest.raises(EventError, match=r"^attributes\.expected_ship_date: "):
            check_deadline(text, "expected_ship_date", YEARS)


@given(day=st.dates())
def test_a_date_deadline_is_accepted_exactly_within_the_years(day):
    if YEARS[0] <= day.year <= YEARS[1]:
        check_deadline(day.isoformat(), "ship_by", YEARS)
    else:
        with pytest.raises(EventError, match="lies outside the years 2000..2100"):
            check_deadline(day.isoformat(), "ship_by", YEARS)


@given(value=st.one_of(st.text(), st.integers(), st.floats(), st.none(), st.lists(st.text(), max_size=2)))
def test_any_value_is_a_deadline_or_an_event_error(value):
    try:
        check_deadline(value, "d", YEARS)
    except EventError as exc:
        assert str(exc).startswith("attributes.d: ")


def test_key_fan_out_counts_list_values_per_kind():
    limits = Limits(key_attributes=("sku", "tracking_number"), max_key_values=3)
    check_attributes({"sku": ["a", "b", "c"], "tracking_number": "1Z", "other": list(range(10))}, limits)
    with pytest.raises(EventError, match=r"^attributes\.tracking_number: 4 values, more than the 3 allowed$"):
        check_attributes({"sku": ["a"], "tracking_number": ["1", "2", "3", "4"]}, limits)


def test_the_year_is_checked_in_utc_too():
    late = datetime(2100, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))).isoformat()  # 2101 in UTC
    with pytest.raises(EventError, match="outside the years"):
        check_deadline(late, "d", YEARS)
