"""
The Redis Pub/Sub source: one subscription per server process.

A small state machine (see :class:`~quotes_server.sources.SourceState`):
``CONNECTING`` until SUBSCRIBE is confirmed, then ``UP``. Any failure (closed
socket, timeout, a PING left unanswered) moves to ``RECONNECTING`` and the source
reconnects with backoff; if that takes longer than the grace period the state
becomes ``DOWN`` (the server closes clients with 1011 and answers handshakes with
503) until a SUBSCRIBE is confirmed again. The state is the one-part case of the
sharded source's :class:`~quotes_server.sources.health.HealthTable`, so the grace
period is written once.

The subscribed connection is read in bulk (:mod:`quotes_server.sources.resp`): an
asyncio protocol feeds each chunk the socket hands over to hiredis's reply parser
(the one redis-py itself uses) and gives every complete message to the sink straight
away, so a burst of quotes costs one callback instead of one ``get_message`` await
per quote (about 15 µs each), and the runtime's next write round sees the whole
burst. The URL is read by :func:`~quotes_server.sources.redis_url.parse_redis_url`
(redis-py's parser; a ``rediss://`` URL's TLS options become the connection's
:class:`ssl.SSLContext`); connecting, the TLS handshake, AUTH and SUBSCRIBE run
under one timeout. When the channel is
silent we send our own PING and expect the PONG within a deadline: a missing PONG
is a failure (a silently dead connection), silence alone is not (markets go quiet).
"""

from __future__ import annotations

import asyncio
import logging
from ssl import SSLContext
from typing import Any

import hiredis
from redis.exceptions import RedisError

from quotes_core import Backoff
from quotes_server.sources import Sink, SourceState
from quotes_server.sources.health import HealthTable
from quotes_server.sources.redis_url import RedisUrl, parse_redis_url
from quotes_server.sources.resp import (
    PING,
    RespProtocol,
    SubscriptionLost,
    keep_alive,
    response_error,
)

__all__ = ["RedisSource", "SubscriptionLost", "open_resp"]

log = logging.getLogger("quotes_server.redis")


class RedisSource:
    """
    Subscribe to ``channel`` on ``url`` and feed every message to a sink.

    Args:
        url: Redis URL (``redis://host:port/db``, ``rediss://`` for TLS, ``unix://``);
            what it asks for that the server does not honour raises
            :class:`~quotes_server.sources.redis_url.RedisUrlError`.
        channel: the Pub/Sub channel.
        grace_period: seconds in ``RECONNECTING`` before the state becomes ``DOWN``.
        timeout: connect and command timeout, in seconds.
        ping_interval: seconds of silence before we PING.
        pong_timeout: seconds to wait for the PONG.
        read_timeout: longest wait between two liveness checks of the connection.
    """

    name = "redis"
    assigns_positions = False

    def __init__(
        self,
        url: str,
        channel: str = "quotes.realtime",
        *,
        grace_period: float = 5.0,
        timeout: float = 3.0,
        ping_interval: float = 5.0,
        pong_timeout: float = 3.0,
        read_timeout: float = 1.0,
    ) -> None:
        self.url = url
        self.channel = channel
        self.grace_period = grace_period
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.read_timeout = read_timeout
        self.reconnects = 0
        """Successful re-subscriptions after a failure."""
        self._state = SourceState.CONNECTING
        self._health = HealthTable(1, grace_period)
        self._address = parse_redis_url(url)
        self._ssl = self._address.ssl_context()  # built once: the CA files are read here
        self._sink: Sink | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._backoff = Backoff(initial=0.1, max_delay=min(5.0, max(0.1, grace_period)), jitter=0.5)

    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def address(self) -> RedisUrl:
        """Where the source connects (parsed from its URL)."""
        return self._address

    @property
    def ssl(self) -> SSLContext | None:
        """The TLS context of a ``rediss://`` URL, built once."""
        return self._ssl

    @property
    def interest(self) -> None:
        return None  # one channel: every ticker, always

    @property
    def sequencing(self) -> None:
        return None

    def _set_state(self, state: SourceState) -> None:
        if state is self._state:
            return
        lost = state in (SourceState.DOWN, SourceState.RECONNECTING)
        log.log(
            logging.WARNING if lost else logging.INFO,
            "redis source %s -> %s (channel %r)",
            self._state.value,
            state.value,
            self.channel,
        )
        self._state = state
        if self._sink is not None:
            self._sink.on_state(state)

    async def run(self, sink: Sink) -> None:
        self._sink = sink
        sink.on_state(self._state)
        try:
            while True:
                reader: _PubSubReader | None = None
                try:
                    reader = await self._connect(sink)
                    if self._state is not SourceState.CONNECTING:
                        self.reconnects += 1
                    self._cancel_grace()
                    self._backoff.reset()
                    self._health.ever_up = True
                    self._observe(up=True)
                    await self._watch(reader)
                except (RedisError, OSError, TimeoutError, SubscriptionLost) as exc:
                    self._failed(exc)
                finally:
                    if reader is not None:
                        reader.close()
                await asyncio.sleep(self._backoff.next_delay())
        finally:
            self._cancel_grace()

    def _failed(self, exc: BaseException) -> None:
        detail = f"{type(exc).__name__}: {exc}"
        if self._state is SourceState.UP:
            log.warning("redis subscription lost (%s); reconnecting", detail)
        elif self._state is SourceState.CONNECTING:
            log.warning("redis unavailable at start-up (%s); retrying", detail)
            self._health.failed = True
        else:
            log.debug("redis still unavailable (%s)", detail)
        self._observe(up=False)

    def _observe(self, *, up: bool) -> None:
        """The channel is subscribed (``up``) or not: the health table says the state."""
        loop = asyncio.get_running_loop()
        self._health.observe({0} if up else set(), loop.time())
        deadline = self._health.next_deadline()
        if deadline is not None and self._grace is None:
            self._grace = loop.call_at(deadline, self._grace_over)
        self._set_state(self._health.source_state())

    def _grace_over(self) -> None:
        self._grace = None
        loop = asyncio.get_running_loop()
        self._health.expire(loop.time())
        deadline = self._health.next_deadline()
        if deadline is not None:  # the loop may run a timer a clock tick early
            self._grace = loop.call_at(deadline, self._grace_over)
        self._set_state(self._health.source_state())

    def _cancel_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    async def _connect(self, sink: Sink) -> _PubSubReader:
        """Connect, authenticate and SUBSCRIBE, all within ``timeout``."""
        reader = _PubSubReader(self.channel.encode(), sink)
        async with asyncio.timeout(self.timeout):
            try:
                await open_resp(reader, self._address, self._ssl)
                await reader.subscribe()
            except BaseException:
                reader.close()
                raise
        return reader

    async def _watch(self, reader: _PubSubReader) -> None:
        """Wait while the reader feeds the sink, keeping the PING/PONG deadline."""
        await keep_alive(
            reader,
            reader.ping,
            ping_interval=self.ping_interval,
            pong_timeout=self.pong_timeout,
            read_timeout=self.read_timeout,
        )


