"""
The server's running state: one source, one hub, the open connections.

Upstream messages arrive through :meth:`Runtime.on_message` (the source's sink):
each is parsed, validated and encoded once by quotes-core, turned into a WebSocket
frame once and published to the hub. The subscriptions that became non-empty are
collected, and one flush per event-loop turn (a callback of its own, after the
source has handed over everything it had) lets each of their connections write its
whole batch with one non-blocking write. No write to any client happens in the
source's reading loop, so a slow client can never hold up the upstream reader.

The stream protocol (docs: Stream protocol) is wired here from the core's pieces:
every valid quote gets the next ``seq`` of the current ``epoch`` and is recorded
in the history window and the snapshot map (O(1) each). Plain clients live in
:attr:`Runtime.hub` of shared pre-built frames, exactly as before; clients that
asked for ``seq``/``since``, ``max_hz`` or ``batch`` live in
:attr:`Runtime.stream_hub`, which carries :class:`~quotes_core.StreamItem` and is
only published to while it has subscribers. Every filter change of a connection
goes through :meth:`Runtime.change_filter`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from quotes_core import (
    FlushPacer,
    History,
    Hub,
    InvalidQuote,
    Mode,
    Snapshot,
    StreamItem,
    StreamOptions,
    Subscription,
    TickerFilter,
    answer,
    opening,
    parse_quote,
)
from quotes_server.connection import CloseCode, Connection, PlainOutbox, Receive, Send
from quotes_server.frames import FramesExtension, text_frame
from quotes_server.limits import InboundExtension
from quotes_server.logs import RateLimitedLog, safe, truncate
from quotes_server.metrics import Metrics
from quotes_server.session import Session
from quotes_server.settings import Settings
from quotes_server.sources import FollowsInterest, QuoteSource, SourceState

__all__ = ["Runtime"]

log = logging.getLogger("quotes_server")

QUEUE_FULL_REASON = "Slow consumer: too much queued"
"""Close reason (with 1013) of a client whose queue passed its byte budget."""


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
        # opted-in clients that need each quote's position (seq, max_hz, batch)
        self.stream_hub: Hub[StreamItem[bytes]] = Hub(bound=settings.buffer_size)
        self.connections: dict[Subscription[Any], Connection] = {}
        self.history: History[bytes] = History(settings.history_size, settings.history_age)
        self.snapshot: Snapshot[bytes] = Snapshot()
        self.seq = 0
        """The newest position published (per process, across epochs)."""
        self.epoch = new_epoch()
        """The current stream epoch (new at start and after each upstream outage)."""
        self._upstream_lost = False
        self._per_host: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._invalid_log = RateLimitedLog(logging.getLogger("quotes_server.upstream"))
        self.client_log = RateLimitedLog(logging.getLogger("quotes_server.connection"))
        self._reconnects_seen = 0
        self._ready: list[Subscription[Any]] = []
        self._flush_handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._pacer = FlushPacer(settings.flush_window)
        self._since_flush = 0
        """Upstream messages since the last write round started."""
        self._newest: datetime | None = None
        # the sharded source subscribes upstream only to what the hub's clients want
        self._interest = source if isinstance(source, FollowsInterest) else None

    # --- the source's sink -------------------------------------------------------------------

    def on_message(self, raw: bytes) -> None:
        """Validate one upstream message and fan it out (called by the source)."""
        self.metrics.hot.received += 1
        self._since_flush += 1
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
        frame = text_frame(payload)
        self.seq = seq = self.seq + 1
        item = StreamItem(seq, self.epoch, quote.ticker, frame, time.monotonic())
        self.history.append(item)
        self.snapshot.update(item)
        woken = self.hub.publish(quote, frame)
        if woken:
            self._ready += woken
        if len(self.stream_hub):
            woken_stream = self.stream_hub.publish(quote, item)
            if woken_stream:
                self._ready += woken_stream
        if self._ready:
            if self._flush_handle is None:
                loop = asyncio.get_running_loop()
                delay = self._pacer.delay(time.monotonic())
                if delay > 0.0:  # busy: let more frames share each client's next write
                    self._flush_handle = loop.call_later(delay, self._flush)
                else:
                    self._flush_handle = loop.call_soon(self._flush)
            elif self._pacer.arrived():  # a held round has waited for enough quotes
                self._release_held()

    def _release_held(self) -> None:
        """Run the pending (held) write round after this loop turn instead of later."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._pacer.started()
        self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def room(self) -> int:
        """
        Messages to take before the next write round: the pacer's budget less what
        arrived since the last round (the whole budget while no round is pending).
        """
        if self._flush_handle is None:
            self._since_flush = 0
        room = self._pacer.budget - self._since_flush
        if room <= 0:
            if self._pacer.holding:  # the round waits for time: the budget is spent first
                self._release_held()
            return 0
        return room

    def _flush(self) -> None:
        """Let every connection with new frames write them (one write each)."""
        start = time.monotonic()
        self._flush_handle = None
        self._since_flush = 0
        self._pacer.started()
        self.metrics.hot.flushes += 1
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
        self._pacer.finished(start, time.monotonic())

    def on_state(self, state: SourceState) -> None:
        """Track the source's state; past the grace period close everyone with 1011."""
        self.metrics.set_state(state)
        if state in (SourceState.RECONNECTING, SourceState.DOWN):
            self._upstream_lost = True
        elif state is SourceState.UP and self._upstream_lost:
            # quotes published while we were not subscribed are gone for good
            self._upstream_lost = False
            self.new_epoch()
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

    def new_epoch(self) -> None:
        """Start a new epoch: nothing before it can be resumed."""
        old, self.epoch = self.epoch, new_epoch()
        self.history.clear()
        log.info("stream epoch %s -> %s at seq %d", old, self.epoch, self.seq)

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

        The snapshot and the replay of a resume are taken in this same synchronous
        step as the subscription, so the client gets every quote exactly once.
        """
        hub: Hub[Any] = self.stream_hub if options.sequenced else self.hub
        sub: Subscription[Any] = hub.subscribe(ticker_filter, mode=mode)
        session = None if options.plain else self._session(hub, sub, options)
        conn = Connection(
            hub,
            sub,
            session if session is not None else PlainOutbox(self.hub, sub),
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
            event, first = opening(
                options,
                ticker_filter,
                self.history,
                self.snapshot,
                epoch=self.epoch,
                last_seq=self.seq,
                now=time.monotonic(),
                replay_limit=self.settings.replay_limit,
                replay_bytes=self.settings.client_queue_limit,
            )
            if event is not None:
                session.control(event)
            session.extend(first)
        return conn

    def _session(self, hub: Hub[Any], sub: Subscription[Any], options: StreamOptions) -> Session:
        return Session(hub, sub, options, self.settings.client_queue_limit)

    def _attach(self, conn: Connection, session: Session) -> None:
        conn.session = session
        conn.outbox = session
        session.wake = conn.on_ready

    def change_filter(self, conn: Connection, new: TickerFilter) -> None:
        """
        Replace a connection's ticker filter: the one place every filter change
        (subscribe, unsubscribe and set actions) goes through.
        """
        conn.hub.change_filter(conn.sub, new)
        self.interest_changed()

    def on_client_text(self, conn: Connection, text: str) -> None:
        """
        A client's text message: an action, answered with a control frame. An action
        weighs its size against the inbound rate (past it: 1008), and a client whose
        queue passes its byte budget (it sends but does not read) is closed with 1013.
        """
        session: Session | None = conn.session
        if session is None:  # the first action of a plain client
            session = self._session(conn.hub, conn.sub, StreamOptions())
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
            conn.close(CloseCode.INTERNAL_ERROR, "Internal server error")
            return
        if session.over_budget:
            self.metrics.limit_hits.labels("client_queue").inc()
            self.metrics.slow_closes.inc()
            self.client_log(
                logging.WARNING,
                "client %s queued over %d bytes without reading: closing with 1013",
                conn.client_id,
                session.budget,
            )
            conn.close(CloseCode.TRY_AGAIN_LATER, QUEUE_FULL_REASON)
            return
        conn.on_ready()

    def _act(self, conn: Connection, session: Session, text: str) -> None:
        reply = answer(
            text,
            conn.sub.filter,
            now=datetime.now(UTC),
            grant=conn.ticker_grant,
            snapshot=self.snapshot if session.options.snapshot else None,
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
        # the reply goes out after what is pending and before any quote of a new ticker
        session.control(reply.event)
        new = reply.filter
        if new is not None:
            session.retain(new)
            session.extend(reply.snapshot)
            self.change_filter(conn, new)

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
        conn.hub.unsubscribe(conn.sub)
        if conn.session is not None:
            conn.session.close()
        self.interest_changed()

    # --- upstream interest (the sharded source) ----------------------------------------------

    def interest_changed(self) -> None:
        """
        Tell the source what the hub now wants; call after every subscription change.
        """
        if self._interest is not None:
            hubs = (self.hub, self.stream_hub)
            wants_all = any(hub.wants_all() for hub in hubs)
            tickers: set[str] = set() if wants_all else set().union(*(h.tickers() for h in hubs))
            self._interest.set_interest(wants_all, tickers)

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


def new_epoch() -> str:
    """A fresh epoch: random, so two processes (or two starts) never share one."""
    return secrets.token_hex(6)
