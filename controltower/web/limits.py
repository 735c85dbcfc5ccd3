"""Body size limit and body read timeout on every request that carries a body (ASGI middleware).

The limit is enforced lazily, when the endpoint first reads the body, never before: so the
key check (`require_scope`, which runs before any read) answers 401 first, and only then a
declared `Content-Length` or the streamed size past `max_body_bytes` answers 413. The body
must arrive within `body_timeout` (408), so a slow sender cannot hold a connection for ever.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controltower.web.errors import BodyTimeout, RequestTooLarge

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        await self.app(scope, self._limited(scope, receive), send)

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        limit, timeout = self.max_bytes, self.timeout
        state = {"size": 0, "deadline": None, "done": False}

        async def limited_receive() -> Message:
            if state["done"]:  # after the body: disconnect polling, no timeout
                return await receive()
            loop = asyncio.get_running_loop()
            if state["deadline"] is None:
                declared = _content_length(scope)
                if declared is not None and declared > limit:
                    raise RequestTooLarge(f"body is {declared} bytes, more than the {limit} allowed")
                state["deadline"] = loop.time() + timeout
            remaining = state["deadline"] - loop.time()  # type: ignore[operator]
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                raise BodyTimeout(f"the request body did not arrive within {timeout:g} s") from None
            if message["type"] == "http.request":
                state["size"] += len(message.get("body", b""))  # type: ignore[operator]
                if state["size"] > limit:  # type: ignore[operator]
                    raise RequestTooLarge(f"body is more than the {limit} bytes allowed")
                state["done"] = not message.get("more_body", False)
            else:
                state["done"] = True
            return message

        return limited_receive


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) < 20 else None
    return None
