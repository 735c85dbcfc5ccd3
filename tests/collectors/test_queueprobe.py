"""The queue probe against the real brokers: depth and oldest-message age into queue_samples.

RabbitMQ 127.0.0.1:5672 (guest/guest) and NATS JetStream 127.0.0.1:4222; every test uses its
own queue names / stream and deletes them at teardown.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pika
import pytest
import sqlalchemy as sa

from collectors import queueprobe
from collectors.taps.config import TapsConfig, loads_taps
from controltower.context import AppContext
from controltower.errors import ConfigError

RABBIT = "amqp://guest:guest@127.0.0.1:5672/%2F"
NATS = "nats://127.0.0.1:4222"
ENV = {"CT_TEST_RABBIT": RABBIT, "CT_TEST_NATS": NATS}


def _samples(engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r.queue: dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM queue_samples ORDER BY at"))}


@pytest.fixture
def rabbit() -> Iterator[tuple[pika.adapters.blocking_connection.BlockingChannel, str]]:
    conn = pika.BlockingConnection(pika.URLParameters(RABBIT))
    ch = conn.channel()
    ch.confirm_delivery()  # counts are exact only with publisher confirms
    name = f"ct.probe.{uuid.uuid4().hex[:8]}"
    ch.queue_declare(name)
    ch.queue_declare(name + ".dlq")
    yield ch, name
    ch.queue_delete(name)
    ch.queue_delete(name + ".dlq")
    conn.close()


def _targets(text: str) -> TapsConfig:
    return loads_taps(text, "taps.yaml")  # the probe reads taps.yaml through the taps' own parser


def test_rabbitmq_depth_and_age_of_the_oldest_message(engine, rabbit) -> None:
    ch, name = rabbit
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    # the oldest message: a `timestamp` property 12 minutes before `now`; then 4 younger ones
    stamps = [now - timedelta(minutes=12)] + [now - timedelta(minutes=m) for m in (5, 4, 3, 2)]
    for i, stamp in enumerate(stamps):
        ch.basic_publish("", name, f"m{i}".encode(), pika.BasicProperties(timestamp=int(stamp.timestamp())))
    # the DLQ: 3 messages stamped by header in milliseconds, the first 90.5 s old
    first = now - timedelta(seconds=90, milliseconds=500)
    for i in range(3):
        ms = int((first + timedelta(seconds=i)).timestamp() * 1000)
        ch.basic_publish("", name + ".dlq", b"x", pika.BasicProperties(headers={"timestamp_in_ms": ms}))
    targets = _targets(f"""
taps:
  - name: erp-orders
    broker: rabbitmq
    url_env: CT_TEST_RABBIT
    queue: {name}
    dead_letter_queue: {name}.dlq
    channel: amazon
    hop: ERP posting
    format: canonical
probe_interval: 45s
""")
    assert targets.probe_interval_seconds == 45
    result = queueprobe.probe(engine, targets, now=now, environ=ENV)
    assert result.errors == []
    rows = _samples(engine)
    assert rows[name] | {"at": None} == {
        "at": None, "queue": name, "kind": "queue", "broker": "rabbitmq", "channel": "amazon", "hop": "ERP posting",
        "depth": 5, "oldest_age_ms": 12 * 60_000, "pending": None, "ack_pending": None,
    }
    assert rows[name + ".dlq"]["kind"] == "dlq"
    assert rows[name + ".dlq"]["depth"] == 3
    assert rows[name + ".dlq"]["oldest_age_ms"] == 90_500
    # the peek put the message back: still 5 ready, the first still first
    assert ch.queue_declare(name, passive=True).method.message_count == 5
    method, _, body = ch.basic_get(name, auto_ack=True)
    assert body == b"m0"


def test_rabbitmq_without_timestamps_has_no_age_and_an_empty_queue_depth_zero(engine, rabbit) -> None:
    ch, name = rabbit
    now = datetime.now(UTC)
    ch.basic_publish("", name, b"plain")
    targets = _targets(f"""
taps:
  - {{name: t, broker: rabbitmq, url_env: CT_TEST_RABBIT, queue: {name}, dead_letter_queue: {name}.dlq}}
""")
    queueprobe.probe(engine, targets, now=now, environ=ENV)
    rows = _samples(engine)
    assert (rows[name]["depth"], rows[name]["oldest_age_ms"], rows[name]["channel"]) == (1, None, None)
    assert (rows[name + ".dlq"]["depth"], rows[name + ".dlq"]["oldest_age_ms"]) == (0, None)


def test_a_missing_queue_or_an_unreachable_broker_is_reported_not_raised(engine, rabbit) -> None:
    _, name = rabbit
    targets = _targets(f"""
taps:
  - {{name: gone, broker: rabbitmq, url_env: CT_TEST_RABBIT, queue: {name}.nothing}}
  - {{name: here, broker: rabbitmq, url_env: CT_TEST_RABBIT, queue: {name}}}
  - {{name: down, broker: rabbitmq, url_env: CT_TEST_DOWN, queue: {name}}}
  - {{name: noenv, broker: jetstream, url_env: CT_TEST_UNSET, stream: S, durable: d}}
