"""Named time intervals for routes (Alertmanager's `time_intervals`): parsing and `contains`.

A named interval holds one or more periods; it contains an instant when any of its periods
does. A period restricts by `times` (start_time inclusive, end_time exclusive, "24:00" allowed
as the end), `weekdays`, `days_of_month` (negative counts from the month's end: "-1" is the
last day), `months` and `years`, each a list of single values or inclusive `a:b` ranges; a
field left out matches everything. Every field is read in `location` (an IANA zone name,
default UTC), on the wall clock: across a DST change "09:00" stays nine in the morning.

Pure: parsing raises `file:line` errors through `Located`; `contains` takes the instant.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from alerts.conditions import short
from controltower.yamlfile import Located

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december")
_PERIOD_KEYS = ("times", "weekdays", "days_of_month", "months", "years", "location")

Range = tuple[int, int]  # inclusive
_DIGITS = re.compile(r"^[0-9]+\Z")  # ASCII only: str.isdigit() admits "²", which int() refuses


@dataclass(frozen=True)
class Period:
    """One entry of a named interval's `time_intervals` list; empty tuples match everything."""

    times: tuple[Range, ...] = ()  # minutes since midnight, [start, end)
    weekdays: tuple[Range, ...] = ()  # 0 = Monday
    days_of_month: tuple[Range, ...] = ()  # 1..31 or -31..-1
    months: tuple[Range, ...] = ()  # 1..12
    years: tuple[Range, ...] = ()
    location: str = "UTC"

    def zone(self) -> tzinfo:
        return ZoneInfo(self.location)


@dataclass(frozen=True)
class TimeInterval:
    name: str
    periods: tuple[Period, ...]


def _days_in_month(at: datetime) -> int:
    return calendar.monthrange(at.year, at.month)[1]


def _day_of_month_matches(ranges: Iterable[Range], at: datetime) -> bool:
    days = _days_in_month(at)
    for begin, end in ranges:
        begin = days + begin + 1 if begin < 0 else begin
        end = days + end + 1 if end < 0 else end
        if begin > days:
            continue  # "31" in a 30-day month: no day, and never the 1st of the next
        if begin <= at.day <= min(end, days):
            return True
    return False


def _in(ranges: Iterable[Range], value: int) -> bool:
    return any(lo <= value <= hi for lo, hi in ranges)


