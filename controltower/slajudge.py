"""The SLA judge: one business transaction's verdict for one latency or deadline SLA. Pure.

Owns the meaning of a per-transaction SLA verdict and of a promised deadline, once, for every
reader: the transaction view (`GET /v1/transactions/{id}`, `controltower search`, the
dashboard's story) calls `judge` directly, and the metrics job's set-based SQL implements the
same rules with the constants defined here (`DEADLINE_PATTERN`, `EARLIEST`, `LATEST`); a
property test holds the two to the same answer on every open breach and sample.

SLAs are judged per *business transaction* (correlation IDs joined by identity keys): its
facts are its members' merged (`Facts.merged`): each milestone at its earliest over the
members, the events' attributes of every member, and one channel, the business channel (the
earliest member's that has one), which decides exclusions and targets for every milestone.

The rules, in order:
1. the `from` milestone not reached: `not_started` (the SLA does not apply yet);
2. no channel (a business none of whose members named one: an orphan, counted elsewhere),
   or the `from` milestone's channel is excluded (`exclude_channels`, or not in `channels`):
   `excluded` (a POS sale owes no acknowledgement);
3. the due time is the earliest valid promise in `deadline_attribute` on the `from`
   milestone's events (of any member), else `from` + the channel's target, else there is none;
   with a business calendar (`calendar`, picked by the `from` events' location, the channel or
   a default: `controltower.calendars`) a whole-day target counts business days instead
   (`calendars.due`: cut-off, holidays, pickup time);
4. `to` reached: `met` when it came at or before the due time, else `breached`
   (`unjudged` without a due time);
5. `to` missing: `closed` when a `closed_by` milestone was reached by any member (a cancelled
   order owes no posting), `unjudged` without a due time, `overdue` once the due time has passed, else
   `pending`. An `overdue` verdict is exactly an open breach of the SLA table.

A promise is a date (`2026-11-25`, meaning the end of that day, UTC) or an RFC 3339 time with
an offset, between `EARLIEST` and `LATEST`; anything else is ignored with a reason, never
raised. This module does no I/O and reads no clock: `now` is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from controltower import calendars
from controltower.vocab import rfc3339

# A promise the judge accepts. The same text is matched by PostgreSQL (`~`) in the metrics
# job, so it uses only syntax both engines read alike ([0-9], not \d: Python's \d matches
# every Unicode digit).
DEADLINE_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
    r"([Zz]|[+-](0[0-9]|1[0-4])(:?[0-5][0-9])?))?$"
)
_DEADLINE = re.compile(DEADLINE_PATTERN)
_DATE_ONLY = 10
# The sane range for a promise: outside it a value is a typo or an attack, not a promise
# (and years 1 and 9999 with an offset are not even representable in UTC).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)

LATENCY_KINDS = ("milestone_latency", "deadline")
NOT_STARTED, EXCLUDED = "not_started", "excluded"
MET, BREACHED, PENDING, OVERDUE, CLOSED, UNJUDGED = "met", "breached", "pending", "overdue", "closed", "unjudged"
STATES = (MET, BREACHED, PENDING, OVERDUE, CLOSED, UNJUDGED, EXCLUDED, NOT_STARTED)
SHOWN = frozenset({MET, BREACHED, PENDING, OVERDUE, CLOSED, UNJUDGED})  # what a transaction view lists


@dataclass(frozen=True)
class Definition:
    """Everything the judge needs of one latency or deadline SLA, as published to `sla_definitions`."""

    name: str
    kind: str
    from_milestone: str
    to_milestone: str
    target_ms: int | None = None
    targets_ms: Mapping[str, int] = field(default_factory=dict)
    deadline_attribute: str | None = None
    channels: tuple[str, ...] = ()
    exclude_channels: tuple[str, ...] = ()
    closed_by: tuple[str, ...] = ()
    open_label: str | None = None  # what an open breach is called ("unposted")
    objective: float | None = None
    description: str = ""
    calendar: calendars.Choice | None = None  # business days for whole-day targets

    def target_for(self, channel: str | None) -> int | None:
        return self.targets_ms.get(channel, self.target_ms) if channel is not None else self.target_ms

    def applies_to(self, channel: str | None) -> bool:
        if channel in self.exclude_channels:
            return False
        return not self.channels or channel in self.channels

    def row(self, *, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The `sla_definitions` row that publishes this definition (extras go into `definition`)."""
        return {
            "name": self.name, "kind": self.kind, "from_milestone": self.from_milestone,
            "to_milestone": self.to_milestone, "default_target_ms": self.target_ms,
            "targets_ms": dict(self.targets_ms), "deadline_attribute": self.deadline_attribute,
            "objective": self.objective, "description": self.description,
            "definition": {
                "channels": list(self.channels), "exclude_channels": list(self.exclude_channels),
                "closed_by": list(self.closed_by), "open_label": self.open_label,
                **({"calendar": self.calendar.as_dict()} if self.calendar is not None else {}), **(extra or {}),
            },
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Definition:
        """Read a published `sla_definitions` row back (rows published before the extras: none)."""
        extra = row.get("definition") or {}

        def names(key: str) -> tuple[str, ...]:
            value = extra.get(key) or ()
            return tuple(str(v) for v in value) if isinstance(value, list) else ()

        targets = row.get("targets_ms") or {}
        return cls(
            name=row["name"], kind=row["kind"], from_milestone=row["from_milestone"],
            to_milestone=row["to_milestone"], target_ms=_int(row.get("default_target_ms")),
            targets_ms={str(k): int(v) for k, v in targets.items() if _int(v) is not None},
            deadline_attribute=row.get("deadline_attribute"), channels=names("channels"),
            exclude_channels=names("exclude_channels"), closed_by=names("closed_by"),
            open_label=extra.get("open_label") if isinstance(extra.get("open_label"), str) else None,
            objective=row.get("objective"), description=row.get("description") or "",
            calendar=_choice(extra.get("calendar")),
        )

    def due_by_target(self, start: datetime, channel: str, facts: Facts) -> tuple[datetime | None, calendars.Calendar | None]:
        """`start` + the channel's target, in business days when a calendar applies to a whole-day target."""
        target = self.target_for(channel)
        if target is None:
            return None, None
        calendar = None
        if self.calendar is not None and calendars.whole_days(target) is not None:
            located = (a.get(calendars.LOCATION_ATTRIBUTE) for a in facts.attributes.get(self.from_milestone, ())
                       if isinstance(a, Mapping))
            calendar = self.calendar.pick(channel, located)
        if calendar is None:
            return start + timedelta(milliseconds=target), None
        return calendars.due(start, target // calendars.DAY_MS, calendar), calendar


@dataclass(frozen=True)
class Facts:
    """What is known of one transaction: milestone times, the channel each was reached on, and
    the attributes of the events at each milestone (`flow.stage`, any status)."""

    milestones: Mapping[str, datetime]
    channel: str | None = None  # the transaction's channel, for milestones without their own
    channels: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)

    def channel_of(self, milestone: str) -> str | None:
        return self.channels.get(milestone, self.channel)

    @classmethod
    def merged(cls, members: Iterable[Facts]) -> Facts:
        """One business transaction's facts from its members' (given in member order: earliest
        first event first, ties by correlation id, as `controltower.identity.BUSINESS_CHANNEL`
        orders them): each milestone at its earliest, every member's attributes, and the first
        member channel that is not None as the one channel of every milestone."""
        milestones: dict[str, datetime] = {}
        attributes: dict[str, list[Mapping[str, Any]]] = {}
        channel: str | None = None
        for member in members:
            if channel is None:
                channel = member.channel
            for name, at in member.milestones.items():
                if name not in milestones or at < milestones[name]:
                    milestones[name] = at
            for name, rows in member.attributes.items():
                attributes.setdefault(name, []).extend(rows)
        return cls(milestones=milestones, channel=channel, attributes=attributes)


@dataclass(frozen=True)
class Verdict:
    sla: str
    from_milestone: str
    to_milestone: str
    state: str
    elapsed_ms: int | None = None
    target_ms: int | None = None
    due_at: datetime | None = None
    closed_by: str | None = None
    reason: str | None = None
    calendar: calendars.Calendar | None = None  # the business calendar due_at was counted in

    def as_dict(self) -> dict[str, Any]:
        """The API shape (`sla`, `from`, `to`, `state`, `elapsed_ms`, `target_ms`, `due_at`, …)."""
        out: dict[str, Any] = {
            "sla": self.sla, "from": self.from_milestone, "to": self.to_milestone, "state": self.state,
            "elapsed_ms": self.elapsed_ms, "target_ms": self.target_ms,
        }
        if self.due_at is not None:
            out["due_at"] = rfc3339(self.due_at)
        if self.calendar is not None and self.due_at is not None:
            out["calendar"] = {
                "name": self.calendar.name, "timezone": self.calendar.timezone, "summary": self.calendar.summary(),
                "due": calendars.describe_due(self.due_at, self.calendar),
            }
        if self.closed_by is not None:
            out["closed_by"] = self.closed_by
        if self.reason is not None:
            out["reason"] = self.reason
        return out


def parse_deadline(raw: Any) -> tuple[datetime | None, str | None]:
    """A promise as an aware UTC time, or (None, why it is not one). Never raises."""
    if not isinstance(raw, str):
        return None, f"{type(raw).__name__} is not a date"
    shown = raw if len(raw) <= 40 else raw[:40] + "…"
    if not _DEADLINE.fullmatch(raw):
        return None, f"{shown!r} is an invalid date (expected YYYY-MM-DD or an RFC 3339 time with offset)"
    try:
        if len(raw) == _DATE_ONLY:  # a day: the promise holds until its last microsecond (UTC)
            day = date.fromisoformat(raw)
            if not EARLIEST.date() <= day < LATEST.date():
                return None, f"{shown!r} is outside {EARLIEST.year}–{LATEST.year}"
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) - timedelta(microseconds=1)
        else:
            parsed = datetime.fromisoformat(raw[:-1] + "+00:00" if raw[-1] in "Zz" else raw)
            if not 1 < parsed.year < 9999:  # its UTC time may not exist
                return None, f"{shown!r} is outside {EARLIEST.year}–{LATEST.year}"
            moment = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None, f"{shown!r} is an invalid date"
    if not EARLIEST <= moment < LATEST:
        return None, f"{shown!r} is outside {EARLIEST.year}–{LATEST.year}"
    return moment, None


