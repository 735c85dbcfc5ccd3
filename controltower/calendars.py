"""Business calendars: when a deadline of N business days falls due. Pure.

Owns the meaning of a business-day deadline, once: the SLA judge (`controltower.slajudge`)
calls `due`, and the metrics job's set-based SQL calls `ct_business_due(start, days, tz,
workdays, holidays, cutoff, pickup)`, created by migration 0009_business_calendars with the
same rules and fed `Calendar.sql_args()`; a property test holds the two to the same instant.
This module does no I/O and reads no clock.

A calendar (the `calendars:` section of slas.yaml) has a `timezone` (IANA name), its
`business_days` (default mon–fri), `holidays` (dates), an optional daily `cutoff` and an
optional carrier `pickup` time. The due time of a start for N business days:
1. the start day is the local date of the start when it is a business day (a business weekday,
   not a holiday) and the local time is before the cutoff, else the next business day
   (an order received on Saturday, or on Friday at 15:00 with a 14:00 cut-off, counts from Monday);
2. the due day is N business days after the start day (N = 0: the start day itself);
3. the due time is `pickup` local time on the due day, else the end of that local day (its
   last microsecond, like a promised date).
Local wall-clock times become instants with the time zone's rules: a local time that does not
exist (skipped by a spring-forward change) is moved forward by the gap (02:30 → 03:30), one
that occurs twice (a fall-back change) takes its later occurrence (PostgreSQL's `AT TIME ZONE`
reads both so).

An SLA picks its calendar (`Choice`) by the `location` attribute of its `from` milestone's
events, else by channel, else a default: location beats channel beats default. Several
locations with a calendar: the least in code-point order (SQL: `COLLATE "C"`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from controltower.errors import ConfigError
from controltower.yamlfile import Located

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # ISO 1..7
DEFAULT_BUSINESS_DAYS = (1, 2, 3, 4, 5)
DAY_MS = 86_400_000
LOCATION_ATTRIBUTE = "location"
_SEARCH_LIMIT = 3660  # business days are searched at most ten years ahead (holidays are finite)
_FIRST_YEAR, _LAST_YEAR = 1970, 2200  # the judge's EARLIEST and LATEST: no start or promise lies outside
LONGEST_CLOSURE = 366  # days in a row without a business day a calendar may have (checked when loaded)
# host-dependent or placeless zones: the API host and the database host could read them differently
_NOT_PLACES = frozenset({"localtime", "Factory", "posixrules"})
_CAL_KEYS = {"timezone", "business_days", "holidays", "cutoff", "pickup"}


@dataclass(frozen=True)
class Calendar:
    name: str
    timezone: str
    business_days: tuple[int, ...] = DEFAULT_BUSINESS_DAYS
    holidays: tuple[date, ...] = ()
    cutoff: time | None = None
    pickup: time | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @cached_property
    def _holiday_set(self) -> frozenset[date]:
        return frozenset(self.holidays)

    @property
    def effective_cutoff(self) -> time | None:
        """The cut-off, else the pickup: once the carrier has left, nothing ships that day."""
        return self.cutoff if self.cutoff is not None else self.pickup

    def is_business_day(self, day: date) -> bool:
        return day.isoweekday() in self.business_days and day not in self._holiday_set

    def next_business_day(self, day: date) -> date:
        for _ in range(_SEARCH_LIMIT):
            day += timedelta(days=1)
            if self.is_business_day(day):
                return day
        raise ValueError(f"calendar {self.name}: no business day within ten years of {day}")

    def summary(self) -> str:
        """`Mon–Fri, cut-off 14:00, pickup 17:00, 22 holidays`: what the UI shows beside a due time."""
        parts = [_days_text(self.business_days)]
        if self.cutoff is not None:
            parts.append(f"cut-off {self.cutoff:%H:%M}")
        if self.pickup is not None:
            parts.append(f"pickup {self.pickup:%H:%M}")
        if self.holidays:
            parts.append(f"{len(self.holidays)} holiday{'s' if len(self.holidays) != 1 else ''}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "timezone": self.timezone, "business_days": [WEEKDAYS[d - 1] for d in self.business_days],
            "holidays": [d.isoformat() for d in self.holidays],
            "cutoff": _hhmm(self.cutoff), "pickup": _hhmm(self.pickup),
        }

    @classmethod
    def from_dict(cls, name: str, raw: Mapping[str, Any]) -> Calendar:
        """A published calendar read back (written by `as_dict`; raises ValueError if it is not)."""
        return cls(
            name=name, timezone=str(raw["timezone"]),
            business_days=tuple(WEEKDAYS.index(d) + 1 for d in raw.get("business_days") or ()),
            holidays=tuple(date.fromisoformat(d) for d in raw.get("holidays") or ()),
            cutoff=time.fromisoformat(raw["cutoff"]) if raw.get("cutoff") else None,
            pickup=time.fromisoformat(raw["pickup"]) if raw.get("pickup") else None,
        )

    def sql_args(self) -> dict[str, Any]:
        """The arguments `ct_business_due` takes after start and days."""
        return {"tz": self.timezone, "workdays": list(self.business_days), "holidays": list(self.holidays),
                "cutoff": self.effective_cutoff, "pickup": self.pickup}


@dataclass(frozen=True)
class Choice:
    """Which calendar an SLA measures by: per location, per channel, or a default."""

    calendars: Mapping[str, Calendar]
    default: str | None = None
    channels: Mapping[str, str] = field(default_factory=dict)
    locations: Mapping[str, str] = field(default_factory=dict)

    def pick(self, channel: str | None, locations: Iterable[Any] = ()) -> Calendar | None:
        mapped = sorted(v for v in locations if isinstance(v, str) and v in self.locations)
        name = self.locations[mapped[0]] if mapped else self.channels.get(channel or "", self.default)
        return self.calendars.get(name) if name is not None else None

    def as_dict(self) -> dict[str, Any]:
        used = {self.default, *self.channels.values(), *self.locations.values()} - {None}
        return {"default": self.default, "channels": dict(self.channels), "locations": dict(self.locations),
                "calendars": {n: self.calendars[n].as_dict() for n in sorted(used)}}  # type: ignore[index]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Choice:
        calendars = {str(n): Calendar.from_dict(str(n), c) for n, c in (raw.get("calendars") or {}).items()}
        return cls(calendars=calendars, default=raw.get("default"),
                   channels=dict(raw.get("channels") or {}), locations=dict(raw.get("locations") or {}))


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a local wall-clock time: a skipped time moves forward by the gap, a
    repeated one takes its later occurrence (both are the later of the two readings)."""
    naive = datetime.combine(day, at)
    return max(naive.replace(tzinfo=zone, fold=0).astimezone(UTC), naive.replace(tzinfo=zone, fold=1).astimezone(UTC))


