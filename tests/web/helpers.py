"""Shared helpers for the web-layer tests: raw HTTP over a socket, OTLP/JSON spans, records."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any


def raw_request(url: str, head: str, body: bytes = b"", *, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send `head` (request line + headers, no blank line) and `body`; return (status, response)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < 12:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            sock.settimeout(0.5)
            while True:  # the rest of a small body
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return int(data.split(b" ", 2)[1]), data


def record(event_id: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "occurred_at": datetime.now(UTC).isoformat(), "correlation_id": f"C-{event_id}",
            "channel": "amazon", "flow": "order", "stage": "received", **extra}


def otlp_span(span_id: str, end_ns: int, *, milestone_ns: int | None = None, pad: str = "") -> dict[str, Any]:
    attrs = [{"key": k, "value": {"stringValue": v}} for k, v in (
        ("retail.channel", "amazon"), ("retail.flow", "order"), ("retail.stage", "received"),
        ("retail.correlation_id", f"C-{span_id}"), ("retail.note", pad))]
    span: dict[str, Any] = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": span_id, "name": "receive",
                            "startTimeUnixNano": str(end_ns - 1_000_000), "endTimeUnixNano": str(end_ns),
                            "attributes": attrs}
    if milestone_ns is not None:
        span["events"] = [{"name": "retail.milestone", "timeUnixNano": str(milestone_ns),
                           "attributes": [{"key": "retail.stage", "value": {"stringValue": "acknowledged"}}]}]
    return span


def otlp_doc(spans: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "middleware"}}]}, "scopeSpans": [{"spans": spans}]}]}
