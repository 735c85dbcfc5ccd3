"""The alert state machine as a pure function: one series, one evaluation, no I/O.

    inactive --holds--> pending --held for `for`--> firing --false for keep_firing_for--> resolved
                 (pending --false--> inactive; `for: 0` goes straight to firing;
                  resolved --holds--> pending again, a new alert with a fresh acknowledgement)

`observe` turns a rule and its SLA row (None when the row vanished) into `holds`: True, False,
or None for "no information" (`no_data: keep`), which changes nothing. `transition` gives the
next state and the notifications it calls for: `firing` once per firing episode (again after a
silence or a deferral that held it back), `repeat` every `repeat_interval` while firing and not
acknowledged, `resolved` only for an alert whose firing was notified. A silenced series changes
state but its notification is marked silenced and does not count as sent; a throttled one is
marked held and stays due. How many a rule may send (the throttle) and whether a digest covers
them is counted by the outbox (`alerts.outbox`); this module only applies the answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

INACTIVE, PENDING, FIRING, RESOLVED = "inactive", "pending", "firing", "resolved"
ACTIVE = (PENDING, FIRING)
FIELDS = (
    "state", "active_since", "firing_since", "resolved_at", "last_notified_at",
    "acknowledged_by", "acknowledged_at", "cleared_since",
)


class Timing(Protocol):
    """What of a rule the state machine reads (`alerts.rules.Rule` has it)."""

    for_seconds: float
    keep_firing_for_seconds: float
    repeat_interval_seconds: float | None
    no_data: str

    def holds(self, row: Mapping[str, Any]) -> bool: ...


@dataclass(frozen=True)
class AlertState:
    """The state-machine part of one `alert_state` row."""

    state: str = INACTIVE
    active_since: datetime | None = None
    firing_since: datetime | None = None
    resolved_at: datetime | None = None
    last_notified_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    cleared_since: datetime | None = None  # keep_firing_for: when a firing condition first stopped holding

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> AlertState:
        return cls() if row is None else cls(**{f: row.get(f) for f in FIELDS if f in row})

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in FIELDS}


@dataclass(frozen=True)
class Notification:
    kind: str  # firing | repeat | resolved
    silenced: bool = False  # a silence matches: not sent, not counted as sent
    held: bool = False  # the rule's throttle is full: not sent now, still due next evaluation


def observe(rule: Timing, row: Mapping[str, Any] | None) -> bool | None:
    """Whether the rule's condition holds on `row`; for a vanished row, its `no_data` policy."""
    if row is not None:
        return rule.holds(row)
    return {"ok": False, "breach": True, "alert": True}.get(rule.no_data)  # keep -> None


def _due(what: str, state: AlertState, now: datetime, rule: Timing) -> str | None:
    if what == "resolved":
        return "resolved" if state.last_notified_at is not None else None
    if state.state != FIRING or state.acknowledged_at is not None:
        return None
    if state.last_notified_at is None:
        return "firing"  # newly firing, or a silence or deferral that held it back has ended
    every = rule.repeat_interval_seconds
    if every and now - state.last_notified_at >= timedelta(seconds=every):
        return "repeat"
    return None


def transition(
    previous: AlertState,
    holds: bool | None,
    now: datetime,
    rule: Timing,
    *,
    silenced: bool = False,
    throttled: bool = False,
) -> tuple[AlertState, tuple[Notification, ...]]:
    """The next state of one series at `now` and the notifications that calls for.

    `silenced`: a silence matches the series; `throttled`: the rule may send no more firing or
    repeat notifications now (resolved ones always go). Either way the notification is returned
    marked, and the state does not count it as sent.
    """
    if holds is None:
        return previous, ()
    state = previous
    what = "active"
    if holds:
        state = replace(state, cleared_since=None)
        if state.state in (INACTIVE, RESOLVED):
            state = replace(
                state, state=PENDING, active_since=now, firing_since=None, resolved_at=None,
                last_notified_at=None, acknowledged_by=None, acknowledged_at=None,
            )
        if (state.state == PENDING and state.active_since is not None
                and now - state.active_since >= timedelta(seconds=rule.for_seconds)):
            state = replace(state, state=FIRING, firing_since=now)
    elif state.state == PENDING:
        state = replace(state, state=INACTIVE, active_since=None)
    elif state.state == FIRING:
        cleared = state.cleared_since or now
        if now - cleared >= timedelta(seconds=rule.keep_firing_for_seconds):
            state = replace(state, state=RESOLVED, resolved_at=now, cleared_since=None)
            what = "resolved"
        else:
            state = replace(state, cleared_since=cleared)  # keep_firing_for: still firing for a while
    else:
        return state, ()
    kind = _due(what, state, now, rule)
    if kind is None:
        return state, ()
    if silenced:
        return state, (Notification(kind, silenced=True),)
    if throttled and kind != "resolved":
        return state, (Notification(kind, held=True),)
    return replace(state, last_notified_at=now), (Notification(kind),)
