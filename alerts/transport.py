"""One HTTP call of a notifier and how its failure is classified: `DeliveryError(permanent=...)`.

A 4xx answer (but 408, 425, 429) is permanent: retrying the same request cannot succeed. A 5xx,
a timeout or a refused connection is temporary: the outbox retries it with backoff, no sooner
than the answer's `Retry-After` (`DeliveryError.retry_after`). Messages carry the status and the
start of the answer, never the request's headers (keys live there).

A receiver cannot hold a deliverer: the whole call, answer included, ends within the timeout
(an answer dripping a byte at a time never trips a per-read timeout), and at most
`MAX_ANSWER_BYTES` of an answer are read (a 30 MB error page is cut, not loaded). Redirects
are never followed (the client is built with `follow_redirects=False`) and fail for good.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

USER_AGENT = "controltower-alerts"
RETRYABLE_4XX = (408, 425, 429)
MAX_ANSWER_BYTES = 1 << 20
MAX_RETRY_AFTER_SECONDS = 3600.0


class DeliveryError(Exception):
    def __init__(self, message: str, *, permanent: bool = False, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.status = status  # the HTTP status of the answer, when there was one
        self.retry_after = retry_after  # seconds the receiver asked us to wait (Retry-After)


def retry_after(headers: httpx.Headers) -> float | None:
    """`Retry-After` in seconds: delay-seconds, or an HTTP date read against the answer's own `Date`."""
    raw = headers.get("retry-after", "").strip()
    if raw.isascii() and raw.isdigit() and len(raw) < 10:
        return min(float(raw), MAX_RETRY_AFTER_SECONDS)
    try:
        seconds = (parsedate_to_datetime(raw) - parsedate_to_datetime(headers.get("date", ""))).total_seconds()
    except (TypeError, ValueError, IndexError):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


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
    """Send one request; return the successful response (read) or raise DeliveryError."""
    deadline = time.monotonic() + timeout
    try:
        with client.stream(
            method, url, json=body, timeout=timeout, auth=auth, follow_redirects=False,
            headers={"User-Agent": USER_AGENT, **(headers or {})},
        ) as streamed:
            data = bytearray()
            for chunk in streamed.iter_bytes():
                data += chunk
                if time.monotonic() > deadline:
                    raise DeliveryError(f"HTTP {streamed.status_code}: no complete answer within {timeout:g}s")
                if len(data) > MAX_ANSWER_BYTES:
                    if streamed.is_success:
                        raise DeliveryError(f"HTTP {streamed.status_code}: the answer is larger than "
                                            f"{MAX_ANSWER_BYTES} bytes")
                    break  # an error page: its start is all the message shows
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
    except httpx.InvalidURL as exc:
        raise DeliveryError(f"the receiver's URL is not valid: {exc}", permanent=True) from None
    except UnicodeEncodeError:
        raise DeliveryError("a header (a key or credential) holds characters HTTP headers cannot carry",
                            permanent=True) from None
    kept = {k: v for k, v in streamed.headers.items() if k.lower() not in ("content-encoding", "content-length",
                                                                            "transfer-encoding")}
    response = httpx.Response(streamed.status_code, headers=kept, content=bytes(data), request=streamed.request)
    if response.is_success:
        return response
    code = response.status_code
    if response.is_redirect:  # never followed: the request's credentials must not travel to another host
        where = response.headers.get("location", "")[:120]
        raise DeliveryError(f"HTTP {code}: redirected to {where!r}, not followed (give the receiver its final URL)",
                            permanent=True, status=code)
    permanent = 400 <= code < 500 and code not in RETRYABLE_4XX
    raise DeliveryError(f"HTTP {code}: {response.text[:200]}", permanent=permanent, status=code,
                        retry_after=retry_after(response.headers) if code in (429, 503) else None)


def json_of(response: httpx.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise DeliveryError(f"{what}: the answer is not JSON: {response.text[:100]!r}") from None
