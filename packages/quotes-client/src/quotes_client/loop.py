"""
The client's connection loop: the I/O around the sans-I/O client engine.

:class:`ConnectionLoop` opens a connection (:mod:`quotes_client.transport`: a WebSocket,
or an SSE stream for an ``http(s)://`` URL) to the URL the
:class:`~quotes_client.engine.ClientEngine` gives, feeds it every frame, puts the
quotes in the consumer's :class:`~quotes_client.buffer.BoundedBuffer`, settles
filter changes with the server's replies (:class:`Replies`), announces every event,
and when a connection ends asks :mod:`quotes_client.policy` whether and when to try
again. It keeps the loop's counters; ``QuotesClient`` reads them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from quotes_client.announcer import Announcer
from quotes_client.buffer import BoundedBuffer
from quotes_client.engine import Answer, ClientEngine
from quotes_client.errors import ActionRejected, RetriesExhausted, StreamError
from quotes_client.events import BackingOff, Connected, ConnectFailed, Connecting, Disconnected
from quotes_client.policy import Outcome, classify_connect_error
from quotes_client.ratelimit import RateLimitedLog
from quotes_client.stats import ClientState, LatencyStats
from quotes_client.transport import Connection, Connector
from quotes_core import Backoff, InvalidQuote, Quote, TickerFilter

__all__ = [
    "RETRY_AFTER_CAP",
    "ConnectionLoop",
    "LoopSettings",
    "Replies",
    "TokenProvider",
]

logger = logging.getLogger("quotes_client")

RETRY_AFTER_CAP = 60.0
"""Longest ``Retry-After`` honoured, in seconds (the backoff's own cap)."""

TokenProvider = Callable[[], str | Awaitable[str]]
"""Gives the token for the next connection (sync or async): sent as ``Authorization: Bearer``."""


@dataclass(frozen=True, slots=True)
class LoopSettings:
    """How the loop connects, gives up, and keeps time (``QuotesClient``'s options)."""

    connector: Connector
    headers: dict[str, str]
    """Request headers of every connection (``Origin``, the caller's, a fixed token)."""
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
        self.conn: Connection | None = None
        """The open connection, if any."""
        self._deadline: asyncio.Timeout | None = None
        self._restart = False
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
                conn = await s.connector(url, await self._headers())
            except _NoToken as exc:
                cause = exc.__cause__
                outcome = Outcome(str(exc))
                emit(ConnectFailed(outcome.reason, None, False))
            except Exception as exc:
                cause = exc
                outcome = classify_connect_error(exc, s.wall_clock())
                emit(ConnectFailed(outcome.reason, outcome.status, outcome.fatal))
            else:
                outcome, duration = await self._session(conn, url, attempt)
                if duration >= s.healthy_after:
                    s.backoff.reset()
                    failures = 0
            if outcome.error is not None:
                outcome.error.__cause__ = cause
                return outcome.error
            if outcome.at_once:  # a new token, or a new filter over SSE: no failure, no delay
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

    async def change(
        self, action: str, wanted: TickerFilter, text: str, within: float
    ) -> TickerFilter:
        """
        Apply a filter change: ask the open connection (``text``, the action) and return
        the filter the server confirms; over SSE (one-way) reconnect at once with the new
        query and return once it is open; without a connection, the next one asks.

        Raises:
            ActionRejected: the server refused it.
            TimeoutError: no answer (or no new stream) within ``within`` seconds.
        """
        engine = self.engine
        conn = self.conn
        if conn is None:
            engine.set_filter(wanted)
            return wanted
        if conn.one_way:
            return await self._reconnect_with(wanted, action, within)
        reply = self.replies.expect()
        try:
            await conn.send(text)
            async with asyncio.timeout(within):
                confirmed = await reply
        except conn.closed_errors:
            confirmed = None
        except TimeoutError:
            raise TimeoutError(f"no reply to {action} within {within:g} s") from None
        if confirmed is None:  # the connection ended first: the next one asks for it
            engine.set_filter(wanted)
            return wanted
        return confirmed

    async def _reconnect_with(
        self, wanted: TickerFilter, action: str, within: float
    ) -> TickerFilter:
        """
        A filter change over SSE: reconnect at once with the new query (with ``resume``,
        ``since=`` too, so nothing is missed) and return once the new stream is open.
        """
        self.engine.set_filter(wanted)
        connects = self.connects
        if not self.restart():
            return wanted  # between connections: the next one asks for it
        try:
            async with asyncio.timeout(within):
                while self.connects == connects:
                    if self.announcer.state in (ClientState.CLOSED, ClientState.FAILED):
                        break
                    await self.announcer.changed()
        except TimeoutError:
            raise TimeoutError(f"{action}: no new stream within {within:g} s") from None
        return wanted

    def restart(self) -> bool:
        """
        End the open connection at once and reconnect without a delay (a filter change
        over a one-way connection); ``False`` when no connection is being read.
        """
        deadline = self._deadline
        if deadline is None or self.conn is None:
            return False
        self._restart = True
        deadline.reschedule(asyncio.get_running_loop().time())
        return True

    async def _headers(self) -> dict[str, str]:
        """The request headers, with this connection's token when a provider gives one."""
        headers = self.settings.headers
        provider = self.settings.token
        if provider is None:
            return headers
        try:
            token = provider()
            if inspect.isawaitable(token):
                token = await token
        except Exception as exc:
            raise _NoToken(f"the token provider failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(token, str) or not token:
            raise _NoToken(f"the token provider returned {type(token).__name__}, not a token")
        return {**headers, "Authorization": f"Bearer {token}"}

    async def _session(self, conn: Connection, url: str, attempt: int) -> tuple[Outcome, float]:
        """Stream from one open connection until it ends; say how and after how long."""
        started = self.settings.clock()
        self.connects += 1
        resync = self.engine.connected()
        self.conn = conn
        self.announcer.emit(Connected(url, attempt))
        try:
            if resync is not None and conn.one_way:
                # changed while the request was under way: ask again, with the new query
                outcome = Outcome(
                    "the filter changed: reconnecting with it", by_server=False, at_once=True
                )
            else:
                if resync is not None:
                    # changed while the handshake was under way: tell this connection
                    self.replies.expect()
                    await conn.send(resync)
                outcome = await self._receive(conn)
        except conn.closed_errors as exc:
            outcome = conn.ended(exc, self.settings.token is not None)
        finally:
            self.conn = None
            self.replies.abandon()  # unanswered changes: the next connection asks for them
            await conn.close("client closing")
        duration = self.settings.clock() - started
        self.announcer.emit(
            Disconnected(outcome.code, outcome.reason, outcome.by_server, duration, outcome.fatal)
        )
        return outcome, duration

    async def _receive(self, conn: Connection) -> Outcome:
        stale = self.settings.stale_timeout
        recv = conn.recv
        wall_clock = self.settings.wall_clock
        loop = asyncio.get_running_loop()
        buffer = self.buffer
        block = buffer.overflow == "block"
        feed = self.engine.feed
        try:
            async with asyncio.timeout(None) as deadline:
                self._deadline = deadline
                while True:
                    if stale is not None:
                        deadline.reschedule(loop.time() + stale)
                    # bytes: an undecodable text frame becomes one invalid quote,
                    # not a connection closed by the library with 1007
                    raw = await recv()
                    if stale is not None:
                        deadline.reschedule(None)
                    if raw is None:  # an SSE keepalive: alive, nothing to read
                        continue
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
        except conn.closed_errors as exc:
            return conn.ended(exc, self.settings.token is not None)
        except TimeoutError:
            if not deadline.expired():
                raise
            if self._restart:
                self._restart = False
                await conn.close("the filter changed")
                return Outcome(
                    "the filter changed: reconnecting with it", by_server=False, at_once=True
                )
            reason = f"no message for {stale:g} s"
            await conn.close(reason)
            return Outcome(f"stale stream: {reason}", by_server=False)
        finally:
            self._deadline = None