""")
    env = ENV | {"CT_TEST_DOWN": "amqp://guest:secretpw@127.0.0.1:1/%2F"}
    result = queueprobe.probe(engine, targets, now=datetime.now(UTC), environ=env)
    assert set(_samples(engine)) == {name}
    text = "\n".join(result.errors)
    assert f"tap gone: rabbitmq 127.0.0.1:5672 queue '{name}.nothing'" in text
    assert "rabbitmq 127.0.0.1:1: cannot connect" in text
    assert "tap noenv: environment variable CT_TEST_UNSET (url_env) is not set" in text
    assert "secretpw" not in text


def test_jetstream_consumer_pending_ack_pending_age_and_dead_letter_subject(engine) -> None:
    import nats

    stream = f"CTPROBE{uuid.uuid4().hex[:8].upper()}"
    subject = stream.lower()

    async def setup() -> tuple[datetime, datetime]:
        nc = await nats.connect(NATS)
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{subject}.>"])
        for i in range(7):
            await js.publish(f"{subject}.orders", f"o{i}".encode())
        for _ in range(2):
            await js.publish(f"{subject}.dlq", b"dead")
        sub = await js.pull_subscribe(f"{subject}.orders", durable="ct")
        msgs = await sub.fetch(3)
        await msgs[0].ack_sync()  # 1 acknowledged, 2 delivered and unacknowledged, 4 not delivered
        first = (await js.get_msg(stream, seq=2)).time  # the first unacknowledged: seq 2
        dead = (await js.get_msg(stream, seq=8)).time  # the first dead letter: seq 8
        await nc.close()
        return first, dead

    async def teardown() -> None:
        nc = await nats.connect(NATS)
        await nc.jetstream().delete_stream(stream)
        await nc.close()

    first_unacked, first_dead = asyncio.run(setup())
    try:
        now = first_unacked + timedelta(minutes=3)
        targets = _targets(f"""
taps:
  - name: orders
    broker: jetstream
    url_env: CT_TEST_NATS
    stream: {stream}
    subject: {subject}.orders
    durable: ct
    dead_letter_subject: {subject}.dlq
    channel: shopify
    hop: acknowledgement
""")
        result = queueprobe.probe(engine, targets, now=now, environ=ENV)
        assert result.errors == []
        rows = _samples(engine)
        consumer = rows[f"{stream}/ct"]
        assert (consumer["kind"], consumer["broker"], consumer["depth"], consumer["pending"], consumer["ack_pending"]) == (
            "consumer", "jetstream", 4, 4, 2)
        assert consumer["oldest_age_ms"] == 180_000
        dlq = rows[f"{subject}.dlq"]
        assert (dlq["kind"], dlq["depth"], dlq["channel"], dlq["hop"]) == ("dlq", 2, "shopify", "acknowledgement")
        assert dlq["oldest_age_ms"] == int((now - first_dead).total_seconds() * 1000)
    finally:
        asyncio.run(teardown())


@pytest.mark.parametrize(("text", "message"), [
    ("taps: 3", "taps.yaml:1: taps: expected a list of taps"),
    ("taps:\n  - {name: a, broker: kafka, url_env: X, queue: q}", "taps.yaml:2: broker: expected one of rabbitmq, jetstream"),
    ("taps:\n  - {name: a, broker: rabbitmq, url: 'amqp://u:pw@h/', queue: q}", "url: holds a password"),
    ("taps:\n  - {name: a, broker: rabbitmq, url_env: X}", "taps.yaml:2: queue: required"),
    ("taps:\n  - {name: a, broker: rabbitmq, url_env: X, queue: q}\n  - {name: a, broker: rabbitmq, url_env: X, queue: r}",
     "taps.yaml:3: tap name 'a' is used twice"),
    ("taps:\n  - {name: a, broker: rabbitmq, queue: q}\nprobe_interval: 5x", "taps.yaml:3: probe_interval: \"5x\" is not a duration"),
    ("taps:\n  - {name: a, broker: rabbitmq, queue: q, peek: sometimes}", "taps.yaml:2: peek: expected true or false"),
])
def test_bad_taps_files_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _targets(text)
    assert message in str(caught.value)
    assert "pw@" not in str(caught.value)


def test_the_job_runs_at_the_probe_interval_only_with_a_taps_file(engine, settings, tmp_path, rabbit) -> None:
    _, name = rabbit
    assert queueprobe.jobs(AppContext(settings, engine)) == []
    path = tmp_path / "taps.yaml"
    path.write_text(f"taps:\n  - {{name: t, broker: rabbitmq, url_env: CT_TEST_RABBIT, queue: {name}}}\nprobe_interval: 2m\n")
    context = AppContext(settings.__class__.load({"database_url": settings.database_url, "taps_file": path}, environ={}), engine)
    [job] = queueprobe.jobs(context, environ=ENV)
    assert (job.name, job.interval_seconds) == ("queues.probe", 120)
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    job.run(now)
    assert _samples(engine)[name]["at"] == now


def test_peek_false_measures_depth_without_touching_a_message(engine, rabbit) -> None:
    ch, name = rabbit
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    ch.basic_publish("", name, b"m", pika.BasicProperties(timestamp=int((now - timedelta(minutes=3)).timestamp())))
    targets = _targets(f"taps:\n  - {{name: t, broker: rabbitmq, url_env: CT_TEST_RABBIT, queue: {name}, peek: false}}\n")
    assert targets.taps[0].peek is False
    queueprobe.probe(engine, targets, now=now, environ=ENV)
    assert (_samples(engine)[name]["depth"], _samples(engine)[name]["oldest_age_ms"]) == (1, None)
    method, _, _ = ch.basic_get(name, auto_ack=True)
    assert method.redelivered is False  # never taken out and put back
