"""
The Redis Pub/Sub source: one subscription per server process.

A small state machine (see :class:`~quotes_server.sources.SourceState`):
``CONNECTING`` until SUBSCRIBE is confirmed, then ``UP``. Any failure (closed
socket, timeout, a PING left unanswered) moves to ``RECONNECTING`` and the source
reconnects with backoff; if that takes longer than the grace period the state
becomes ``DOWN`` (the server closes clients with 1011 and answers handshakes with
503) until a SUBSCRIBE is confirmed again.

redis-py runs with its own retries off and explicit timeouts; messages are read
with ``get_message(timeout=...)``, never a blocking read without a deadline. When
the channel is silent we send our own PING and expect the PONG within a deadline:
a missing PONG is a failure (a silently dead connection), silence alone is not
(markets go quiet).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from quotes_core import Backoff
from quotes_server.sources import Sink, SourceState

__all__ = ["RedisSource", "SubscriptionLost"]

log = logging.getLogger("quotes_server.redis")


class SubscriptionLost(Exception):
    """The subscription stopped answering (no PONG in time, or unsubscribed)."""


class RedisSource:
    """
    Subscribe to ``channel`` on ``url`` and feed every message to a sink.

    Args:
        url: Redis URL (``redis://host:port/db``).
        channel: the Pub/Sub channel.
        grace_period: seconds in ``RECONNECTING`` before the state becomes ``DOWN``.
        timeout: connect and command timeout, in seconds.
        ping_interval: seconds of silence before we PING.
        pong_timeout: seconds to wait for the PONG.
        read_timeout: longest single wait in ``get_message`` (keeps the loop responsive).
    """

    name = "redis"

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
        self._sink: Sink | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._backoff = Backoff(initial=0.1, max_delay=min(5.0, max(0.1, grace_period)), jitter=0.5)

    @property
    def state(self) -> SourceState:
        return self._state

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

    def _client(self) -> Redis:
        return Redis.from_url(
            self.url,
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            single_connection_client=False,
        )

    async def run(self, sink: Sink) -> None:
        self._sink = sink
        sink.on_state(self._state)
        try:
            while True:
                client = self._client()
                pubsub = client.pubsub()
                try:
                    await self._subscribe(pubsub)
                    if self._state is not SourceState.CONNECTING:
                        self.reconnects += 1
                    self._cancel_grace()
                    self._backoff.reset()
                    self._set_state(SourceState.UP)
                    await self._read(pubsub, sink)
                except (RedisError, OSError, TimeoutError, SubscriptionLost) as exc:
                    self._failed(exc)
                finally:
                    await self._close(pubsub, client)
                await asyncio.sleep(self._backoff.next_delay())
        finally:
            self._cancel_grace()

    def _failed(self, exc: BaseException) -> None:
        detail = f"{type(exc).__name__}: {exc}"
        if self._state is SourceState.UP:
            log.warning("redis subscription lost (%s); reconnecting", detail)
            self._set_state(SourceState.RECONNECTING)
            loop = asyncio.get_running_loop()
            self._grace = loop.call_later(self.grace_period, self._grace_over)
        elif self._state is SourceState.CONNECTING:
            log.warning("redis unavailable at start-up (%s); retrying", detail)
            self._set_state(SourceState.DOWN)
        else:
            log.debug("redis still unavailable (%s)", detail)

    def _grace_over(self) -> None:
        self._grace = None
        if self._state is SourceState.RECONNECTING:
            self._set_state(SourceState.DOWN)

    def _cancel_grace(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None

    async def _subscribe(self, pubsub: PubSub) -> None:
        async with asyncio.timeout(self.timeout):
            await pubsub.subscribe(self.channel)
            while True:
                msg = await pubsub.get_message(timeout=self.timeout)
                if msg is None:
                    raise TimeoutError("no SUBSCRIBE confirmation")
                if msg["type"] == "subscribe":
                    return

    async def _read(self, pubsub: PubSub, sink: Sink) -> None:
        channel = self.channel.encode()
        last_seen = time.monotonic()
        ping_sent: float | None = None
        while True:
            msg: dict[str, Any] | None = await pubsub.get_message(timeout=self.read_timeout)
            now = time.monotonic()
            if msg is not None:
                last_seen = now
                ping_sent = None
                kind = msg["type"]
                if kind == "message" and msg["channel"] == channel:
                    sink.on_message(msg["data"])
                elif kind == "unsubscribe":
                    raise SubscriptionLost("unsubscribed by the server")
                continue
            if ping_sent is not None:
                if now - ping_sent > self.pong_timeout:
                    raise SubscriptionLost(f"no PONG within {self.pong_timeout}s")
            elif now - last_seen >= self.ping_interval:
                await pubsub.ping()
                ping_sent = now

    async def _close(self, pubsub: PubSub, client: Redis) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await client.aclose()
        except (RedisError, OSError, TimeoutError) as exc:  # closing a dead connection
            log.debug("error while closing redis connection: %s", exc)
