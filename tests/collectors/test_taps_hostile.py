"""Broker taps under a misbehaving source and broker: quarantine queues ops declared their way
(a length limit with reject-publish), hostile bodies, odd headers, personal data in previews."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from collectors.store import EventStore
from collectors.taps.config import loads_taps
from collectors.taps.runner import TapRunner
from controltower.masking import Masker
from tests.collectors.tapkit import Rabbit, count_events, event


@pytest.fixture
def rabbit():
    r = Rabbit()
    yield r
    r.close()


def _runner(text: str, engine, settings, **kw) -> TapRunner:
    tap = loads_taps(text).taps[0]
    masker = Masker()
    return TapRunner(tap, EventStore(engine, settings, masker), engine, masker, environ={}, **kw)


def _quarantine_with_limit(rabbit: Rabbit, q: str, limit: int) -> str:
    name = q + ".quarantine"
    rabbit.ch.queue_declare(name, durable=True, arguments={"x-max-length": limit, "x-overflow": "reject-publish"})
    return name


def test_a_quarantine_queue_declared_with_a_length_limit_is_used_as_it_is(rabbit, engine, settings):
    q = rabbit.queue()
    quarantine = _quarantine_with_limit(rabbit, q, 100)
    rabbit.publish(q, event(1), message_id="good-1")
    rabbit.publish(q, b"{not json", message_id="poison-1")
    stats = _runner(f"taps:\n  - {{name: ql, broker: rabbitmq, queue: {q}, batch: 10}}\n", engine, settings).drain(once=True)
    assert (stats.stored, stats.quarantined) == (1, 1)
    assert rabbit.depth(q) == 0 and rabbit.depth(quarantine) == 1


def test_a_full_quarantine_acknowledges_nothing_it_could_not_move(rabbit, engine, settings):
    q = rabbit.queue()
    quarantine = _quarantine_with_limit(rabbit, q, 1)
    rabbit.publish(quarantine, b"already there")
    rabbit.publish(q, event(1), message_id="good-1")
    rabbit.publish(q, b"{not json", message_id="poison-1")
    runner = _runner(f"taps:\n  - {{name: qf, broker: rabbitmq, queue: {q}, batch: 10}}\n", engine, settings)
    stats = runner.drain(deadline=time.monotonic() + 2.0)
    assert stats.quarantined == 0 and stats.outages == 1
    assert rabbit.depth(q) == 2  # nothing acknowledged: the poison message is not lost
    assert rabbit.depth(quarantine) == 1
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tap_quarantine")).scalar_one() == 0
    assert count_events(engine, "tap:qf") == (1, 1)  # the good record is stored once, whatever the retries


def test_odd_replay_headers_are_text_or_nothing(rabbit, engine, settings):
    q = rabbit.queue()
    rabbit.publish(q, event(1), message_id="h-1", headers={"x-controltower-replay-of": "r" * 100_000})
    rabbit.publish(q, event(2), message_id="h-2", headers={"x-controltower-replay-of": {"nested": [1, 2]}})
    rabbit.publish(q, event(3), message_id="h-3", headers={"x-controltower-replay-of": 12345})
    rabbit.publish(q, event(4), message_id="h-4", headers={"x-controltower-replay-of": "ev\x00\u202e-9"})
    stats = _runner(f"taps:\n  - {{name: oh, broker: rabbitmq, queue: {q}, batch: 10}}\n", engine, settings).drain(once=True)
    assert (stats.stored, stats.quarantined) == (4, 0)
    with engine.connect() as conn:
        got = dict(conn.execute(sa.text("SELECT event_id, attributes->>'replay_of' FROM events WHERE source = 'tap:oh'")).all())
    assert len(got["h-1"]) == 128 and got["h-2"] is None and got["h-3"] is None
    assert got["h-4"] == "ev-9"


def test_quarantine_rows_carry_no_personal_data_in_reason_or_preview(engine):
    from datetime import UTC, datetime

    from collectors.taps import quarantine
    from collectors.taps.messages import Message

    masker = Masker()
    # the store names the bad value in its reason; a long masked email shrinks the head of a
    # non-JSON body so that an email cut at the head's end would show
    reason = 'record 0: status: "dana.smith@example.com" is not one of ok, error, retry, dead_letter'
    prefix = "x " + "a" * 3150 + "@example.com "
    pad = 3200 - len(prefix) - len("bob.smith@example")
    body = (prefix + "y" * (pad - 1) + " bob.smith@example.org trailing").encode()
    quarantine.record(engine, "pii", "q.quarantine", [(Message(body=body, message_id="m-1"), reason)], masker,
                      now=datetime.now(UTC))
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT reason, preview FROM tap_quarantine WHERE tap = 'pii'")).one()
    assert "dana.smith@example.com" not in row.reason and row.reason.startswith("record 0: status:")
    assert "bob.smith" not in row.preview and row.preview.startswith("x a***@***.com")