def due(start: datetime, days: int, calendar: Calendar) -> datetime:
    """When something started at `start` is due after `days` business days (module docstring)."""
    zone = calendar.zone
    local = start.astimezone(zone)
    day = local.date()
    cutoff = calendar.effective_cutoff
    if not calendar.is_business_day(day) or (cutoff is not None and local.time() >= cutoff):
        day = calendar.next_business_day(day)
    for _ in range(days):
        day = calendar.next_business_day(day)
    if calendar.pickup is not None:
        return local_instant(day, calendar.pickup, zone)
    return local_instant(day + timedelta(days=1), time(0), zone) - timedelta(microseconds=1)


def describe_due(moment: datetime, calendar: Calendar) -> str:
    """`Mon 7 Dec 17:00 America/New_York, calendar us-retail: Mon–Fri, cut-off 14:00, pickup 17:00`."""
    local = moment.astimezone(calendar.zone)
    shown = f"{local:%a} {local.day} {local:%b %H:%M}" if calendar.pickup is not None \
        else f"{local:%a} {local.day} {local:%b}, end of day"
    return f"{shown} {calendar.timezone}, calendar {calendar.name}: {calendar.summary()}"


# -- YAML: the `calendars:` section and an SLA's `calendar:` key, with file:line errors --

def parse_calendars(doc: Located, raw: Any, *path: Any) -> dict[str, Calendar]:
    if not isinstance(raw, dict) or not raw:
        raise doc.error("calendars: expected a mapping of calendar name to its timezone, business_days, "
                        "holidays, cutoff, pickup", *path)
    return {str(name): _parse_calendar(doc, str(name), spec, *path, name) for name, spec in raw.items()}


