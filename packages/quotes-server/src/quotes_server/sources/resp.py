"""
A Redis connection read in bulk: the socket side shared by both Redis sources.

:class:`RespProtocol` feeds every chunk the socket hands over to hiredis's reply
parser (the one redis-py itself uses). Before streaming, :meth:`RespProtocol.call`
sends one command and waits for its reply (AUTH, PING, SUBSCRIBE); once streaming,
the subclass's :meth:`RespProtocol._hand_over` takes the parsed replies, at most the
sink's :meth:`~quotes_server.sources.Sink.room` per write round, and
:meth:`RespProtocol._pause` stops reading the socket until the runtime's round has
run. :func:`keep_alive` is the PING/PONG deadline both sources keep: silence makes
us PING, and a PONG (or anything else) that does not come back in time is a failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis.exceptions import MovedError, RedisError, ResponseError

__all__ = [
    "CommandConnection",
    "RespProtocol",
    "SubscriptionLost",
    "command_bytes",
    "keep_alive",
    "response_error",
]


class SubscriptionLost(Exception):
    """The subscription stopped answering (no PONG in time, or unsubscribed)."""


def command_bytes(args: list[bytes]) -> bytes:
    """One RESP command (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


PING = command_bytes([b"PING"])


def response_error(reply: hiredis.ReplyError) -> ResponseError:
    """redis-py's exception for an error reply (``MOVED`` becomes a :class:`MovedError`)."""
    text = str(reply)
    if text.startswith("MOVED "):
        return MovedError(text[len("MOVED ") :])
    return ResponseError(text)


class RespProtocol(asyncio.Protocol):
    """The socket of one subscribed Redis connection; subclasses hand the replies over."""

    def __init__(self) -> None:
        self.parser = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reply: asyncio.Future[Any] | None = None
        self._paused = False
        self.last_seen = time.monotonic()
        """When the last bytes arrived from Redis (monotonic clock)."""

    # --- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        self.parser.feed(data)
        if not self._paused:
            self._hand_over()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(exc if exc is not None else SubscriptionLost("connection closed by Redis"))

    # --- for subclasses --------------------------------------------------------------------------

    def _hand_over(self) -> None:
        """Take the replies parsed so far (call :meth:`_answer` for those of :meth:`call`)."""
        raise NotImplementedError

    def _answer(self, reply: Any) -> bool:
        """Resolve the pending :meth:`call` with ``reply``; False when none is pending."""
        future = self._reply
        if future is None or future.done():
            return False
        if isinstance(reply, hiredis.ReplyError):
            future.set_exception(response_error(reply))
        else:
            future.set_result(reply)
        return True

    def _pause(self) -> None:
        """Stop reading and hand over the rest after this loop turn (the runtime's round)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if not self._paused:
            self._paused = True
            transport.pause_reading()
        asyncio.get_running_loop().call_soon(self._hand_over)

    def _resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            transport = self._transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()

    # --- used by the sources ---------------------------------------------------------------------

    def fail(self, exc: BaseException) -> None:
        """The connection is lost: fail the pending call and :meth:`wait_lost`, drop the socket."""
        for future in (self._reply, self._lost):
            if future is not None and not future.done():
                future.set_exception(exc)
        # retrieved here: a connection lost while nothing waits on it (during a call,
        # or before the source's watch begins) must not log "never retrieved" later;
        # wait_lost still raises it
        self._lost.exception()
        if self._transport is not None:
            self._transport.abort()

    async def call(self, args: list[bytes]) -> Any:
        """Send one command and wait for its reply (an error reply raises)."""
        self._reply = asyncio.get_running_loop().create_future()
        self.send(command_bytes(args))
        try:
            return await self._reply
        finally:
            self._reply = None

    async def authenticate(self, username: str | None, password: str | None) -> None:
        """``AUTH`` when a password is configured (with the user name when there is one)."""
        if password is None:
            return
        auth = [b"AUTH", password.encode()]
        if username:
            auth.insert(1, username.encode())
        await self.call(auth)

    def send(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise SubscriptionLost("connection closed")
        self._transport.write(data)

    async def wait_lost(self, seconds: float) -> None:
        """Return after ``seconds``, or raise the failure as soon as the connection is lost."""
        if not self._lost.done():
            await asyncio.wait((self._lost,), timeout=seconds)
        if self._lost.done():
            self._lost.result()  # raises the failure

    def close(self) -> None:
        if not self._lost.done():
            self._lost.set_exception(SubscriptionLost("closed"))
            self._lost.exception()  # retrieved: no "never retrieved" warning
        if self._transport is not None:
            self._transport.abort()


class CommandConnection(RespProtocol):
    """
    A connection for commands, one at a time (:meth:`RespProtocol.call`): the
    sequencer's appends, whose every reply is awaited before the next batch goes.
    A reply nothing waits for (a call that timed out) breaks the connection, which
    its user then opens again.
    """

    def _hand_over(self) -> None:
        try:
            while (reply := self.parser.gets()) is not False:
                if not self._answer(reply):
                    self.fail(SubscriptionLost(f"a reply nothing waited for: {reply!r:.80}"))
                    return
        except hiredis.ProtocolError as exc:
            self.fail(RedisError(f"protocol error from Redis: {exc}"))

    @property
    def lost(self) -> bool:
        """Whether the connection failed or was closed."""
        return self._lost.done()


async def keep_alive(
    conn: RespProtocol,
    ping: Callable[[], None],
    *,
    ping_interval: float,
    pong_timeout: float,
    read_timeout: float = 1.0,
    check: Callable[[], None] | None = None,
) -> None:
    """
    Until the connection fails: ``ping()`` when nothing arrived for ``ping_interval``
    seconds, and raise :class:`SubscriptionLost` when nothing (the PONG or a message)
    comes back within ``pong_timeout``. ``check`` runs at every wake-up and may raise.
    """
    ping_sent: float | None = None
    while True:
        if check is not None:
            check()
        now = time.monotonic()
        if ping_sent is not None and conn.last_seen >= ping_sent:
            ping_sent = None  # Redis answered
        if ping_sent is not None:
            deadline = ping_sent + pong_timeout
            if now >= deadline:
                raise SubscriptionLost(f"no PONG within {pong_timeout}s")
        else:
            deadline = conn.last_seen + ping_interval
            if now >= deadline:
                ping()
                ping_sent = now
                deadline = now + pong_timeout
        # raises as soon as the connection is lost
        await conn.wait_lost(min(read_timeout, max(0.01, deadline - now)))
