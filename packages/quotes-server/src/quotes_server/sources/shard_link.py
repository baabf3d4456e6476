"""
One pub/sub connection of the sharded source: a master and the shard channels
subscribed there, read in bulk.

:class:`ShardLink` keeps the link's state (channels wanted, confirmed, in flight)
and its liveness; :class:`_ShardProtocol` is the socket, a
:class:`~quotes_server.sources.resp.RespProtocol` like the single-channel source's:
each complete ``smessage`` goes to the source at once (all links together hand over
at most the runtime's :meth:`~quotes_server.sources.Sink.room` between two write
rounds), so a burst costs one callback rather than one ``get_message`` await per
quote. Commands
(``SSUBSCRIBE``/``SUNSUBSCRIBE``/``PING``, one channel per command so an error reply
belongs to exactly one of them) are written by the link's writer task; replies other
than messages come back to the link in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from typing import Any, Protocol

import hiredis
from redis.exceptions import RedisError, ResponseError

from quotes_core import Backoff
from quotes_server.sources.resp import (
    PING,
    RespProtocol,
    SubscriptionLost,
    command_bytes,
    keep_alive,
    response_error,
)
from quotes_server.sources.topology import Address
from quotes_server.tasks import cancel_and_wait

__all__ = ["Address", "LinkOwner", "ShardLink"]

log = logging.getLogger("quotes_server.redis")


class LinkOwner(Protocol):
    """What a link needs of the sharded source that owns it."""

    grace_period: float
    timeout: float
    ping_interval: float
    pong_timeout: float
    username: str | None
    password: str | None
    ssl_context: ssl.SSLContext | None

    def deliver(self, data: bytes) -> None: ...

    def room(self) -> int: ...

    def link_changed(self, link: ShardLink, exc: BaseException | None) -> None: ...

    def channel_moved(self, link: ShardLink, channel: str, exc: ResponseError | None) -> None: ...

    def subscribed_changed(self) -> None: ...


class _ShardProtocol(RespProtocol):
    """The link's socket: replies parsed in bulk, messages handed over at once."""

    def __init__(self, link: ShardLink) -> None:
        super().__init__()
        self._link = link
        self._streaming = False

    def _hand_over(self) -> None:
        parser = self.parser
        link = self._link
        confirmed = link.confirmed
        deliver = link.source.deliver
        budget = link.source.room()  # shared by every link: one budget per write round
        try:
            while budget:
                reply = parser.gets()
                if reply is False:
                    break
                if not self._streaming:
                    self._answer(reply)
                    continue
                if type(reply) is list and len(reply) == 3 and reply[0] == b"smessage":
                    budget -= 1
                    if reply[1].decode() in confirmed:
                        try:
                            deliver(reply[2])
                        except Exception:  # a bug must not cost the rest of the chunk
                            log.exception("error while handling an upstream message")
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    link.on_error(response_error(reply))
                elif type(reply) is list and reply:
                    link.on_reply(reply)
            else:  # budget spent: go on after the runtime's flush
                self._pause()
                return
        except hiredis.ProtocolError as exc:
            self.fail(RedisError(f"protocol error from Redis: {exc}"))
            return
        self._resume_reading()

    def stream(self) -> None:
        """From now on replies go to the link (messages to the source)."""
        self._streaming = True