def _parse_calendar(doc: Located, name: str, spec: Any, *path: Any) -> Calendar:
    if not isinstance(spec, dict):
        raise doc.error(f"calendar {name}: expected a mapping with timezone, business_days, holidays, cutoff, pickup", *path)
    extra = sorted(set(spec) - _CAL_KEYS, key=str)
    if extra:
        raise doc.error(f"calendar {name}: unknown key {extra[0]!r} (expected {', '.join(sorted(_CAL_KEYS))})", *path, extra[0])
    zone = spec.get("timezone")
    if not isinstance(zone, str) or not zone:
        raise doc.error(f"calendar {name}: needs `timezone`, an IANA name like America/New_York", *path)
    try:
        valid = zone not in _NOT_PLACES and zone in available_timezones() and ZoneInfo(zone) is not None
    except (ZoneInfoNotFoundError, ValueError):
        valid = False
    if not valid:
        raise doc.error(f"calendar {name}: timezone {zone!r} is not a known IANA time zone (e.g. America/New_York)",
                        *path, "timezone")
    days = spec.get("business_days", list(WEEKDAYS[:5]))
    if not isinstance(days, list) or not days:
        raise doc.error(f"calendar {name}: business_days: expected a non-empty list like [mon, tue, wed, thu, fri]",
                        *path, "business_days")
    numbers = set()
    for i, day in enumerate(days):
        if not isinstance(day, str) or day.lower()[:3] not in WEEKDAYS or day.lower() not in _DAY_NAMES:
            raise doc.error(f"calendar {name}: business_days: {day!r} is not a day name (mon, tue, wed, thu, fri, sat, sun)",
                            *path, "business_days", i)
        numbers.add(WEEKDAYS.index(day.lower()[:3]) + 1)
    holidays = spec.get("holidays") or []
    if not isinstance(holidays, list):
        raise doc.error(f"calendar {name}: holidays: expected a list of dates like 2026-12-25", *path, "holidays")
    parsed = set()
    for i, day in enumerate(holidays):
        if isinstance(day, date) and not isinstance(day, datetime):
            parsed.add(day)
            continue
        try:
            parsed.add(date.fromisoformat(day) if isinstance(day, str) and len(day) == 10 else _bad())
        except ValueError:
            raise doc.error(f"calendar {name}: holidays: {day!r} is not a date like 2026-12-25", *path, "holidays", i) from None
    outside = next((d for d in sorted(parsed) if not _FIRST_YEAR <= d.year < _LAST_YEAR), None)
    if outside is not None:
        raise doc.error(f"calendar {name}: holidays: {outside} is outside {_FIRST_YEAR}–{_LAST_YEAR}", *path, "holidays")
    cutoff, pickup = _time(doc, name, spec, "cutoff", path), _time(doc, name, spec, "pickup", path)
    if cutoff is not None and pickup is not None and cutoff > pickup:
        raise doc.error(f"calendar {name}: cutoff {_hhmm(cutoff)} is after pickup {_hhmm(pickup)} (an order between "
                        "them would be due before it came)", *path, "cutoff")
    calendar = Calendar(name=name, timezone=zone, business_days=tuple(sorted(numbers)), holidays=tuple(sorted(parsed)),
                        cutoff=cutoff, pickup=pickup)
    closure = longest_closure(calendar)
    if closure is not None:
        raise doc.error(f"calendar {name}: holidays: no business day from {closure[0]} to {closure[1]} (at most "
                        f"{LONGEST_CLOSURE} days in a row, so a due time is always found)", *path, "holidays")
    return calendar


