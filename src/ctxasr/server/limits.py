"""Admission control: a cap on request bodies and on transcriptions in flight.

Both are written by hand as small ASGI/asyncio pieces. FastAPI's own ``max_body_size``
answers a too-large Content-Length in plain text, outside the app's error handlers,
so clients would not get OpenAI's error shape. And the queue must answer "full" at
once with a Retry-After estimate, which a plain semaphore cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ctxasr.server.errors import ApiError


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than the server's limit of {limit:,} bytes",
                    code="request_too_large")  # fmt: skip


class BodyLimit:
    """Refuse bodies above ``limit`` bytes: by Content-Length before reading a byte, and
    by counting while reading when the client streams without one."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await too_large(self.limit).response()(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise too_large(self.limit)
            return message

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except ApiError as err:  # raised in ``counted`` outside a route's handlers
            if started:
                raise
            await err.response()(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class Admission:
    """At most ``concurrency`` transcriptions at once and ``max_queue`` waiting.

    A request that finds the queue full gets 503 at once, with a Retry-After from the
    recent mean service time, so load balancers and clients back off instead of piling
    up connections.
    """

    def __init__(self, concurrency: int, max_queue: int) -> None:
        self.concurrency = concurrency
        self.max_queue = max_queue
        self._slots = asyncio.Semaphore(concurrency)
        self.running = 0
        self.waiting = 0
        self._mean_seconds = 5.0  # a first guess until requests have been timed

    @contextlib.asynccontextmanager
    async def slot(self, timeout: float) -> AsyncIterator[None]:
        """Hold one transcription slot; ``ApiError`` 503 when the queue is full and 504
        when no slot frees up within ``timeout`` seconds."""
        if self.running >= self.concurrency and self.waiting >= self.max_queue:
            raise ApiError(503, f"server busy: {self.running} transcriptions running and "
                           f"{self.waiting} waiting; retry later", code="server_busy",
                           headers={"Retry-After": str(self.retry_after())})  # fmt: skip
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout)
        except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11
            raise ApiError(504, f"request timed out after {timeout:g} s waiting in the queue",
                           code="timeout") from None  # fmt: skip
        finally:
            self.waiting -= 1
        self.running += 1
        began = time.monotonic()
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()
            # An exponential mean: recent requests say most about the next ones.
            self._mean_seconds += 0.2 * (time.monotonic() - began - self._mean_seconds)

    def retry_after(self) -> int:
        """Whole seconds until a queued request would likely start."""
        rounds = (self.waiting + 1) / self.concurrency
        return max(1, math.ceil(rounds * self._mean_seconds))