def promised(sla: Definition, facts: Facts) -> tuple[datetime | None, str | None]:
    """The earliest valid promise on the `from` milestone's events, and why others were ignored."""
    if not sla.deadline_attribute:
        return None, None
    best: datetime | None = None
    ignored: list[str] = []
    for attributes in facts.attributes.get(sla.from_milestone, ()):
        if not isinstance(attributes, Mapping) or sla.deadline_attribute not in attributes:
            continue
        moment, why = parse_deadline(attributes[sla.deadline_attribute])
        if moment is None:
            ignored.append(f"{sla.deadline_attribute} {why}: ignored")
        elif best is None or moment < best:
            best = moment
    return best, "; ".join(dict.fromkeys(ignored)) or None


def judge(sla: Definition, facts: Facts, *, now: datetime) -> Verdict:
    """The verdict of `sla` on one transaction at `now` (see the module docstring for the rules)."""
    base = {"sla": sla.name, "from_milestone": sla.from_milestone, "to_milestone": sla.to_milestone}
    start = facts.milestones.get(sla.from_milestone)
    if start is None:
        return Verdict(**base, state=NOT_STARTED)
    channel = facts.channel_of(sla.from_milestone)
    if channel is None:
        return Verdict(**base, state=EXCLUDED, reason="not measured without a channel")
    if not sla.applies_to(channel):
        return Verdict(**base, state=EXCLUDED, reason=f"not measured for channel {channel}")
    target = sla.target_for(channel)
    deadline, reason = promised(sla, facts)
    due, calendar = (deadline, None) if deadline is not None else sla.due_by_target(start, channel, facts)
    end = facts.milestones.get(sla.to_milestone)
    closer = None if end is not None else next((m for m in sla.closed_by if m in facts.milestones), None)
    stop = end or (facts.milestones[closer] if closer else now)
    common = {"elapsed_ms": int((stop - start) / timedelta(milliseconds=1)), "target_ms": target, "due_at": due,
              "calendar": calendar}
    if end is not None:
        state = UNJUDGED if due is None else (MET if end <= due else BREACHED)
    elif closer is not None:
        return Verdict(**base, **common, state=CLOSED, closed_by=closer, reason=f"closed by {closer}")
    else:
        state = UNJUDGED if due is None else (OVERDUE if due < now else PENDING)
    if due is None:
        reason = "; ".join(filter(None, [reason, f"no {sla.deadline_attribute or 'target'} to judge by"]))
    return Verdict(**base, **common, state=state, reason=reason)


def judge_all(definitions: Iterable[Definition], facts: Facts, *, now: datetime) -> list[Verdict]:
    """The verdicts a transaction view shows: every SLA that applies to this transaction."""
    verdicts = (judge(d, facts, now=now) for d in definitions if d.kind in LATENCY_KINDS)
    return [v for v in verdicts if v.state in SHOWN]


def _choice(raw: Any) -> calendars.Choice | None:
    """A published calendar choice read back; one this version cannot read measures by the plain target."""
    if not isinstance(raw, Mapping):
        return None
    try:
        return calendars.Choice.from_dict(raw)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None
