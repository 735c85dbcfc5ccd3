"""Dead letters as events: the pure parts table-driven, JetStream browsing for real, the tap keys."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import orjson
import pytest
import sqlalchemy as sa

from collectors import deadletters
from collectors.deadletters import (
    Death,
    dead_letter_records,
    event_id,
    is_dead_letter_of,
    rabbit_death,
)
from collectors.store import EventStore
from collectors.taps.config import loads_taps
from collectors.taps.messages import Message
from controltower.errors import ConfigError
from controltower.masking import Masker

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
DIED = datetime(2026, 11, 23, 9, 58, tzinfo=UTC)
TAP = loads_taps("""
taps:
  - {name: erp, broker: rabbitmq, queue: q, dead_letter_queue: q.dlq, dead_letter_milestone: order.erp_posted,
     channel: amazon}
""").taps[0]
ORDER = {"event_id": "o-1-r", "occurred_at": "2026-11-23T09:50:00+00:00", "correlation_id": "o-1", "channel": "ebay",
         "flow": "order", "stage": "received", "system": "marketplace", "latency_ms": 5}


@pytest.mark.parametrize(("headers", "death"), [
    ({"x-death": [{"queue": "erp.orders", "reason": "rejected", "count": 1, "time": DIED}]},
     Death("erp.orders", "rejected", DIED, 1)),
    ({"x-death": [{"queue": "a", "reason": "expired", "count": 3}, {"queue": "b", "reason": "rejected"}]},
     Death("a", "expired", None, 3)),
    ({"x-last-death-queue": b"erp.orders", "x-last-death-reason": "maxlen"}, Death("erp.orders", "maxlen")),
    ({"x-controltower-replay-id": "42", "x-death": [{"queue": "q", "reason": "rejected", "count": 1}]},
     Death("q", "rejected", None, 1, "42")),
    (None, Death("fallback", "dead_letter")),
])
def test_the_death_read_from_the_headers(headers, death) -> None:
    assert rabbit_death(headers, "fallback") == death


@pytest.mark.parametrize(("death", "index", "of", "expected"), [
    (Death("q", "rejected"), 0, 1, "dead-letter:m-1"),
    (Death("q", "rejected", count=2), 0, 1, "dead-letter:m-1:2"),
    (Death("q", "rejected", replay_id="7"), 1, 2, "dead-letter:m-1:replay-7#1"),
])
def test_event_ids_are_stable_per_death(death, index, of, expected) -> None:
    assert event_id("m-1", death, index, of) == expected
    assert is_dead_letter_of(expected, "m-1", b"{}")
    assert not is_dead_letter_of(expected, "m-10", b"{}") and not is_dead_letter_of(expected, "m-", b"{}")


def test_a_canonical_body_becomes_a_dead_letter_event_at_the_named_milestone() -> None:
    message = Message(body=orjson.dumps(ORDER), message_id="m-1")
    [record] = dead_letter_records(message, TAP, Death("erp.orders", "rejected", DIED), now=NOW)
    assert record == {**{k: v for k, v in ORDER.items() if k != "latency_ms"}, "event_id": "dead-letter:m-1",
                      "flow": "order", "stage": "erp_posted", "status": "dead_letter", "error_code": "rejected",
                      "error_message": "dead-lettered from erp.orders: rejected", "occurred_at": DIED.isoformat()}


def test_an_unreadable_dead_letter_is_kept_only_with_a_milestone_channel_and_an_id() -> None:
    message = Message(body=b"not json", message_id="m-2")
    [record] = dead_letter_records(message, TAP, Death("q", "rejected"), now=NOW, correlation_hint="SO-9")
    assert (record["correlation_id"], record["channel"], record["stage"], record["occurred_at"]) == (
        "SO-9", "amazon", "erp_posted", NOW.isoformat())
    bare = loads_taps("taps:\n  - {name: t, broker: rabbitmq, queue: q, dead_letter_queue: d}\n").taps[0]
    assert dead_letter_records(message, bare, Death("q", "rejected"), now=NOW) == []


@pytest.mark.parametrize(("line", "message"), [
    ("dead_letter_milestone: erp_posted", "dead_letter_milestone: 'erp_posted' is not a milestone"),
    ("browse_dead_letters: maybe", "browse_dead_letters: expected true or false"),
])
def test_bad_dead_letter_keys_name_the_line(line, message) -> None:
    with pytest.raises(ConfigError) as caught:
        loads_taps(f"taps:\n  - name: t\n    broker: rabbitmq\n    queue: q\n    {line}\n", "taps.yaml")
    assert str(caught.value).startswith("taps.yaml:5:") and message in str(caught.value)


def test_jetstream_dead_letter_subject_is_browsed_without_consuming(engine, settings) -> None:
    import nats

    stream = f"CTDL{uuid.uuid4().hex[:8].upper()}"
    subject = stream.lower()

    async def setup() -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{subject}.>"])
        await js.publish(f"{subject}.orders", orjson.dumps({**ORDER, "correlation_id": "ok-1"}))
        for i in range(2):
            await js.publish(f"{subject}.dlq", orjson.dumps({**ORDER, "event_id": f"d{i}", "correlation_id": f"d-{i}"}),
                             headers={"Nats-Msg-Id": f"dl-{i}"})
        await nc.close()

    async def teardown() -> None:
        nc = await nats.connect("nats://127.0.0.1:4222")
        await nc.jetstream().delete_stream(stream)
        await nc.close()

    asyncio.run(setup())
    try:
        config = loads_taps(f"taps:\n  - {{name: js, broker: jetstream, stream: {stream}, subject: {subject}.orders, "
                            f"dead_letter_subject: {subject}.dlq}}\n")
        store = EventStore(engine, settings, Masker())
        now = datetime.now(UTC)  # the events' time is the server's store time: real
        [result] = deadletters.browse(store, config, now=now, environ={})
        assert (result.seen, result.stored, result.errors) == (2, 2, [])
        [again] = deadletters.browse(store, config, now=now, environ={})
        assert (again.seen, again.stored, again.duplicates) == (2, 0, 2)
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT correlation_id, event_id, stage, status, error_message FROM events "
                                        "ORDER BY correlation_id")).all()
        assert [tuple(r) for r in rows] == [
            ("d-0", "dead-letter:dl-0", "received", "dead_letter", f"dead-lettered from {subject}.dlq: dead_letter"),
            ("d-1", "dead-letter:dl-1", "received", "dead_letter", f"dead-lettered from {subject}.dlq: dead_letter")]
    finally:
        asyncio.run(teardown())