async def open_resp(conn: RespProtocol, address: RedisUrl, ssl: SSLContext | None) -> None:
    """Connect ``conn`` to ``address`` (TCP, TLS or ``unix://``) and AUTH (no timeout here)."""
    loop = asyncio.get_running_loop()
    if address.unix_path is not None:
        await loop.create_unix_connection(lambda: conn, address.unix_path)
    else:
        await loop.create_connection(lambda: conn, address.host, address.port, ssl=ssl)
    await conn.authenticate(address.username, address.password)


class _PubSubReader(RespProtocol):
    """
    The subscribed connection, read in bulk: every chunk the socket hands over is
    fed to hiredis's reply parser and each complete ``message`` reply goes to the
    sink at once, so a burst of quotes costs one callback, not one await each, and
    the runtime's flush sees the whole burst.
    """

    def __init__(self, channel: bytes, sink: Sink) -> None:
        super().__init__()
        self._channel = channel
        self._sink = sink
        self._subscribed = False

    def _hand_over(self) -> None:
        """
        Give the sink the complete messages parsed so far, at most
        :meth:`Sink.room <quotes_server.sources.Sink.room>` of them (the runtime's budget
        per write round); past that, stop reading the socket and go on after the
        runtime's flush (already scheduled), so that a burst never buffers more for a
        client than a healthy one can take.
        """
        parser = self.parser
        channel = self._channel
        on_message = self._sink.on_message
        budget = self._sink.room()
        try:
            while budget:
                reply = parser.gets()
                if reply is False:
                    break
                if (
                    self._subscribed
                    and type(reply) is list
                    and len(reply) == 3
                    and reply[0] == b"message"
                ):
                    budget -= 1
                    if reply[1] == channel:
                        try:
                            on_message(reply[2])
                        except Exception:  # a bug must not cost the rest of the chunk
                            log.exception("error while handling an upstream message")
                    continue
                self._other(reply)
            else:  # budget spent: more may be parsed already
                self._pause()
                return
        except hiredis.ProtocolError as exc:
            self.fail(RedisError(f"protocol error from Redis: {exc}"))
            return
        self._resume_reading()

    def _other(self, reply: Any) -> None:
        if self._answer(reply):
            return  # the reply to AUTH or SUBSCRIBE
        if isinstance(reply, hiredis.ReplyError):
            self.fail(response_error(reply))
            return
        kind = reply[0] if type(reply) is list and reply else None
        if kind == b"unsubscribe":
            self.fail(SubscriptionLost("unsubscribed by the server"))
        # b"pong": liveness only, last_seen is already updated

    async def subscribe(self) -> None:
        """SUBSCRIBE to the channel and wait for the confirmation."""
        reply = await self.call([b"SUBSCRIBE", self._channel])
        if not (type(reply) is list and reply[:2] == [b"subscribe", self._channel]):
            raise SubscriptionLost(f"unexpected SUBSCRIBE reply: {reply!r}")
        self._subscribed = True

    def ping(self) -> None:
        self.send(PING)
