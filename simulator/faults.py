"""Fault scenarios: what breaks, where, and during which window of simulated time.

Spec syntax (one fault per spec; several specs combine, comma-separated or repeated):

    KIND[:CHANNEL[:LOCATION]][@START][+DURATION]

START is the offset from the run's simulated start (default 0: from the start), or, with a
minus sign, how long before the present (real now, where a live run's clock catches up) the
fault begins, whatever the backfill and catch-up: `erp_outage@-2h+3h` began two hours ago
and lasts another hour. DURATION is how long it lasts (default: until the run ends); both use
`controltower.settings.parse_duration` units (`90s`, `10m`, `4h`, `2d`). Examples:
`erp_outage@10m+30m`, `slow_ack:walmart@1h+2h`, `inventory_stall:amazon:wh-east@30m`,
`peak+1h`, `duplicate_storm@2h+15m`, `erp_outage@-4h+4.5h`.

Kinds: erp_outage, slow_ack:<channel>, inventory_stall:<channel>[:<location>],
warehouse_backlog, carrier_outage, duplicate_storm, poison, schema_drift:<channel>, peak.
Windows are half-open, [start, end), in epoch seconds of simulated time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from controltower.errors import ConfigError
from controltower.settings import parse_duration
from simulator.model import CHANNELS, LOCATIONS, lognormal

# kind → (does it take a channel, does it take an optional location)
KINDS: dict[str, tuple[bool, bool]] = {
    "erp_outage": (False, False),
    "slow_ack": (True, False),
    "inventory_stall": (True, True),
    "warehouse_backlog": (False, False),
    "carrier_outage": (False, False),
    "duplicate_storm": (False, False),
    "poison": (False, False),
    "schema_drift": (True, False),
    "peak": (False, False),
}
# How long work queued behind an outage takes to drain once it ends (median, seconds).
BACKLOG_MEDIAN_S = 600.0


@dataclass(frozen=True)
class FaultSpec:
    """One parsed spec, relative to the run's start (`before_present`: to the present)."""

    spec: str
    kind: str
    channel: str | None = None
    location: str | None = None
    offset: float = 0.0
    duration: float | None = None
    before_present: bool = False


@dataclass(frozen=True)
class FaultWindow:
    """A fault placed on the simulated timeline (epoch seconds; end is inf when open)."""

    spec: str
    kind: str
    channel: str | None
    location: str | None
    start: float
    end: float

    def covers(self, at: float, channel: str | None = None, location: str | None = None) -> bool:
        """Whether this fault hits something happening at `at` on this channel and location."""
        if not self.start <= at < self.end:
            return False
        if self.channel is not None and channel != self.channel:
            return False
        return self.location is None or location == self.location

    def to_json(self) -> dict[str, object]:
        return {
            "spec": self.spec,
            "kind": self.kind,
            "channel": self.channel,
            "location": self.location,
            "start": _iso(self.start),
            "end": None if math.isinf(self.end) else _iso(self.end),
        }


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds")


def parse_fault(text: str) -> FaultSpec:
    """Parse one spec; a bad one raises ConfigError naming the part at fault."""
    spec = text.strip()
    where = f'fault "{spec}"'
    head, plus, duration_text = spec.partition("+")
    head, at, offset_text = head.partition("@")
    if plus and not duration_text:
        raise ConfigError(f"{where}: nothing after '+' (expected a duration, e.g. +30m)")
    if at and not offset_text:
        raise ConfigError(f"{where}: nothing after '@' (expected a start offset, e.g. @10m)")
    kind, *args = head.split(":")
    if kind not in KINDS:
        raise ConfigError(f'{where}: unknown kind "{kind}" (expected one of {", ".join(KINDS)})')
    channel, location = _targets(where, kind, args)
    before_present = offset_text.startswith("-")
    offset_text = offset_text.removeprefix("-")
    if before_present and not offset_text:
        raise ConfigError(f"{where}: nothing after '@-' (expected how long before the present, e.g. @-2h)")
    offset = parse_duration(offset_text, where=f"{where} start") if at else 0.0
    duration = parse_duration(duration_text, where=f"{where} duration") if plus else None
    if duration == 0:
        raise ConfigError(f'{where}: duration "+{duration_text}" is zero')
    return FaultSpec(spec, kind, channel, location, offset, duration, before_present)


def _targets(where: str, kind: str, args: list[str]) -> tuple[str | None, str | None]:
    wants_channel, wants_location = KINDS[kind]
    most = int(wants_channel) + int(wants_location)
    if len(args) > most:
        extra = ":".join(args[most:])
        raise ConfigError(f'{where}: unexpected ":{extra}" ({kind} takes {_usage(kind)})')
    if wants_channel and not args:
        raise ConfigError(f"{where}: {kind} needs a channel ({kind}:<channel>, one of {', '.join(CHANNELS)})")
    channel = args[0] if args else None
    if channel is not None and channel not in CHANNELS:
        raise ConfigError(f'{where}: unknown channel "{channel}" (expected one of {", ".join(CHANNELS)})')
    location = args[1] if len(args) > 1 else None
    if location is not None and location not in LOCATIONS:
        raise ConfigError(f'{where}: unknown location "{location}" (expected one of {", ".join(LOCATIONS)})')
    return channel, location


def _usage(kind: str) -> str:
    wants_channel, wants_location = KINDS[kind]
    if wants_location:
        return "<channel>[:<location>]"
    return "<channel>" if wants_channel else "no arguments"


def parse_faults(texts: Iterable[str]) -> list[FaultSpec]:
    """Parse repeated and/or comma-separated specs, in order."""
    return [parse_fault(part) for text in texts for part in text.split(",") if part.strip()]


class FaultPlan:
    """The faults of one run placed on its timeline; the model asks it what is broken when."""

    def __init__(self, windows: Iterable[FaultWindow] = ()) -> None:
        self.windows = tuple(windows)

    @classmethod
    def resolve(cls, specs: Iterable[FaultSpec], start: float, present: float | None = None) -> FaultPlan:
        """Place specs on the timeline (epoch seconds): from the run's simulated `start`, or back
        from the `present` for specs written `@-START`."""
        windows = []
        for s in specs:
            begin = start + s.offset
            if s.before_present:
                if present is None:
                    raise ConfigError(f'fault "{s.spec}": a start before the present needs a run that knows the present')
                begin = present - s.offset
            end = math.inf if s.duration is None else begin + s.duration
            windows.append(FaultWindow(s.spec, s.kind, s.channel, s.location, begin, end))
        return cls(windows)

    def active(
        self, kind: str, at: float, channel: str | None = None, location: str | None = None
    ) -> FaultWindow | None:
        """The first fault of `kind` hitting something at `at` (on channel/location), if any."""
        for window in self.windows:
            if window.kind == kind and window.covers(at, channel, location):
                return window
        return None

    def overlaps(self, kind: str, start: float, end: float) -> bool:
        """Whether a fault of `kind` is active anywhere in [start, end)."""
        return any(w.kind == kind and w.start < end and start < w.end for w in self.windows)

    def defer(self, kind: str, at: float, rng: random.Random) -> float:
        """A step due during an outage of `kind` happens after it ends, behind the backlog."""
        window = self.active(kind, at)
        if window is None:
            return at
        return window.end + lognormal(rng, BACKLOG_MEDIAN_S, 0.8)
