"""The pure alert state machine, table-driven over every Prometheus state edge (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerts.rules import Rule
from alerts.state import AlertState, Notification, observe, transition

T = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T + timedelta(minutes=minutes)


def rule(for_m: float = 10, keep_m: float = 0, repeat_m: float | None = None, no_data: str = "ok") -> Rule:
    return Rule("R", "erp_posting", "open_breaches", ">", 0, for_seconds=for_m * 60,
                keep_firing_for_seconds=keep_m * 60,
                repeat_interval_seconds=repeat_m * 60 if repeat_m else None, no_data=no_data)


INACTIVE = AlertState()
PENDING = AlertState("pending", active_since=at(0))
FIRING = AlertState("firing", active_since=at(0), firing_since=at(10), last_notified_at=at(10))
FIRING_UNSENT = AlertState("firing", active_since=at(0), firing_since=at(10))  # silenced or held until now
ACKED = AlertState("firing", active_since=at(0), firing_since=at(10), last_notified_at=at(10),
                   acknowledged_by="ana", acknowledged_at=at(12))
CLEARING = AlertState("firing", active_since=at(0), firing_since=at(10), last_notified_at=at(10), cleared_since=at(20))
RESOLVED = AlertState("resolved", active_since=at(0), firing_since=at(10), resolved_at=at(30),
                      last_notified_at=at(30), acknowledged_by="ana", acknowledged_at=at(12))
FIRE, REPEAT, RESOLVE = Notification("firing"), Notification("repeat"), Notification("resolved")

# (edge, previous, holds, now, rule, options, expected state, expected notifications)
CASES = [
    ("inactive -> pending", INACTIVE, True, at(0), rule(), {}, PENDING, ()),
    ("inactive stays inactive", INACTIVE, False, at(0), rule(), {}, INACTIVE, ()),
    ("for: 0 goes straight to firing", INACTIVE, True, at(0), rule(for_m=0), {},
     AlertState("firing", active_since=at(0), firing_since=at(0), last_notified_at=at(0)), (FIRE,)),
    ("pending holds before `for`", PENDING, True, at(9.9), rule(), {}, PENDING, ()),
    ("pending -> inactive (flap)", PENDING, False, at(5), rule(), {}, INACTIVE, ()),
    ("pending -> firing after `for`", PENDING, True, at(10), rule(), {}, FIRING, (FIRE,)),
    ("firing stays firing, no repeat configured", FIRING, True, at(500), rule(), {}, FIRING, ()),
    ("firing: repeat not yet due", FIRING, True, at(69), rule(repeat_m=60), {}, FIRING, ()),
    ("firing: repeat_interval re-notifies", FIRING, True, at(70), rule(repeat_m=60), {},
     AlertState("firing", active_since=at(0), firing_since=at(10), last_notified_at=at(70)), (REPEAT,)),
    ("acknowledged: no repeat", ACKED, True, at(200), rule(repeat_m=60), {}, ACKED, ()),
    ("firing -> resolved", FIRING, False, at(30), rule(), {},
     AlertState("resolved", active_since=at(0), firing_since=at(10), resolved_at=at(30), last_notified_at=at(30)),
     (RESOLVE,)),
    ("never-notified firing resolves quietly", FIRING_UNSENT, False, at(30), rule(), {},
     AlertState("resolved", active_since=at(0), firing_since=at(10), resolved_at=at(30)), ()),
    ("keep_firing_for: first clear keeps firing", FIRING, False, at(20), rule(keep_m=15), {},
     AlertState("firing", active_since=at(0), firing_since=at(10), last_notified_at=at(10), cleared_since=at(20)), ()),
    ("keep_firing_for: still within", CLEARING, False, at(34.9), rule(keep_m=15), {}, CLEARING, ()),
    ("keep_firing_for: condition back keeps the same alert", CLEARING, True, at(30), rule(keep_m=15), {}, FIRING, ()),
    ("keep_firing_for: over -> resolved", CLEARING, False, at(35), rule(keep_m=15), {},
     AlertState("resolved", active_since=at(0), firing_since=at(10), resolved_at=at(35), last_notified_at=at(35)),
     (RESOLVE,)),
    ("resolved stays resolved", RESOLVED, False, at(40), rule(), {}, RESOLVED, ()),
    ("resolved -> pending again, a fresh alert", RESOLVED, True, at(100), rule(), {},
     AlertState("pending", active_since=at(100)), ()),
    ("no data, keep: nothing changes (pending)", PENDING, None, at(50), rule(no_data="keep"), {}, PENDING, ()),
    ("no data, keep: nothing changes (firing)", FIRING, None, at(500), rule(repeat_m=60, no_data="keep"), {},
     FIRING, ()),
    ("silenced: fires, notification silenced and not counted as sent", PENDING, True, at(10), rule(),
     {"silenced": True}, FIRING_UNSENT, (Notification("firing", silenced=True),)),
    ("silence over: the held-back firing goes out", FIRING_UNSENT, True, at(40), rule(), {},
     AlertState("firing", active_since=at(0), firing_since=at(10), last_notified_at=at(40)), (FIRE,)),
    ("silenced repeat", FIRING, True, at(70), rule(repeat_m=60), {"silenced": True}, FIRING,
     (Notification("repeat", silenced=True),)),
    ("throttled: firing held, still due", PENDING, True, at(10), rule(), {"throttled": True}, FIRING_UNSENT,
     (Notification("firing", held=True),)),
    ("throttled: resolved is never held", FIRING, False, at(30), rule(), {"throttled": True},
     AlertState("resolved", active_since=at(0), firing_since=at(10), resolved_at=at(30), last_notified_at=at(30)),
     (RESOLVE,)),
    ("acknowledged while pending: fires without notifying",
     AlertState("pending", active_since=at(0), acknowledged_by="ana", acknowledged_at=at(5)), True, at(10), rule(), {},
     AlertState("firing", active_since=at(0), firing_since=at(10), acknowledged_by="ana", acknowledged_at=at(5)), ()),
]


@pytest.mark.parametrize(("edge", "previous", "holds", "now", "r", "options", "expected", "notes"), CASES,
                         ids=[c[0] for c in CASES])
def test_transition(edge, previous, holds, now, r, options, expected, notes):
    assert transition(previous, holds, now, r, **options) == (expected, notes)


ROW_BAD, ROW_OK = {"open_breaches": 3}, {"open_breaches": 0}


@pytest.mark.parametrize(
    ("policy", "row", "expected"),
    [
        ("ok", ROW_BAD, True), ("ok", ROW_OK, False), ("ok", {"open_breaches": None}, False),
        ("ok", None, False), ("breach", None, True), ("alert", None, True), ("keep", None, None),
        ("breach", ROW_OK, False),
    ],
)
def test_observe_applies_the_no_data_policy_only_without_a_row(policy, row, expected):
    assert observe(rule(no_data=policy), row) is expected


def test_state_round_trips_through_a_stored_row():
    row = {**FIRING.as_dict(), "fingerprint": "abc", "labels": {}}
    assert AlertState.of(row) == FIRING and AlertState.of(None) == INACTIVE
