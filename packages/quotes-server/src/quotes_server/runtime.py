"""
The server's running state: one source, the stream engine, the open connections.

Upstream messages arrive through :meth:`Runtime.on_message` (the source's
:class:`~quotes_server.sources.Sink`): each is parsed, validated and encoded once by
quotes-core, turned into a WebSocket frame once and published to the engine. The
subscriptions that became non-empty go to the write rounds
(:class:`~quotes_server.rounds.WriteRounds`): one per event-loop turn, after the
source has handed over everything it had, each of their connections writes its
whole batch with one non-blocking write. No write to any client happens in the
source's reading loop, so a slow client can never hold up the upstream reader.

Every rule of the stream (positions and epochs, the resume window, the snapshot,
the two hubs, what a new client gets first, what an action does) is the core's
stream engine, :attr:`Runtime.stream` (a :class:`quotes_core.Stream` of pre-built
frames); the runtime feeds it upstream messages, opens and closes its subscribers
and answers client messages through it, and moves the frames it gives to sockets.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from quotes_core import (
    INTERNAL_ERROR_REASON,
    QUEUE_FULL_REASON,
    SHUTDOWN_REASON,
    SLOW_CONSUMER_REASON,
    CloseCode,
    InvalidQuote,
    Mode,
    Stream,
    StreamOptions,
    Subscription,
    TickerFilter,
    parse_quote,
)
from quotes_server.clients import Client
from quotes_server.connection import Connection, PlainOutbox, Receive, Send
from quotes_server.frames import FramesExtension, text_frame
from quotes_server.limits import InboundExtension
from quotes_server.logs import RateLimitedLog, safe, truncate
from quotes_server.metrics import Metrics
from quotes_server.positioned import DeploymentFeed
from quotes_server.rounds import WriteRounds
from quotes_server.session import Session
from quotes_server.settings import Settings
from quotes_server.sources import QuoteSource, SourceState
from quotes_server.tasks import cancel_and_wait

__all__ = ["GC_YOUNG_THRESHOLD", "Runtime"]

GC_YOUNG_THRESHOLD = 5000
"""
The collector's first threshold while a runtime runs (CPython's default is 700).

