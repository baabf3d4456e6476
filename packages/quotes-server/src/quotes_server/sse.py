"""
The stream over Server-Sent Events: ``GET /sse/quotes`` and ``GET /v1/sse/quotes``.

For clients whose network lets plain HTTP through but breaks the WebSocket upgrade.
The request is checked by the same :class:`~quotes_server.admission.Admission` as a
WebSocket handshake (same statuses, same reasons), and every shape of the stream is
the core's (:mod:`quotes_core.sse`): the ``retry:`` preface, one event per quote with
its position as ``id``, named control events, the keepalive comment and the closing
``error`` event. An :class:`SseStream` only moves those bytes and keeps time.

It writes with plain ASGI ``http.response.body`` messages (``more_body``), one per
write round: the engine's elements of the round become one chunk of events. A write
waits while the client's socket is full (uvicorn's flow control), and meanwhile the
client's quotes stay in the engine, bounded by the same FIFO-then-conflation as a
WebSocket client's. Through our HTTP protocol's ``quotes.stream`` extension
(:class:`~quotes_server.limits.StreamExtension`) the stream ends at once when the
server shuts down, and a client that stopped reading is reset instead of waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse

from quotes_core import SHUTDOWN_REASON, CloseCode, Element, StreamOptions, Subscriber
from quotes_core.sse import HEADERS, KEEPALIVE, MEDIA_TYPE, EventCache, closing, events, preface
from quotes_server.admission import Admission, Admitted, Refusal
from quotes_server.limits import STREAM_EXTENSION, StreamExtension
from quotes_server.metrics import HotCounters
from quotes_server.runtime import Runtime
from quotes_server.session import FRAMES, Session

__all__ = ["SseEndpoint", "SseStream", "sse_chunks"]

log = logging.getLogger("quotes_server.sse")

Send = Any  # the ASGI send callable
Receive = Any  # the ASGI receive callable

_START_HEADERS = [
    (b"content-type", MEDIA_TYPE.encode()),
    *((name.lower().encode(), value.encode()) for name, value in HEADERS.items()),
]
_PREFACE = preface().encode()
_KEEPALIVE = KEEPALIVE.encode()


_CACHE = EventCache()
"""This process's quote events, shared by its SSE streams."""


def sse_chunks(elements: Sequence[Element[Any]], options: StreamOptions) -> tuple[list[bytes], int]:
    """The events of ``elements`` as one chunk (a :data:`~quotes_server.session.Renderer`)."""
    out, quotes = events(elements, options, FRAMES, _CACHE)
    return ["".join(out).encode()], quotes


