"""RabbitMQ side of a tap (pika BlockingConnection): consume a queue, quarantine, acknowledge.

The consuming channel's prefetch is the tap's batch, so the broker never hands out more than
one batch unacknowledged; a batch is acknowledged with one `basic_ack(multiple=True)` up to its
last delivery tag, after the commit. Quarantined messages are published on a second channel
with publisher confirms (mandatory, persistent) to the quarantine queue (used as it is when it
exists, a length limit with reject-publish included: a refused publish acknowledges nothing;
declared durable at connect when missing); they carry headers `x-controltower-reason`, `-queue`, `-message-id`. Closing the
connection requeues whatever was not acknowledged: that is how the tap gives messages back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import pika
import pika.exceptions

from collectors.taps.broker import BrokerUnavailable
from collectors.taps.config import TapConfig
from collectors.taps.messages import RABBIT_REPLAY_HEADER, Message, header_text

_Delivery = tuple[Any, Any, Any]
POLL_SECONDS = 0.05  # granularity of the wait for a batch to fill


class RabbitConsumer:
    def __init__(self, tap: TapConfig, url: str) -> None:
        self.tap = tap
        self._conn: Any = None
        try:
            params = pika.URLParameters(url)
            params.connection_attempts = 1
            params.blocked_connection_timeout = 30
            self._conn = pika.BlockingConnection(params)
            self._ch = self._conn.channel()
            self._ch.queue_declare(str(tap.queue), passive=True)  # a missing queue is a config mistake
            self._ch.basic_qos(prefetch_count=tap.batch)
            self._pub = self._quarantine_channel()
            self._deliveries: Iterator[_Delivery] = self._ch.consume(str(tap.queue), inactivity_timeout=POLL_SECONDS)
        except pika.exceptions.ChannelClosedByBroker as exc:
            self.close()
            raise BrokerUnavailable(f"tap {tap.name}: RabbitMQ refused queue {tap.queue!r} or "
                                    f"{tap.quarantine!r}: {exc.reply_text}") from None
        except (pika.exceptions.AMQPError, OSError) as exc:
            self.close()
            raise BrokerUnavailable(f"tap {tap.name}: cannot reach RabbitMQ: {type(exc).__name__}") from None

    def _quarantine_channel(self) -> Any:
        """A confirming channel to an existing quarantine queue, used as ops declared it (a length
        limit, a quorum queue: declaring it again without their arguments is refused); a missing
        one is declared durable."""
        pub = self._conn.channel()
        try:
            pub.queue_declare(self.tap.quarantine, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            pub = self._conn.channel()
            pub.queue_declare(self.tap.quarantine, durable=True)
        pub.confirm_delivery()
        return pub

    def fetch(self, limit: int, wait: float) -> list[Message]:
        out: list[Message] = []
        deadline = time.monotonic() + wait
        try:
            for method, props, body in self._deliveries:
                if method is not None:
                    out.append(_message(method, props, body))
                    if len(out) >= limit:
                        break
                if time.monotonic() >= deadline:
                    break
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"tap {self.tap.name}: RabbitMQ connection lost: {type(exc).__name__}") from None
        return out

    def quarantine(self, items: Sequence[tuple[Message, str]]) -> None:
        for message, reason in items:
            props = message.handle[1]
            headers = dict(props.headers or {})
            headers.update({"x-controltower-reason": reason[:500], "x-controltower-queue": str(self.tap.queue),
                            "x-controltower-message-id": message.message_id or ""})
            try:
                self._pub.basic_publish("", self.tap.quarantine, message.body, mandatory=True, properties=pika.BasicProperties(
                    headers=headers, delivery_mode=2, message_id=props.message_id, timestamp=props.timestamp,
                    content_type=props.content_type, correlation_id=props.correlation_id))
            except (pika.exceptions.AMQPError, OSError) as exc:
                raise BrokerUnavailable(f"tap {self.tap.name}: quarantine {self.tap.quarantine!r} did not confirm "
                                        f"a message: {type(exc).__name__}") from None

    def ack(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        last = max(m.handle[0].delivery_tag for m in messages)
        try:
            self._ch.basic_ack(delivery_tag=last, multiple=True)
        except (pika.exceptions.AMQPError, OSError) as exc:
            # the batch is committed; the broker will redeliver it and the store keeps it once
            raise BrokerUnavailable(f"tap {self.tap.name}: acknowledgement lost: {type(exc).__name__}") from None

    def waiting(self) -> int:
        try:
            return int(self._pub.queue_declare(str(self.tap.queue), passive=True).method.message_count)
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise BrokerUnavailable(f"tap {self.tap.name}: RabbitMQ connection lost: {type(exc).__name__}") from None

    def release(self, messages: Sequence[Message]) -> None:
        self.close()  # closing requeues every unacknowledged delivery

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except (pika.exceptions.AMQPError, OSError):  # already gone: the broker requeues anyway
                pass


def _message(method: Any, props: Any, body: bytes) -> Message:
    headers = props.headers or {}
    return Message(body=body, headers=headers, message_id=header_text(props.message_id),
                   replay_of=header_text(headers.get(RABBIT_REPLAY_HEADER)), handle=(method, props))
