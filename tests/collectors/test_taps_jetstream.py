"""JetStream taps against the real NATS server and PostgreSQL: quarantine, replay lineage,
exactly once across a SIGKILLed tap (the durable consumer redelivers what was not acked)."""

from __future__ import annotations

import time
import uuid

import nats
import orjson
import pytest
import sqlalchemy as sa
from nats.js.api import AckPolicy, ConsumerConfig

from collectors.store import EventStore
from collectors.taps.config import loads_taps
from collectors.taps.runner import TapRunner
from controltower.masking import Masker
from tests.collectors.tapkit import (
    NATS_URL,
    count_events,
    event,
    kill,
    nats_run,
    tap_process,
    wait_for,
)


@pytest.fixture
def stream():
    name = f"CT{uuid.uuid4().hex[:10].upper()}"
    prefix = name.lower()

    async def make() -> None:
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        await js.add_stream(name=name, subjects=[f"{prefix}.in.>", f"{prefix}.quarantine"])
        # short ack_wait: what a killed tap held comes back within the test
        await js.add_consumer(name, ConsumerConfig(durable_name="ct", ack_policy=AckPolicy.EXPLICIT, ack_wait=2,
                                                   filter_subject=f"{prefix}.in.>"))
        await nc.close()

    nats_run(make())
    yield name, prefix

    async def drop() -> None:
        nc = await nats.connect(NATS_URL)
        await nc.jetstream().delete_stream(name)
        await nc.close()

    nats_run(drop())


def _publish(subject: str, items: list[tuple[bytes, dict[str, str]]]) -> None:
    async def send() -> None:
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        for body, headers in items:
            await js.publish(subject, body, headers=headers or None)
        await nc.close()

    nats_run(send())


def _consumer(stream: str) -> tuple[int, int]:
    async def info() -> tuple[int, int]:
        nc = await nats.connect(NATS_URL)
        ci = await nc.jetstream().consumer_info(stream, "ct")
        await nc.close()
        return ci.num_pending, ci.num_ack_pending

    return nats_run(info())


def _quarantined(stream: str, prefix: str) -> list[tuple[bytes, dict[str, str]]]:
    async def read() -> list[tuple[bytes, dict[str, str]]]:
        nc = await nats.connect(NATS_URL)
        js = nc.jetstream()
        out = []
        info = await js.stream_info(stream)
        for seq in range(1, info.state.last_seq + 1):
            msg = await js.get_msg(stream, seq)
            if msg.subject == f"{prefix}.quarantine":
                out.append((msg.data, dict(msg.headers or {})))
        await nc.close()
        return out

    return nats_run(read())


def _yaml(name: str, stream: str, prefix: str, **extra: str) -> str:
    more = "".join(f"    {k}: {v}\n" for k, v in extra.items())
    return (f"taps:\n  - name: {name}\n    broker: jetstream\n    url: {NATS_URL}\n    stream: {stream}\n"
            f"    subject: {prefix}.in.>\n    durable: ct\n    quarantine: {prefix}.quarantine\n{more}")


def test_jetstream_poison_to_quarantine_good_ones_land_and_all_acked(stream, engine, settings):
    name, prefix = stream
    _publish(f"{prefix}.in.orders", [
        (orjson.dumps(event(1, "js")), {"Nats-Msg-Id": "n-1"}),
        (b"\xff\xfe not json", {"Nats-Msg-Id": "n-bad"}),
        (orjson.dumps(event(2, "js")), {"Controltower-Replay-Of": "ev-7"}),
        (orjson.dumps({"events": [event(3, "js"), event(4, "js")]}), {}),
    ])
    tap = loads_taps(_yaml("j1", name, prefix, batch="10")).taps[0]
    masker = Masker()
    stats = TapRunner(tap, EventStore(engine, settings, masker), engine, masker, environ={}).drain(once=True)
    assert (stats.messages, stats.stored, stats.quarantined) == (4, 4, 1)
    assert count_events(engine, "tap:j1") == (4, 4)
    assert _consumer(name) == (0, 0)  # all acknowledged
    moved = _quarantined(name, prefix)
    assert len(moved) == 1 and moved[0][0] == b"\xff\xfe not json"
    assert moved[0][1]["Controltower-Message-Id"] == "n-bad"
    with engine.connect() as conn:
        ids = conn.execute(sa.text("SELECT event_id, attributes->>'replay_of' FROM events ORDER BY correlation_id")).all()
        rows = conn.execute(sa.text("SELECT message_id, moved_to FROM tap_quarantine")).all()
    assert ids[0] == ("n-1", None)
    assert ids[1][1] == "ev-7" and ids[1][0].startswith("sha256:")
    assert ids[2][0].endswith("#0") and ids[3][0].endswith("#1")  # one message, two events
    assert [tuple(r) for r in rows] == [("n-bad", f"{prefix}.quarantine")]


def test_jetstream_exactly_once_across_a_sigkilled_tap(stream, engine, database_url, tmp_path):
    name, prefix = stream
    n = 2000
    _publish(f"{prefix}.in.orders", [(orjson.dumps(event(i, "jk")), {"Nats-Msg-Id": f"jk-{i}"}) for i in range(n)])
    config = tmp_path / "taps.yaml"
    config.write_text(_yaml("j2", name, prefix, batch="50", batch_wait="50ms"))
    proc = tap_process(config, database_url)
    try:
        wait_for(lambda: 0 < count_events(engine, "tap:j2")[0], timeout=60)
        kill(proc)
    finally:
        kill(proc)
    first = count_events(engine, "tap:j2")[0]
    assert 0 < first < n, first
    pending, ack_pending = _consumer(name)
    assert pending + ack_pending >= n - first  # nothing uncommitted was acknowledged
    time.sleep(2.5)  # ack_wait (2 s) passes: what the killed tap held is redelivered on the next fetch
    again = tap_process(config, database_url, "--once")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert count_events(engine, "tap:j2") == (n, n)
    assert _consumer(name) == (0, 0)
