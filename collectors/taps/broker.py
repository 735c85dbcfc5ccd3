"""What the tap runner needs from a broker, whichever it is (RabbitMQ, JetStream).

An adapter hands out batches of `Message`s, moves messages to the tap's quarantine with the
broker's confirmation, acknowledges a batch only when told (after the commit), and gives
unacknowledged messages back (`release`) when the tap stops consuming. Broker trouble is a
`BrokerUnavailable` whose text names the tap and never carries a URL with its password.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from collectors.taps.messages import Message
from controltower.errors import ControlTowerError

QUARANTINE_HEADERS = ("reason", "queue", "message-id")  # x-controltower-<name> / Controltower-<Name>


class BrokerUnavailable(ControlTowerError):
    """The broker cannot be reached, or refused an operation (a missing queue, an unconfirmed publish)."""


class Consumer(Protocol):
    def fetch(self, limit: int, wait: float) -> list[Message]:
        """Up to `limit` messages, waiting at most `wait` seconds for the first; [] when none came."""
        ...

    def quarantine(self, items: Sequence[tuple[Message, str]]) -> None:
        """Publish each message with its reason to the quarantine, confirmed by the broker."""
        ...

    def ack(self, messages: Sequence[Message]) -> None: ...

    def waiting(self) -> int:
        """Messages the broker still holds ready for this tap (a drain ends only at 0)."""
        ...

    def release(self, messages: Sequence[Message]) -> None:
        """Give unacknowledged messages back to the broker for redelivery."""
        ...

    def close(self) -> None: ...


def rabbit_parameters(url: str, timeout: float) -> Any:
    """pika connection parameters for a short broker call (a probe, a DLQ browse or move) bounded
    by `timeout`: `stack_timeout` bounds the TCP connect and the AMQP handshake together, so a
    broker that accepts and never answers costs `timeout`, not pika's 15 s (its error is then an
    `AMQPConnectorException`, not an `AMQPError`); one attempt, no retries."""
    import pika

    params = pika.URLParameters(url)
    params.socket_timeout = params.blocked_connection_timeout = params.stack_timeout = timeout
    params.connection_attempts = 1
    return params
