"""NATS JetStream side of a tap (nats-py): a durable pull consumer behind a synchronous face.

nats-py is asyncio; the tap runner is not. Each consumer owns a private event loop in the
thread that made it and runs every call to completion on it, so a tap is one thread either way.
The durable consumer (`durable`, default controltower-<tap>) is bound if it exists, else created
with the tap's subject as filter and explicit acks. Messages are acknowledged one by one after
the commit and the connection flushed (the server has them all before the next fetch);
`release` naks them for immediate redelivery. Quarantined messages are published to the
quarantine subject and must be confirmed by a stream (a publish ack): a subject no stream
captures is reported, and the messages stay unacknowledged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig

from collectors.taps.broker import BrokerUnavailable
from collectors.taps.config import TapConfig
from collectors.taps.messages import NATS_ID_HEADER, NATS_REPLAY_HEADER, Message, header_text

T = TypeVar("T")
CONNECT_SECONDS = 5.0
ACK_WAIT_SECONDS = 30.0  # a message a killed tap held comes back after this
_ERRORS = (nats.errors.Error, OSError, asyncio.TimeoutError)


class JetStreamConsumer:
    def __init__(self, tap: TapConfig, url: str) -> None:
        self.tap = tap
        self._loop = asyncio.new_event_loop()
        self._nc: Any = None
        try:
            self._nc = self._run(nats.connect(url, connect_timeout=CONNECT_SECONDS, allow_reconnect=False,
                                              max_reconnect_attempts=0))
            self._js = self._nc.jetstream()
            config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=ACK_WAIT_SECONDS,
                                    max_ack_pending=max(tap.batch * 2, 1000))
            self._sub = self._run(self._js.pull_subscribe(tap.subject or "", durable=tap.durable, stream=tap.stream,
                                                          config=config))
        except nats.js.errors.NotFoundError:
            self.close()
            raise BrokerUnavailable(f"tap {tap.name}: JetStream has no stream {tap.stream!r}") from None
        except _ERRORS as exc:
            self.close()
            raise BrokerUnavailable(f"tap {tap.name}: cannot reach NATS JetStream: {type(exc).__name__}: "
                                    f"{_short(exc)}") from None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(coro)

    def fetch(self, limit: int, wait: float) -> list[Message]:
        try:
            msgs = self._run(self._sub.fetch(limit, timeout=wait))
        except nats.errors.TimeoutError:
            return []
        except _ERRORS as exc:
            raise BrokerUnavailable(f"tap {self.tap.name}: JetStream fetch failed: {type(exc).__name__}") from None
        return [_message(m) for m in msgs]

    def quarantine(self, items: Sequence[tuple[Message, str]]) -> None:
        for message, reason in items:
            headers = {k: v for k, v in (message.headers or {}).items() if isinstance(v, str)}
            headers.pop(NATS_ID_HEADER, None)  # the stream would drop it as a duplicate of the original
            headers.update({"Controltower-Reason": reason[:500].replace("\r", " ").replace("\n", " "),
                            "Controltower-Queue": self.tap.consumed,
                            "Controltower-Message-Id": message.message_id or ""})
            try:
                self._run(self._js.publish(self.tap.quarantine, message.body, headers=headers))
            except nats.errors.NoRespondersError:
                raise BrokerUnavailable(f"tap {self.tap.name}: no stream captures the quarantine subject "
                                        f"{self.tap.quarantine!r}; add it to a stream") from None
            except _ERRORS as exc:
                raise BrokerUnavailable(f"tap {self.tap.name}: quarantine publish not confirmed: "
                                        f"{type(exc).__name__}") from None

    def ack(self, messages: Sequence[Message]) -> None:
        self._each(messages, "ack")

    def waiting(self) -> int:
        try:
            info = self._run(self._js.consumer_info(self.tap.stream, self.tap.durable))
        except _ERRORS as exc:
            raise BrokerUnavailable(f"tap {self.tap.name}: JetStream consumer info failed: {type(exc).__name__}") from None
        return int(info.num_pending or 0)

    def release(self, messages: Sequence[Message]) -> None:
        try:
            self._each(messages, "nak")
        except BrokerUnavailable:
            pass  # they come back after ack_wait anyway

    def _each(self, messages: Sequence[Message], what: str) -> None:
        async def send() -> None:
            for m in messages:
                await getattr(m.handle, what)()
            await self._nc.flush(timeout=CONNECT_SECONDS)

        try:
            self._run(send())
        except _ERRORS as exc:
            raise BrokerUnavailable(f"tap {self.tap.name}: JetStream {what} failed: {type(exc).__name__}") from None

    def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            try:
                self._run(nc.close())
            except _ERRORS:
                pass
        if not self._loop.is_closed():
            self._loop.close()


def _short(exc: BaseException) -> str:
    return (str(exc).splitlines() or [""])[0][:200]


def _message(msg: Any) -> Message:
    headers = dict(msg.headers or {})
    return Message(body=msg.data, headers=headers, message_id=header_text(headers.get(NATS_ID_HEADER)),
                   replay_of=header_text(headers.get(NATS_REPLAY_HEADER)), handle=msg)