def period_contains(period: Period, now: datetime) -> bool:
    """Whether `now` (timezone-aware) falls in the period, read on the wall clock of its location."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    at = now.astimezone(period.zone())
    minute = at.hour * 60 + at.minute
    return (
        (not period.times or any(lo <= minute < hi for lo, hi in period.times))
        and (not period.weekdays or _in(period.weekdays, at.weekday()))
        and (not period.days_of_month or _day_of_month_matches(period.days_of_month, at))
        and (not period.months or _in(period.months, at.month))
        and (not period.years or _in(period.years, at.year))
    )


def contains(interval: TimeInterval, now: datetime) -> bool:
    """Whether any period of the named interval contains `now`."""
    return any(period_contains(p, now) for p in interval.periods)


# -- parsing ------------------------------------------------------------------------------------

def _clock(doc: Located, raw: Any, *path: Any) -> int:
    """`"HH:MM"` to minutes since midnight (the loader keeps an unquoted 17:00 as text, not YAML 1.1's 1020)."""
    key = path[-1]
    if isinstance(raw, str):
        hours, sep, minutes = raw.strip().partition(":")
        if sep and _DIGITS.match(hours) and _DIGITS.match(minutes) and len(minutes) == 2 and len(hours) <= 2:
            h, m = int(hours), int(minutes)
            if (h < 24 and m < 60) or (h == 24 and m == 0):
                return h * 60 + m
    raise doc.error(f'{key}: {short(raw)} is not a time of day (expected "HH:MM", 00:00 to 24:00)', *path)


def _times(doc: Located, raw: Any, *path: Any) -> tuple[Range, ...]:
    if not isinstance(raw, list | tuple) or not raw:
        raise doc.error('times: expected a list of {start_time: "09:00", end_time: "17:00"}', *path)
    out = []
    for j, item in enumerate(raw):
        where = (*path, j)
        if not isinstance(item, dict) or set(item) != {"start_time", "end_time"}:
            raise doc.error("times: each entry needs exactly start_time and end_time", *where)
        start = _clock(doc, item["start_time"], *where, "start_time")
        end = _clock(doc, item["end_time"], *where, "end_time")
        if start >= end:
            raise doc.error("times: start_time must be before end_time (a period cannot cross midnight: "
                            "give two entries)", *where)
        out.append((start, end))
    return tuple(out)


def _value(doc: Located, raw: Any, names: tuple[str, ...], lo: int, hi: int, key: str, where: tuple[Any, ...]) -> int:
    if isinstance(raw, str) and raw.strip().lower() in names:
        return names.index(raw.strip().lower()) + 1
    text = str(raw).strip() if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
    digits = text[1:] if text.startswith("-") else text
    if _DIGITS.match(digits) and len(digits) <= 5 and lo <= int(text) <= hi and int(text) != 0:
        return int(text)
    expected = f"{names[0]}..{names[-1]}" if names else f"{lo}..{hi}"
    raise doc.error(f'{key}: {short(raw)} is not valid (expected {expected}, or a range in quotes: "a:b")', *where)


def _ranges(doc: Located, raw: Any, key: str, names: tuple[str, ...], lo: int, hi: int,
            *path: Any) -> tuple[Range, ...]:
    items = [raw] if isinstance(raw, str | int) and not isinstance(raw, bool) else raw
    if not isinstance(items, list | tuple) or not items:
        raise doc.error(f'{key}: expected a list of values or ranges, e.g. ["{names[0] if names else lo}:..."]', *path)
    out = []
    for j, item in enumerate(items):
        where = (*path, j)
        text = str(item).strip() if isinstance(item, str) else item
        if isinstance(text, str) and ":" in text[1:]:
            cut = text.index(":", 1)
            begin = _value(doc, text[:cut], names, lo, hi, key, where)
            end = _value(doc, text[cut + 1:], names, lo, hi, key, where)
        else:
            begin = end = _value(doc, text, names, lo, hi, key, where)
        if (begin > 0) == (end > 0) and begin > end:
            raise doc.error(f"{key}: range {short(item)} starts after it ends", *where)
        if begin < 0 < end:
            raise doc.error(f"{key}: range {short(item)} mixes a negative start with a positive end", *where)
        out.append((begin, end))
    return tuple(out)


def _location(doc: Located, raw: Any, *path: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise doc.error(f"location: expected a time zone name such as Europe/Berlin, got {raw!r}", *path)
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise doc.error(f"location: {raw!r} is not a known time zone (IANA name, e.g. Europe/Berlin)", *path) from None
    return raw


def parse_period(doc: Located, raw: Any, *path: Any) -> Period:
    if not isinstance(raw, dict):
        raise doc.error(f"expected a mapping with any of {', '.join(_PERIOD_KEYS)}", *path)
    for key in raw:
        if key not in _PERIOD_KEYS:
            raise doc.error(f"unknown field {key!r} in a time interval ({', '.join(_PERIOD_KEYS)})", *path, key)
    kw: dict[str, Any] = {}
    if "times" in raw:
        kw["times"] = _times(doc, raw["times"], *path, "times")
    if "weekdays" in raw:
        days = _ranges(doc, raw["weekdays"], "weekdays", WEEKDAYS, 1, 7, *path, "weekdays")
        if any(begin < 0 for begin, _ in days):
            raise doc.error("weekdays: use day names, e.g. monday:friday", *path, "weekdays")
        kw["weekdays"] = tuple((b - 1, e - 1) for b, e in days)
    if "days_of_month" in raw:
        kw["days_of_month"] = _ranges(doc, raw["days_of_month"], "days_of_month", (), -31, 31, *path, "days_of_month")
    if "months" in raw:
        months = _ranges(doc, raw["months"], "months", MONTHS, 1, 12, *path, "months")
        if any(b < 0 for b, _ in months):
            raise doc.error("months: expected january..december or 1..12", *path, "months")
        kw["months"] = months
    if "years" in raw:
        years = _ranges(doc, raw["years"], "years", (), 1, 9999, *path, "years")
        if any(b < 0 for b, _ in years):
            raise doc.error("years: expected a year such as 2026 or a range 2026:2027", *path, "years")
        kw["years"] = years
    if "location" in raw:
        kw["location"] = _location(doc, raw["location"], *path, "location")
    return Period(**kw)


def parse_time_intervals(doc: Located, raw: Any, *path: Any) -> dict[str, TimeInterval]:
    """The top-level `time_intervals:` list: [{name, time_intervals: [period, ...]}]."""
    if raw is None:
        return {}
    if not isinstance(raw, list | tuple):
        raise doc.error("time_intervals: expected a list of {name, time_intervals: [...]}", *path)
    out: dict[str, TimeInterval] = {}
    for i, item in enumerate(raw):
        where = (*path, i)
        if not isinstance(item, dict):
            raise doc.error("each time interval needs a name and time_intervals", *where)
        for key in item:
            if key not in ("name", "time_intervals"):
                raise doc.error(f"unknown field {key!r} (name, time_intervals)", *where, key)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise doc.error("a time interval needs a name", *where)
        if name in out:
            raise doc.error(f"duplicate time interval name {name!r}", *where, "name")
        periods = item.get("time_intervals")
        if not isinstance(periods, list | tuple) or not periods:
            raise doc.error(f"time interval {name}: time_intervals must be a non-empty list", *where)
        out[name] = TimeInterval(name, tuple(
            parse_period(doc, p, *where, "time_intervals", j) for j, p in enumerate(periods)
        ))
    return out


def interval_names(doc: Located, raw: Any, known: dict[str, TimeInterval], *path: Any) -> tuple[TimeInterval, ...]:
    """A route's `mute_time_intervals` / `active_time_intervals`: names of defined intervals."""
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list | tuple):
        raise doc.error(f"{path[-1]}: expected a list of time interval names", *path)
    out = []
    for j, name in enumerate(names):
        if not isinstance(name, str) or name not in known:
            defined = ", ".join(sorted(known)) or "none defined"
            raise doc.error(f"unknown time interval {name!r} (defined: {defined})", *path, j)
        out.append(known[name])
    return tuple(out)