class ShardLink:
    """
    One pub/sub connection to a master and the shard channels subscribed there.

    ``wanted`` is set by the source; a writer task sends ``SSUBSCRIBE`` /
    ``SUNSUBSCRIBE`` / ``PING`` while the protocol hands the replies back in order.
    """

    def __init__(self, source: LinkOwner, address: Address) -> None:
        self.source = source
        self.address = address
        self.wanted: frozenset[str] = frozenset()
        self.confirmed: set[str] = set()
        self.up = False
        self.connects = 0
        """How many times this link came up (more than once: it reconnected)."""
        self._requested: set[str] = set()
        self._leaving: set[str] = set()
        self._sent: deque[tuple[str, str]] = deque()
        self._ping = False
        self._kick = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<link {self.address[0]}:{self.address[1]} up={self.up} {sorted(self.confirmed)}>"

    def set_wanted(self, channels: frozenset[str]) -> None:
        if channels != self.wanted:
            self.wanted = channels
            self._kick.set()

    async def run(self) -> None:
        src = self.source
        backoff = Backoff(initial=0.1, max_delay=min(5.0, max(0.1, src.grace_period)), jitter=0.5)
        while True:
            conn: _ShardProtocol | None = None
            writer: asyncio.Task[None] | None = None
            try:
                conn = await self._connect()
                self.up = True
                self.connects += 1
                backoff.reset()
                src.link_changed(self, None)
                self._kick.set()
                writer = asyncio.get_running_loop().create_task(self._write(conn))
                await self._watch(conn, writer)
            except (RedisError, OSError, TimeoutError, SubscriptionLost) as exc:
                self._reset()
                src.link_changed(self, exc)
            finally:
                self._reset()
                if conn is not None:
                    conn.close()
                if writer is not None:
                    # not suppress(CancelledError) around `await writer`: that would also
                    # swallow this task's own cancellation, and the link would reconnect
                    await cancel_and_wait([writer])
            await asyncio.sleep(backoff.next_delay())

    def _reset(self) -> None:
        self.up = False
        self.confirmed.clear()
        self._requested.clear()
        self._leaving.clear()
        self._sent.clear()
        self._ping = False

    async def _connect(self) -> _ShardProtocol:
        """Connect, AUTH when configured, and prove the node answers (PING) within the timeout."""
        src = self.source
        loop = asyncio.get_running_loop()
        host, port = self.address
        async with asyncio.timeout(src.timeout):
            _, conn = await loop.create_connection(
                lambda: _ShardProtocol(self), host, port, ssl=src.ssl_context
            )
            try:
                await conn.authenticate(src.username, src.password)
                pong = await conn.call([b"PING"])
                if pong not in (b"PONG", "PONG"):
                    raise SubscriptionLost(f"unexpected PING reply: {pong!r}")
            except BaseException:
                conn.close()
                raise
        conn.stream()
        return conn

    async def _write(self, conn: _ShardProtocol) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            # bookkeeping before each send: the reply may be read before the next send
            for channel in sorted(self.wanted - self.confirmed - self._requested):
                self._requested.add(channel)
                self._sent.append(("ssubscribe", channel))
                conn.send(command_bytes([b"SSUBSCRIBE", channel.encode()]))
            for channel in sorted(self.confirmed - self.wanted - self._leaving):
                self._leaving.add(channel)
                self._sent.append(("sunsubscribe", channel))
                conn.send(command_bytes([b"SUNSUBSCRIBE", channel.encode()]))
            if self._ping:
                self._ping = False
                self._sent.append(("pong", ""))
                conn.send(PING)

    async def _watch(self, conn: _ShardProtocol, writer: asyncio.Task[None]) -> None:
        """Until the link fails: PING a silent link (through the writer, so replies stay
        in order), fail when its PONG is late or the writer stopped."""

        def ping() -> None:
            self._ping = True
            self._kick.set()

        def check() -> None:
            if writer.done():
                exc = writer.exception()
                raise exc if exc is not None else SubscriptionLost("writer stopped")

        src = self.source
        await keep_alive(
            conn,
            ping,
            ping_interval=src.ping_interval,
            pong_timeout=src.pong_timeout,
            check=check,
        )

    def _pop(self, kind: str, channel: str) -> None:
        with contextlib.suppress(ValueError):
            self._sent.remove((kind, channel))

    def on_reply(self, reply: list[Any]) -> None:
        """A reply other than a message or an error, in order."""
        kind = reply[0]
        if kind == b"pong":
            self._pop("pong", "")
            return
        if len(reply) < 2 or not isinstance(reply[1], bytes):
            log.warning("redis %s:%s: unexpected reply: %r", *self.address, reply[:3])
            return
        channel = reply[1].decode()
        if kind == b"ssubscribe":
            self._pop("ssubscribe", channel)
            self._requested.discard(channel)
            self.confirmed.add(channel)
            if channel not in self.wanted:
                self._kick.set()  # no longer wanted while in flight: leave again
            self.source.subscribed_changed()
        elif kind == b"sunsubscribe":
            self.confirmed.discard(channel)
            if channel in self._leaving:
                self._pop("sunsubscribe", channel)
                self._leaving.discard(channel)
                self._kick.set()  # wanted again meanwhile: the writer re-subscribes
            else:
                # pushed by the server: the channel's slot is no longer served here
                self._requested.discard(channel)
                self.source.channel_moved(self, channel, None)

    def on_error(self, exc: ResponseError) -> None:
        """An error reply: it answers the oldest command still in flight."""
        kind, channel = self._sent.popleft() if self._sent else ("", "")
        if kind == "ssubscribe":
            self._requested.discard(channel)
            self.source.channel_moved(self, channel, exc)
        elif kind == "sunsubscribe":
            self._leaving.discard(channel)
            self.confirmed.discard(channel)
        else:
            log.warning("redis %s:%s: unexpected error reply: %s", *self.address, exc)