At the spec case's rate the young generation filled every few milliseconds, and each
young collection promoted whatever was briefly alive at that instant (a quote's
frame, a write batch, a Redis reply) towards the oldest generation, whose collection
walks every long-lived object and stops the event loop for 100-300 ms. Young
collections seven times rarer promote seven times less of what is about to die. The
two older thresholds are kept. See the Performance page, *Garbage collection pauses*.
"""

_gc_users = 0
_gc_saved = gc.get_threshold()


def _tune_gc() -> None:
    global _gc_users, _gc_saved
    if _gc_users == 0:
        _gc_saved = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *_gc_saved[1:])
    _gc_users += 1


def _untune_gc() -> None:
    global _gc_users
    _gc_users -= 1
    if _gc_users == 0:
        gc.set_threshold(*_gc_saved)


log = logging.getLogger("quotes_server")


class Runtime(DeploymentFeed):
    """
    Owns the stream engine, the source task, the connection registry (per-address
    counts), the write rounds and the slow-client watchdog. What a source of the
    deployment's positions feeds (``--history redis``) is
    :class:`~quotes_server.positioned.DeploymentFeed`'s.
    """

    def __init__(self, settings: Settings, source: QuoteSource, metrics: Metrics) -> None:
        self.settings = settings
        self.source = source
        self.metrics = metrics
        # the stream carries pre-built WebSocket frames: built once per quote, shared by all
        self.stream: Stream[bytes] = Stream(
            bound=settings.buffer_size,
            history_size=settings.history_size,
            history_age=settings.history_age,
            replay_limit=settings.replay_limit,
            queue_bytes=settings.client_queue_limit,
            plain_feed=source.assigns_positions,
        )
        self.connections: dict[Subscription[Any], Client] = {}
        """Every streaming client, WebSocket or SSE (:class:`~quotes_server.clients.Client`)."""
        self._upstream_lost = False
        self._per_host: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._invalid_log = RateLimitedLog(logging.getLogger("quotes_server.upstream"))
        self.client_log = RateLimitedLog(logging.getLogger("quotes_server.connection"))
        self._reconnects_seen = 0
        self.rounds = WriteRounds(settings.flush_window, self.connections, metrics)
        # the sharded source subscribes upstream only to what the hub's clients want
        self._interest = source.interest
        # resumes waiting for a position another instance published first
        self._advanced = asyncio.Event()
        self._position_waiters = 0
        self._recent = {}
        self._gc_tuned = False

    # --- the source's sink -------------------------------------------------------------------

    def on_message(self, raw: bytes) -> None:
        """Validate one upstream message and fan it out (called by the source)."""
        self.metrics.hot.received += 1
        rounds = self.rounds
        rounds.arrived()
        try:
            quote, payload = parse_quote(raw)
        except InvalidQuote as exc:
            self._invalid(raw, exc)
            return
        rounds.newest = quote.timestamp
        rounds.published(self.stream.publish(quote, text_frame(payload), time.monotonic()))

    def _invalid(self, raw: bytes, exc: InvalidQuote) -> None:
        self.metrics.invalid.labels(exc.reason).inc()
        self._invalid_log(
            logging.WARNING,
            "dropped invalid upstream message (%s: %s): %s",
            exc.reason,
            exc.detail,
            truncate(raw),
        )

    def room(self) -> int:
        """Messages to take before the next write round (see :meth:`WriteRounds.room`)."""
        return self.rounds.room()

    def on_state(self, state: SourceState) -> None:
        """Track the source's state; past the grace period close everyone with 1011."""
        self.metrics.set_state(state)
        if state in (SourceState.RECONNECTING, SourceState.DOWN):
            self._upstream_lost = True
        elif state is SourceState.UP and self._upstream_lost:
            # quotes published while we were not subscribed are gone for good (the
            # deployment's positions: the source brought the stream to its epoch)
            self._upstream_lost = False
            if not self.source.assigns_positions:
                self.new_epoch()
        reconnects = self.source.reconnects
        if reconnects > self._reconnects_seen:
            self.metrics.upstream_reconnects.inc(reconnects - self._reconnects_seen)
            self._reconnects_seen = reconnects
        if state is SourceState.DOWN and self.connections:
            log.error(
                "upstream down past the %.1fs grace period: closing %d client(s) with 1011",
                self.settings.grace_period,
                len(self.connections),
            )
            self.close_all(CloseCode.INTERNAL_ERROR, INTERNAL_ERROR_REASON)

    def new_epoch(self) -> None:
        """Start a new epoch: nothing before it can be resumed."""
        stream = self.stream
        old = stream.epoch
        log.info("stream epoch %s -> %s at seq %d", old, stream.new_epoch(), stream.seq)

    # --- connections ---------------------------------------------------------------------------

    def next_client_id(self) -> str:
        return f"c{next(self._ids)}"

    def open(
        self,
        ticker_filter: TickerFilter,
        mode: Mode,
        options: StreamOptions,
        send: Send,
        receive: Receive,
        *,
        client_id: str,
        remote: str,
        host: str,
        frames: FramesExtension | None,
        inbound: InboundExtension | None = None,
        ticker_grant: frozenset[str] | None = None,
    ) -> Connection:
        """
        Subscribe a new client and build its connection (not yet added: see :meth:`add`).

        The engine queues the snapshot and the replay of a resume in this same
        synchronous step as the subscription, so the client gets every quote exactly once.
        """
        subscriber = self.stream.open(ticker_filter, mode, options, time.monotonic())
        session = None if options.plain else Session(subscriber)
        conn = Connection(
            subscriber,
            session if session is not None else PlainOutbox(self.stream.plain, subscriber.sub),
            send,
            receive,
            hot=self.metrics.hot,
            on_text=self.on_client_text,
            client_id=client_id,
            remote=remote,
            host=host,
            frames=frames,
            inbound=inbound,
        )
        conn.ticker_grant = ticker_grant
        if session is not None:
            self._attach(conn, session)
        return conn

    def _attach(self, conn: Connection, session: Session) -> None:
        conn.session = session
        conn.outbox = session
        session.wake = conn.on_ready

    def on_client_text(self, conn: Connection, text: str) -> None:
        """
        A client's text message: an action, answered with a control frame. An action
        weighs its size against the inbound rate (past it: 1008), and a client whose
        queue passes its byte budget (it sends but does not read) is closed with 1013.
        """
        session: Session | None = conn.session
        if session is None:  # the first action of a plain client
            session = Session(conn.subscriber)
            self._attach(conn, session)
        try:
            self._act(conn, session, text)
        except Exception as exc:  # a bug; one client's message must not kill the others
            self.client_log(
                logging.ERROR,
                "client %s: failed to handle a message (%s: %s): %s",
                conn.client_id,
                type(exc).__name__,
                safe(str(exc), 100),
                safe(text, 100),
                exc_info=True,
            )
            conn.close(CloseCode.INTERNAL_ERROR, INTERNAL_ERROR_REASON)
            return
        subscriber = conn.subscriber
        if subscriber.over_budget:
            self.metrics.limit_hits.labels("client_queue").inc()
            self.metrics.slow_closes.inc()
            self.client_log(
                logging.WARNING,
                "client %s queued over %d bytes without reading: closing with 1013",
                conn.client_id,
                subscriber.budget,
            )
            conn.close(CloseCode.TRY_AGAIN_LATER, QUEUE_FULL_REASON)
            return
        conn.on_ready()

    def _act(self, conn: Connection, session: Session, text: str) -> None:
        reply = self.stream.act(
            conn.subscriber,
            text,
            now=session.now(),
            clock=datetime.now(UTC),
            grant=conn.ticker_grant,
            charge=conn.charge,
        )
        if reply is None:
            return  # past the inbound rate: the connection is closing with 1008
        if reply.error is not None:
            self.client_log(
                logging.INFO,
                "client %s sent an invalid message (%s): %s",
                conn.client_id,
                reply.error.code,
                safe(text, 100),
            )
        if reply.filter is not None:
            self.interest_changed()

    def add(self, conn: Client) -> None:
        self.connections[conn.sub] = conn
        self._per_host[conn.host] += 1
        self.metrics.open[conn.kind].inc()
        self.interest_changed()

    def remove(self, conn: Client) -> None:
        if self.connections.pop(conn.sub, None) is not None:
            self.metrics.open[conn.kind].dec()
            left = self._per_host[conn.host] - 1
            if left > 0:
                self._per_host[conn.host] = left
            else:
                del self._per_host[conn.host]
        self.stream.close(conn.subscriber)
        if conn.session is not None:
            conn.session.close()
        self.interest_changed()

    # --- upstream interest (the sharded source) ----------------------------------------------

    def interest_changed(self) -> None:
        """
        Tell the source what the hub now wants; call after every subscription change.
        """
        if self._interest is not None:
            stream = self.stream
            wants_all = stream.wants_all()
            self._interest.set_interest(wants_all, set() if wants_all else stream.tickers())

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
            conn.close(CloseCode.INTERNAL_ERROR, INTERNAL_ERROR_REASON)

    def connections_from(self, host: str) -> int:
        """Open connections from one client address."""
        return self._per_host.get(host, 0)

    def close_all(self, code: int, reason: str) -> None:
        for conn in list(self.connections.values()):
            conn.close(code, reason)

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.metrics.gc_timer.install()
        if not self._gc_tuned:
            self._gc_tuned = True
            _tune_gc()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run_source(), name="quotes-source"),
            loop.create_task(self._watchdog(), name="quotes-watchdog"),
        ]

    async def stop(self) -> None:
        self.close_all(CloseCode.GOING_AWAY, SHUTDOWN_REASON)
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        self.metrics.gc_timer.remove()
        if self._gc_tuned:
            self._gc_tuned = False
            _untune_gc()

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
            # in a function of its own: a loop variable here would keep the last
            # connection seen alive (with its protocol) for as long as the watchdog sleeps
            self._close_stalled(time.monotonic(), timeout)

    def _close_stalled(self, now: float, timeout: float) -> None:
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
                conn.close(CloseCode.TRY_AGAIN_LATER, SLOW_CONSUMER_REASON)
