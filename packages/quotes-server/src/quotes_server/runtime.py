"""
The server's running state: one source, one hub, the open connections.

Upstream messages arrive through :meth:`Runtime.on_message` (the source's sink):
each is parsed, validated and encoded once by quotes-core, turned into a WebSocket
frame once and published to the hub. The subscriptions that became non-empty are
collected, and one flush per event-loop turn (a callback of its own, after the
source has handed over everything it had) lets each of their connections write its
whole batch with one non-blocking write. No write to any client happens in the
source's reading loop, so a slow client can never hold up the upstream reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from quotes_core import Hub, InvalidQuote, Subscription, TickerFilter, parse_quote
from quotes_server.connection import CloseCode, Connection
from quotes_server.frames import text_frame
from quotes_server.logs import RateLimitedLog, truncate
from quotes_server.metrics import Metrics
from quotes_server.settings import Settings
from quotes_server.sources import FollowsInterest, QuoteSource, SourceState

__all__ = ["Runtime"]

log = logging.getLogger("quotes_server")


class Runtime:
    """
    Owns the hub, the source task, the connections and the slow-client watchdog.
    """

    def __init__(self, settings: Settings, source: QuoteSource, metrics: Metrics) -> None:
        self.settings = settings
        self.source = source
        self.metrics = metrics
        # the hub carries pre-built WebSocket frames: built once per quote, shared by all
        self.hub: Hub[bytes] = Hub(bound=settings.buffer_size)
        self.connections: dict[Subscription[bytes], Connection] = {}
        self._per_host: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._invalid_log = RateLimitedLog(logging.getLogger("quotes_server.upstream"))
        self.client_log = RateLimitedLog(logging.getLogger("quotes_server.connection"))
        self._reconnects_seen = 0
        self._ready: list[Subscription[bytes]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._newest: datetime | None = None
        # the sharded source subscribes upstream only to what the hub's clients want
        self._interest = source if isinstance(source, FollowsInterest) else None

    # --- the source's sink -------------------------------------------------------------------

    def on_message(self, raw: bytes) -> None:
        """Validate one upstream message and fan it out (called by the source)."""
        self.metrics.hot.received += 1
        try:
            quote, payload = parse_quote(raw)
        except InvalidQuote as exc:
            self.metrics.invalid.labels(exc.reason).inc()
            self._invalid_log(
                logging.WARNING,
                "dropped invalid upstream message (%s: %s): %s",
                exc.reason,
                exc.detail,
                truncate(raw),
            )
            return
        self._newest = quote.timestamp
        woken = self.hub.publish(quote, text_frame(payload))
        if woken:
            self._ready += woken
            if self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Let every connection with new frames write them (once per loop turn)."""
        self._flush_handle = None
        ready, self._ready = self._ready, []
        connections = self.connections
        for sub in ready:
            conn = connections.get(sub)
            if conn is None:
                continue
            try:
                conn.on_ready()
            except Exception:  # one broken connection must not starve the others
                log.exception("client %s: write failed", conn.client_id)
                conn.close(CloseCode.INTERNAL_ERROR, "Internal server error")
        if self._newest is not None:
            self.metrics.latency.observe(max(0.0, time.time() - self._newest.timestamp()))

    def on_state(self, state: SourceState) -> None:
        """Track the source's state; past the grace period close everyone with 1011."""
        self.metrics.set_state(state)
        reconnects = getattr(self.source, "reconnects", 0)
        if reconnects > self._reconnects_seen:
            self.metrics.upstream_reconnects.inc(reconnects - self._reconnects_seen)
            self._reconnects_seen = reconnects
        if state is SourceState.DOWN and self.connections:
            log.error(
                "upstream down past the %.1fs grace period: closing %d client(s) with 1011",
                self.settings.grace_period,
                len(self.connections),
            )
            self.close_all(CloseCode.INTERNAL_ERROR, "Internal server error")

    # --- connections ---------------------------------------------------------------------------

    def next_client_id(self) -> str:
        return f"c{next(self._ids)}"

    def add(self, conn: Connection) -> None:
        self.connections[conn.sub] = conn
        self._per_host[conn.host] += 1
        self.metrics.connections.inc()
        self.interest_changed()

    def remove(self, conn: Connection) -> None:
        if self.connections.pop(conn.sub, None) is not None:
            self.metrics.connections.dec()
            left = self._per_host[conn.host] - 1
            if left > 0:
                self._per_host[conn.host] = left
            else:
                del self._per_host[conn.host]
        self.hub.unsubscribe(conn.sub)
        self.interest_changed()

    # --- upstream interest (the sharded source) ----------------------------------------------

    def interest_changed(self) -> None:
        """
        Tell the source what the hub now wants; call after every subscription change.
        """
        if self._interest is not None:
            self._interest.set_interest(self.hub.wants_all(), self.hub.tickers())

    def accepts(self, filter: TickerFilter) -> bool:
        """True when a handshake with ``filter`` can be served (else 503)."""
        if self._interest is not None:
            return self._interest.accepts(filter)
        return self.source.state.accepting

    async def wait_upstream(self, filter: TickerFilter) -> None:
        """
        Wait (at most the Redis timeout) until the upstream part ``filter`` needs is
        subscribed, so the client sees every quote published after its handshake.
        """
        interest = self._interest
        if interest is not None and not await interest.wait_subscribed(
            filter, self.settings.redis_timeout
        ):
            log.warning("shard subscription for %s not confirmed in time", filter)

    def close_affected(self, affected: Callable[[TickerFilter], bool]) -> None:
        """Close with 1011 the clients whose filter ``affected`` says lost its upstream."""
        hit = [c for c in self.connections.values() if affected(c.sub.filter)]
        if hit:
            log.error(
                "upstream shard(s) down past the %.1fs grace period: closing %d of %d "
                "client(s) with 1011",
                self.settings.grace_period,
                len(hit),
                len(self.connections),
            )
        for conn in hit:
            conn.close(CloseCode.INTERNAL_ERROR, "Internal server error")

    def connections_from(self, host: str) -> int:
        """Open connections from one client address."""
        return self._per_host.get(host, 0)

    def close_all(self, code: int, reason: str) -> None:
        for conn in list(self.connections.values()):
            conn.close(code, reason)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run_source(), name="quotes-source"),
            loop.create_task(self._watchdog(), name="quotes-watchdog"),
        ]

    async def stop(self) -> None:
        self.close_all(CloseCode.GOING_AWAY, "Server shutting down")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _run_source(self) -> None:
        while True:
            try:
                await self.source.run(self)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in a source must not kill the process's stream
                log.exception("quote source %s crashed; restarting it", self.source.name)
                await asyncio.sleep(1.0)

    async def _watchdog(self) -> None:
        timeout = self.settings.slow_client_timeout
        interval = min(1.0, timeout / 4)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections.values()):
                if conn.close_code is None and conn.stalled(now, timeout):
                    log.warning(
                        "client %s made no progress for %.1fs with %d quote(s) pending: "
                        "closing with 1013",
                        conn.client_id,
                        timeout,
                        conn.sub.pending,
                    )
                    self.metrics.slow_closes.inc()
                    conn.close(CloseCode.TRY_AGAIN_LATER, "Slow consumer")