class SseStream:
    """
    One Server-Sent Events client (a :class:`~quotes_server.clients.Client`): the
    response's writer task, its keepalive timer and its end.

    Args:
        subscriber: the client's side of the stream engine (positions on).
        send: the request's ASGI send callable.
        receive: its ASGI receive callable.
        control: our HTTP protocol's ``quotes.stream`` extension (``None`` under
            another server: then shutdown waits and a stalled client is not reset).
        keepalive: seconds of silence before a keepalive comment.
        close_timeout: seconds a closing write may wait for the client before it is reset.
        origin: the request's ``Origin`` (admitted: inside ``--cors-origins``), echoed as
            ``Access-Control-Allow-Origin`` so a page on that origin may read the stream
            (``EventSource`` requests are CORS requests; a WebSocket needs no such header).
    """

    kind = "sse"
    detail = "transport=sse"

    def __init__(
        self,
        subscriber: Subscriber[bytes],
        send: Send,
        receive: Receive,
        *,
        hot: HotCounters,
        client_id: str,
        remote: str,
        host: str,
        control: StreamExtension | None,
        keepalive: float,
        close_timeout: float,
        origin: str | None = None,
    ) -> None:
        self.subscriber = subscriber
        self._headers = _START_HEADERS
        if origin is not None:
            self._headers = [
                *_START_HEADERS,
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"vary", b"Origin"),
            ]
        self.sub = subscriber.sub
        self.session: Session | None = Session(subscriber, sse_chunks)
        self.session.wake = self.on_ready
        self.hot = hot
        self.client_id = client_id
        self.remote = remote
        self.host = host
        self._send = send
        self._receive = receive
        self._control = control
        self._keepalive = keepalive
        self._close_timeout = close_timeout
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None
        self._last_write = self._loop.time()
        self._keepalive_due = False
        self._busy = False
        self.sent = 0
        """Chunks handed to the socket."""
        self.close_code: int | None = None
        self.close_reason = ""
        self._seen_sent = 0
        self._stall_start: float | None = None
        self._conflated_seen = 0
        if control is not None:
            control["on_shutdown"] = self._shutdown

    # --- what the runtime calls -----------------------------------------------------------

    def on_ready(self) -> None:
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        """End the stream: an ``error`` event with ``code`` and ``reason``, then the end."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = reason
        self._wake.set()
        # the closing event, or a write still waiting for the client, has close_timeout
        self._abort_timer = self._loop.call_later(self._close_timeout, self._abort)

    def stalled(self, now: float, timeout: float) -> bool:
        """True when quotes were pending and nothing was written for ``timeout`` seconds."""
        session = self.session
        pending = self._busy or (session is not None and session.pending)
        if self.sent != self._seen_sent or not pending:
            self._seen_sent = self.sent
            self._stall_start = None
            return False
        if self._stall_start is None:
            self._stall_start = now
        return now - self._stall_start >= timeout

    # --- serving --------------------------------------------------------------------------

    async def start(self) -> None:
        """Send the response's head and the ``retry:`` preface."""
        await self._send({"type": "http.response.start", "status": 200, "headers": self._headers})
        await self._send({"type": "http.response.body", "body": _PREFACE, "more_body": True})
        self._last_write = self._loop.time()

    async def serve(self) -> int | None:
        """
        Write until the stream ends: the client went away (``http.disconnect``) or
        the server closed it.

        Returns:
            The close code the server ended it with, ``None`` when the client left.
        """
        self._writer = self._loop.create_task(self._write_loop())
        self._arm_keepalive()
        if self.session is not None and self.session.pending:  # a snapshot or a replay
            self._wake.set()
        try:
            while (await self._receive())["type"] != "http.disconnect":
                pass  # the request's (empty) body; the end of the response reads as one too
        finally:
            writer = self._writer
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            for timer in (self._timer, self._abort_timer):
                if timer is not None:
                    timer.cancel()
            self._account_conflated()
            if self._control is not None:
                self._control["on_shutdown"] = None
            # no reference cycle through the finished task's frame (see Connection.serve)
            self._writer = self._timer = self._abort_timer = None
        return self.close_code

    async def _write_loop(self) -> None:
        send = self._send
        wake = self._wake
        hot = self.hot
        session = self.session
        assert session is not None
        try:
            while self.close_code is None:
                await wake.wait()
                wake.clear()
                while session.pending and self.close_code is None:
                    self._busy = True
                    batch, quotes = session.take()
                    if batch:
                        await send(
                            {"type": "http.response.body", "body": batch[0], "more_body": True}
                        )
                        self._wrote()
                        hot.writes += 1
                        hot.forwarded += quotes
                    if self.sub.conflated != self._conflated_seen:
                        self._account_conflated()
                self._busy = False
                if self._keepalive_due and self.close_code is None:
                    self._keepalive_due = False
                    self._busy = True
                    await send(
                        {"type": "http.response.body", "body": _KEEPALIVE, "more_body": True}
                    )
                    self._wrote()
                    self._busy = False
            self._busy = True
            last = closing(self.close_code, self.close_reason).encode()
            await send({"type": "http.response.body", "body": last, "more_body": False})
            self._busy = False
            if self._abort_timer is not None:
                self._abort_timer.cancel()
                self._abort_timer = None
        except OSError:
            return  # the client went away; the reader sees the disconnect

    def _wrote(self) -> None:
        self.sent += 1
        self._last_write = self._loop.time()

    # --- time -----------------------------------------------------------------------------

    def _arm_keepalive(self) -> None:
        due = self._last_write + self._keepalive
        now = self._loop.time()
        if due <= now:  # a write has been waiting for the client: look again later
            due = now + self._keepalive
        self._timer = self._loop.call_at(due, self._silence)

    def _silence(self) -> None:
        """The keepalive timer: a comment after ``keepalive`` seconds without a write."""
        now = self._loop.time()
        if now - self._last_write >= self._keepalive and not self._busy:
            self._keepalive_due = True
            self._last_write = now
            self._wake.set()
        self._arm_keepalive()

    def _shutdown(self) -> None:
        self.close(CloseCode.GOING_AWAY, SHUTDOWN_REASON)

    def _abort(self) -> None:
        """The client did not read its closing event in time: reset the connection."""
        self._abort_timer = None
        if self._control is not None:
            self._control["abort"]()
        elif self._writer is not None:
            self._writer.cancel()

    def _account_conflated(self) -> None:
        delta = self.sub.conflated - self._conflated_seen
        if delta:
            self._conflated_seen = self.sub.conflated
            self.hot.conflated += delta


class SseEndpoint:
    """
    The ASGI app behind the SSE paths: :class:`Admission`'s checks (a refusal is an
    ordinary ``text/plain`` response), then an :class:`SseStream` until it ends.

    Args:
        keepalive: seconds of silence before a keepalive comment (``sse_keepalive``).
    """

    def __init__(self, runtime: Runtime, admission: Admission, keepalive: float) -> None:
        self.runtime = runtime
        self.admission = admission
        self.keepalive = keepalive

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            response = PlainTextResponse("Method not allowed\n", 405, headers={"Allow": "GET"})
            await response(scope, receive, send)
            return
        request = Request(scope, receive)
        result = self.admission.admit(request, "sse")
        if isinstance(result, Refusal):
            await result.response()(scope, receive, send)
            return
        admitted: Admitted = result
        runtime = self.runtime
        control: StreamExtension | None = scope.get("extensions", {}).get(STREAM_EXTENSION)
        stream: SseStream | None = None

        def open_stream() -> SseStream:
            nonlocal stream
            subscriber = runtime.stream.open(
                admitted.ticker_filter, admitted.mode, admitted.options, time.monotonic()
            )
            stream = SseStream(
                subscriber,
                send,
                receive,
                hot=runtime.metrics.hot,
                client_id=runtime.next_client_id(),
                remote=admitted.remote,
                host=admitted.host,
                control=control,
                keepalive=self.keepalive,
                close_timeout=runtime.settings.close_timeout,
                origin=request.headers.get("origin"),
            )
            return stream

        async def accept() -> None:
            assert stream is not None
            await stream.start()

        async def run() -> int | None:
            assert stream is not None
            with contextlib.suppress(OSError):
                return await stream.serve()
            return stream.close_code

        await self.admission.serve(admitted, scope["path"], open_stream, accept, run)
