"""The SLA judge, table-driven: every rule with hand-computed verdicts; hostile promises never raise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controltower.slajudge import Definition, Facts, judge, judge_all, parse_deadline

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
ACK = Definition("order_acknowledgement", "milestone_latency", "order.received", "order.acknowledged",
                 target_ms=30 * 60_000, targets_ms={"walmart": 4 * 3600_000}, exclude_channels=("pos",))
POST = Definition("erp_posting", "milestone_latency", "order.received", "order.erp_posted",
                  target_ms=30 * 60_000, closed_by=("cancellation.requested",), open_label="unposted")
SHIP = Definition("ship_by", "deadline", "order.received", "shipment.shipment_confirmed",
                  deadline_attribute="expected_ship_date")
ONLY = Definition("amazon_only", "milestone_latency", "order.received", "order.acknowledged",
                  target_ms=60_000, channels=("amazon",))


def facts(channel="amazon", promise=None, **ago):
    milestones = {name.replace("__", "."): NOW - minutes * MIN for name, minutes in ago.items()}
    attributes = {"order.received": [{"expected_ship_date": promise}]} if promise is not None else {}
    return Facts(milestones=milestones, channel=channel, attributes=attributes)


@pytest.mark.parametrize(("sla", "tx", "state", "elapsed_ms", "due_at"), [
    (ACK, facts(order__received=10), "pending", 600_000, NOW + 20 * MIN),
    (ACK, facts(order__received=45), "overdue", 2_700_000, NOW - 15 * MIN),
    (ACK, facts(order__received=30), "pending", 1_800_000, NOW),  # due exactly now: not yet late
    (ACK, facts(order__received=45, order__acknowledged=15), "met", 1_800_000, NOW - 15 * MIN),  # at the due time
    (ACK, facts(order__received=45, order__acknowledged=5), "breached", 2_400_000, NOW - 15 * MIN),
    (ACK, facts("walmart", order__received=120), "pending", 7_200_000, NOW + 120 * MIN),  # per-channel target
    (ACK, facts("pos", order__received=600), "excluded", None, None),
    (ACK, facts(order__acknowledged=5), "not_started", None, None),
    (ONLY, facts("ebay", order__received=600), "excluded", None, None),
    (POST, facts(order__received=120, cancellation__requested=100), "closed", 1_200_000, NOW - 90 * MIN),
    (POST, facts(order__received=120, cancellation__requested=100, order__erp_posted=110), "met", 600_000, NOW - 90 * MIN),
    (SHIP, facts(order__received=60), "unjudged", 3_600_000, None),  # no promise, no fallback target
    (SHIP, facts(promise="2026-11-22", order__received=60), "overdue", 3_600_000,
     datetime(2026, 11, 22, 23, 59, 59, 999999, tzinfo=UTC)),
    (SHIP, facts(promise="2026-11-23T13:00:00+02:00", order__received=60), "overdue", 3_600_000, NOW - 60 * MIN),
    (SHIP, facts(promise="2026-11-23T13:00:00Z", order__received=60, shipment__shipment_confirmed=0), "met",
     3_600_000, NOW + 60 * MIN),
])
def test_verdicts(sla, tx, state, elapsed_ms, due_at):
    verdict = judge(sla, tx, now=NOW)
    assert (verdict.state, verdict.elapsed_ms, verdict.due_at) == (state, elapsed_ms, due_at)


def test_earliest_valid_promise_wins_and_ignored_ones_say_why():
    tx = Facts(
        milestones={"order.received": NOW - 60 * MIN}, channel="amazon",
        attributes={"order.received": [{"expected_ship_date": "2026-11-25"}, {"expected_ship_date": "9999-12-31T23:00:00-05:00"},
                                       {"expected_ship_date": "2026-11-24T08:00:00Z"}, {"other": 1}]},
    )
    verdict = judge(SHIP, tx, now=NOW)
    assert verdict.due_at == datetime(2026, 11, 24, 8, tzinfo=UTC) and verdict.state == "pending"
    assert verdict.reason == "expected_ship_date '9999-12-31T23:00:00-05:00' is outside 1970–2200: ignored"


def test_transaction_view_lists_only_what_applies():
    shown = judge_all([ACK, POST, SHIP], facts("pos", order__received=120, cancellation__requested=100), now=NOW)
    assert [(v.sla, v.state) for v in shown] == [("erp_posting", "closed"), ("ship_by", "unjudged")]
    assert shown[0].as_dict() == {
        "sla": "erp_posting", "from": "order.received", "to": "order.erp_posted", "state": "closed",
        "elapsed_ms": 1_200_000, "target_ms": 1_800_000, "due_at": "2026-11-23T10:30:00.000Z",
        "closed_by": "cancellation.requested", "reason": "closed by cancellation.requested",
    }


def test_published_row_round_trips():
    assert Definition.from_row(POST.row(extra={"period_s": 86400.0})) == POST
    # rows published before the extras existed read as "no exclusions, nothing closes"
    old = {k: v for k, v in ACK.row().items() if k != "definition"}
    assert Definition.from_row(old) == Definition(**{**ACK.__dict__, "exclude_channels": ()})


@pytest.mark.parametrize(("raw", "due"), [
    ("2026-11-25", datetime(2026, 11, 25, 23, 59, 59, 999999, tzinfo=UTC)),
    ("2026-11-25 10:00+0530", datetime(2026, 11, 25, 4, 30, tzinfo=UTC)),
    ("2026-11-25T10:00:00.123456z", datetime(2026, 11, 25, 10, 0, 0, 123456, tzinfo=UTC)),
    ("2026-11-25T10:00:00", None),  # no offset: ambiguous
    ("0001-01-01T00:00:00+05:00", None), ("9999-12-31T23:00:00-05:00", None), ("9999-12-31", None),
    ("2026-02-30", None), ("2026-11-25T24:00:00Z", None), ("2026-11-25T10:00:60Z", None),
    ("２０２６-１１-２５", None), ("٢٠٢٦-١١-٢٥", None), ("2026-11-25\u200b", None), ("2026-11-25\n", None),
    (20261125, None), (None, None), ({"date": "2026-11-25"}, None), ("x" * 10_000, None),
])
def test_parse_deadline(raw, due):
    moment, reason = parse_deadline(raw)
    assert moment == due
    assert (reason is None) == (due is not None)


@given(st.one_of(
    st.text(), st.integers(), st.floats(), st.none(),
    st.builds(lambda y, rest: f"{y:04d}{rest}", st.integers(0, 9999),
              st.sampled_from(["-01-01", "-12-31T23:59:59+14:00", "-12-31T23:59:59-14:59", "-06-15T12:00Z"])),
))
def test_hostile_promises_never_raise(raw):
    moment, reason = parse_deadline(raw)
    assert (moment is None) != (reason is None)
    if moment is not None:
        assert datetime(1970, 1, 1, tzinfo=UTC) <= moment < datetime(2200, 1, 1, tzinfo=UTC)
        judge(SHIP, Facts({"order.received": NOW}, "amazon", attributes={"order.received": [{"expected_ship_date": raw}]}), now=NOW)
