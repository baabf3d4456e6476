"""
The client's connection loop: the I/O around the sans-I/O client engine.

:class:`ConnectionLoop` opens a WebSocket to the URL the
:class:`~quotes_client.engine.ClientEngine` gives, feeds it every frame, puts the
quotes in the consumer's :class:`~quotes_client.buffer.BoundedBuffer`, settles
filter changes with the server's replies (:class:`Replies`), announces every event,
and when a connection ends asks :mod:`quotes_client.policy` whether and when to try
again. It keeps the loop's counters; ``QuotesClient`` reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from quotes_client.announcer import Announcer
from quotes_client.buffer import BoundedBuffer
from quotes_client.engine import Answer, ClientEngine
from quotes_client.errors import ActionRejected, RetriesExhausted, StreamError
from quotes_client.events import BackingOff, Connected, ConnectFailed, Connecting, Disconnected
from quotes_client.policy import Outcome, classify_close, classify_connect_error
from quotes_client.ratelimit import RateLimitedLog
from quotes_client.stats import LatencyStats
from quotes_core import Backoff, InvalidQuote, Quote, TickerFilter

__all__ = [
    "RETRY_AFTER_CAP",
    "ConnectionLoop",
    "LoopSettings",
    "Replies",
    "TokenProvider",
    "close_politely",
]

logger = logging.getLogger("quotes_client")

RETRY_AFTER_CAP = 60.0
"""Longest ``Retry-After`` honoured, in seconds (the backoff's own cap)."""

TokenProvider = Callable[[], str | Awaitable[str]]
"""Gives the token for the next connection (sync or async): sent as ``Authorization: Bearer``."""


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """How the loop connects, gives up, and keeps time (``QuotesClient``'s options)."""

    connect_kwargs: dict[str, Any]
    token: TokenProvider | None
    max_retries: int | None
    stale_timeout: float | None
    healthy_after: float
    backoff: Backoff
    sleep: Callable[[float], Awaitable[object]]
    clock: Callable[[], float]
    wall_clock: Callable[[], float]


class _NoToken(Exception):
    """The token provider gave no token for this connection (retried with backoff)."""


class Replies:
    """Filter changes sent and not yet answered; the server answers them in order."""

    def __init__(self) -> None:
        self._pending: deque[asyncio.Future[TickerFilter | None]] = deque()

    def expect(self) -> asyncio.Future[TickerFilter | None]:
        """The future of the next reply: the filter the server confirmed, or a refusal."""
        reply: asyncio.Future[TickerFilter | None] = asyncio.get_running_loop().create_future()
        # a refusal nobody awaits any more (timed out, or the automatic "set") is
        # reported as a ServerError event; do not let asyncio log it again
        reply.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending.append(reply)
        return reply

    def answer(self, answer: TickerFilter | ActionRejected) -> None:
        """The server's reply to the oldest change still pending."""
        if not self._pending:
            return
        reply = self._pending.popleft()
        if reply.done():
            return
        if isinstance(answer, ActionRejected):
            reply.set_exception(answer)
        else:
            reply.set_result(answer)

    def abandon(self) -> None:
        """The connection ended: every pending change answers ``None`` (the next one asks)."""
        while self._pending:
            reply = self._pending.popleft()
            if not reply.done():
                reply.set_result(None)


class ConnectionLoop:
    """Connect, stream, reconnect: until a fatal outcome or ``max_retries``."""

    def __init__(
        self,
        engine: ClientEngine,
        buffer: BoundedBuffer[Quote],
        announcer: Announcer,
        settings: LoopSettings,
        latency: LatencyStats,
    ) -> None:
        self.engine = engine
        self.buffer = buffer
        self.announcer = announcer
        self.settings = settings
        self.latency = latency
        self.replies = Replies()
        self.ws: ClientConnection | None = None
        """The open connection, if any."""
        self.received = 0
        self.invalid = 0
        self.attempts = 0
        self.connects = 0
        self._invalid_log = RateLimitedLog(logger, clock=settings.clock)

    async def run(self) -> StreamError:
        """Run until the client must stop; the error says why."""
        s = self.settings
        emit = self.announcer.emit
        failures = 0  # consecutive, since the last healthy connection
        while True:
            self.attempts += 1
            attempt = self.attempts
            url = self.engine.connecting()
            emit(Connecting(url, attempt))
            cause: BaseException | None = None
            try:
                ws = await connect(url, **await self._connect_options())
            except _NoToken as exc:
                cause = exc.__cause__
                outcome = Outcome(str(exc))
                emit(ConnectFailed(outcome.reason, None, False))
            except Exception as exc:
                cause = exc
                outcome = classify_connect_error(exc, s.wall_clock())
                emit(ConnectFailed(outcome.reason, outcome.status, outcome.fatal))
            else:
                outcome, duration = await self._session(ws, url, attempt)
                if duration >= s.healthy_after:
                    s.backoff.reset()
                    failures = 0
            if outcome.error is not None:
                outcome.error.__cause__ = cause
                return outcome.error
            if outcome.at_once:  # a new token: no failure, no delay
                emit(BackingOff(0.0, self.attempts + 1, None))
                continue
            failures += 1
            if s.max_retries is not None and failures > s.max_retries:
                exhausted = RetriesExhausted(failures, outcome.reason)
                exhausted.__cause__ = cause
                return exhausted
            delay = s.backoff.next_delay()
            if outcome.retry_after is not None:
                delay = max(delay, min(outcome.retry_after, RETRY_AFTER_CAP))
            emit(BackingOff(delay, self.attempts + 1, outcome.retry_after))
            await s.sleep(delay)

    async def _connect_options(self) -> dict[str, Any]:
        """``connect()``'s arguments, with this connection's token when a provider gives one."""
        options = self.settings.connect_kwargs
        provider = self.settings.token
        if provider is None:
            return options
        try:
            token = provider()
            if inspect.isawaitable(token):
                token = await token
        except Exception as exc:
            raise _NoToken(f"the token provider failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(token, str) or not token:
            raise _NoToken(f"the token provider returned {type(token).__name__}, not a token")
        headers = dict(options.get("additional_headers") or {})
        headers["Authorization"] = f"Bearer {token}"
        return {**options, "additional_headers": headers}

    async def _session(self, ws: ClientConnection, url: str, attempt: int) -> tuple[Outcome, float]:
        """Stream from one open connection until it ends; say how and after how long."""
        started = self.settings.clock()
        self.connects += 1
        resync = self.engine.connected()
        self.ws = ws
        self.announcer.emit(Connected(url, attempt))
        try:
            if resync is not None:
                # changed while the handshake was under way: tell this connection
                self.replies.expect()
                await ws.send(resync)
            outcome = await self._receive(ws)
        except ConnectionClosed as exc:
            outcome = classify_close(exc, self.settings.token is not None)
        finally:
            self.ws = None
            self.replies.abandon()  # unanswered changes: the next connection asks for them
            await close_politely(ws, "client closing")
        duration = self.settings.clock() - started
        self.announcer.emit(
            Disconnected(outcome.code, outcome.reason, outcome.by_server, duration, outcome.fatal)
        )
        return outcome, duration

    async def _receive(self, ws: ClientConnection) -> Outcome:
        stale = self.settings.stale_timeout
        wall_clock = self.settings.wall_clock
        loop = asyncio.get_running_loop()
        buffer = self.buffer
        block = buffer.overflow == "block"
        feed = self.engine.feed
        try:
            async with asyncio.timeout(None) as deadline:
                while True:
                    if stale is not None:
                        deadline.reschedule(loop.time() + stale)
                    # bytes: an undecodable text frame becomes one invalid quote,
                    # not a connection closed by the library with 1007
                    raw = await ws.recv(decode=False)
                    if stale is not None:
                        deadline.reschedule(None)
                    for item in feed(raw):
                        if isinstance(item, Quote):
                            self.received += 1
                            self.latency.add(wall_clock() - item.timestamp.timestamp())
                            if block:
                                await buffer.put(item)
                            else:
                                buffer.offer(item)
                        elif isinstance(item, InvalidQuote):
                            self.invalid += 1
                            self._invalid_log.warning(
                                "quotes-client: skipped an invalid message (%s)", item
                            )
                        elif isinstance(item, Answer):
                            self.replies.answer(item.result)
                        else:
                            self.announcer.emit(item)
        except ConnectionClosed as exc:
            return classify_close(exc, self.settings.token is not None)
        except TimeoutError:
            if not deadline.expired():
                raise
            reason = f"no message for {stale:g} s"
            await close_politely(ws, reason)
            return Outcome(f"stale stream: {reason}", by_server=False)


async def close_politely(ws: ClientConnection, reason: str) -> None:
    """
    Close with 1000, discarding what is still queued.

    The server's close frame arrives behind the data already in flight; when the
    reader stopped reading (``"block"``, or cancelled), the library's queue is
    full and would never reach it, so ``close()`` would wait ``close_timeout``.
    """

    async def discard() -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv(decode=False)

    drain = asyncio.get_running_loop().create_task(discard())
    try:
        await ws.close(1000, reason)
    finally:
        drain.cancel()
        if ws.state is not State.CLOSED:  # close() itself was cancelled
            ws.transport.abort()