def longest_closure(calendar: Calendar) -> tuple[date, date] | None:
    """The first run of more than LONGEST_CLOSURE days without a business day (first, last), or None.
    Only holidays can make one (business_days is never empty), so only their span is walked."""
    if not calendar.holidays:
        return None
    first: date | None = None
    day, last = calendar.holidays[0], calendar.holidays[-1]
    while day <= last + timedelta(days=7):
        if calendar.is_business_day(day):
            first = None
        else:
            first = first or day
            if (day - first).days >= LONGEST_CLOSURE:
                while not calendar.is_business_day(day + timedelta(days=1)):
                    day += timedelta(days=1)
                return first, day
        day += timedelta(days=1)
    return None


_DAY_NAMES = frozenset(WEEKDAYS) | {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}


def _bad() -> date:
    raise ValueError


def _time(doc: Located, name: str, spec: dict[str, Any], key: str, path: tuple[Any, ...]) -> time | None:
    if key not in spec or spec[key] is None:
        return None
    value = spec[key]
    try:
        if not isinstance(value, str) or len(value) not in (5, 8):
            raise ValueError
        return time.fromisoformat(value)
    except ValueError:
        raise doc.error(f'calendar {name}: {key}: {value!r} is not a time like "14:00"', *path, key) from None


def parse_choice(doc: Located, raw: Any, known: Mapping[str, Calendar], *path: Any) -> Choice:
    """An SLA's `calendar:`: a calendar name, or {default, channels: {ch: name}, locations: {loc: name}}."""
    def name_of(value: Any, *where: Any) -> str:
        if not isinstance(value, str) or value not in known:
            names = ", ".join(sorted(known)) or "none are defined (add a `calendars:` section)"
            raise doc.error(f"calendar: unknown calendar {value!r} (known: {names})", *where)
        return value

    if isinstance(raw, str):
        return Choice(calendars=dict(known), default=name_of(raw, *path))
    if not isinstance(raw, dict) or not raw or not set(raw) <= {"default", "channels", "locations"}:
        raise doc.error("calendar: expected a calendar name or {default: NAME, channels: {channel: NAME}, "
                        "locations: {location: NAME}}", *path)
    maps: dict[str, dict[str, str]] = {}
    for key in ("channels", "locations"):
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            raise doc.error(f"calendar: {key}: expected a mapping of {key[:-1]} to calendar name", *path, key)
        maps[key] = {str(k): name_of(v, *path, key, k) for k, v in value.items()}
    default = name_of(raw["default"], *path, "default") if raw.get("default") is not None else None
    return Choice(calendars=dict(known), default=default, channels=maps["channels"], locations=maps["locations"])


def whole_days(ms: int) -> int | None:
    """A target in business days (`2d`), or None when it is not a whole number of days."""
    return ms // DAY_MS if ms % DAY_MS == 0 else None


def _hhmm(at: time | None) -> str | None:
    return None if at is None else at.isoformat(timespec="seconds" if at.second else "minutes")


def _days_text(days: tuple[int, ...]) -> str:
    names = [WEEKDAYS[d - 1].capitalize() for d in days]
    if len(days) > 2 and list(days) == list(range(days[0], days[-1] + 1)):
        return f"{names[0]}–{names[-1]}"
    return ", ".join(names)


__all__ = ["Calendar", "Choice", "ConfigError", "describe_due", "due", "local_instant", "parse_calendars", "parse_choice"]
