"""One HTTP call of a notifier and how its failure is classified: `DeliveryError(permanent=...)`.

A 4xx answer (but 408, 425, 429) is permanent: retrying the same request cannot succeed. A 5xx,
a timeout or a refused connection is temporary: the outbox retries it with backoff. Messages
carry the status and the start of the answer, never the request's headers (keys live there).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

USER_AGENT = "controltower-alerts"
RETRYABLE_4XX = (408, 425, 429)


class DeliveryError(Exception):
    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def call(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    timeout: float,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
) -> httpx.Response:
    """Send one request; return the successful response or raise DeliveryError."""
    try:
        response = client.request(
            method, url, json=body, timeout=timeout, auth=auth,
            headers={"User-Agent": USER_AGENT, **(headers or {})},
        )
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
    if response.is_success:
        return response
    permanent = 400 <= response.status_code < 500 and response.status_code not in RETRYABLE_4XX
    raise DeliveryError(f"HTTP {response.status_code}: {response.text[:200]}", permanent=permanent)


def json_of(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise DeliveryError(f"{what}: the answer is not JSON: {response.text[:100]!r}") from None
