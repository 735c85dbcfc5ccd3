"""A tap with raw_store: true keeps each message's original encrypted, and does not start without the key."""

from __future__ import annotations

import orjson
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from collectors.rawstore import RawStore
from collectors.store import EventStore
from collectors.taps.config import loads_taps
from collectors.taps.runner import TapRunner
from controltower.errors import ConfigError
from controltower.masking import Masker
from controltower.schema.replay import raw_payloads
from tests.collectors.tapkit import Rabbit, event


@pytest.fixture
def rabbit():
    r = Rabbit()
    yield r
    r.close()


def test_raw_store_tap_keeps_the_original_encrypted_and_needs_its_key(rabbit, engine, settings) -> None:
    q = rabbit.queue()
    tap = loads_taps(f"taps:\n  - {{name: raw, broker: rabbitmq, queue: {q}, raw_store: true, batch_wait: 50ms}}\n",
                     "taps.yaml").taps[0]
    masker = Masker()
    store = EventStore(engine, settings, masker)
    with pytest.raises(ConfigError) as caught:
        TapRunner(tap, store, engine, masker, environ={})
    assert "taps.yaml:2: tap raw: raw_store: true needs CONTROLTOWER_RAW_STORE_KEY" in str(caught.value)
    body = orjson.dumps(event(1, "raw", event_id="e-1", attributes={"email": "dana@example.com"}))
    rabbit.publish(q, body, message_id="m-1", content_type="application/json")
    raw = RawStore(Fernet.generate_key().decode())
    runner = TapRunner(tap, store, engine, masker, environ={}, raw=raw)
    assert runner.drain(once=True).stored == 1
    with engine.connect() as conn:
        row = conn.execute(sa.select(raw_payloads)).one()
        assert (row.correlation_id, row.event_id, row.tap, row.message_id) == ("raw-1", "e-1", "raw", "m-1")
        assert b"dana@example.com" not in bytes(row.ciphertext)  # encrypted at rest
        original = raw.load(conn, "raw-1", "e-1")
    assert original is not None and (original.body, original.content_type) == (body, "application/json")
