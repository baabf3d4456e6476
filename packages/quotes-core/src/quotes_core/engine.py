"""
The stream engine: every rule of the quote stream, once, for every transport.

A :class:`Stream` owns what a server knows about the stream: positions (``seq``,
``epoch``), the resume window (:class:`~quotes_core.History`), the latest quote of
every ticker (:class:`~quotes_core.Snapshot`) and the two fan-out hubs (plain quotes,
and quotes with their position for clients that asked for ``seq``, ``batch`` or
``max_hz``). Its four operations are the stream's rules:

- :meth:`Stream.publish`: one quote gets the next position, is recorded, and fans
  out; the subscriptions to wake come back;
- :meth:`Stream.open`: a new client's :class:`Subscriber`, with what it gets before
  its live quotes already queued (the ``recovered`` frame, the replay or the
  snapshot), decided in the same synchronous step as the subscription;
- :meth:`Stream.act`: a client's message answered (the reply queued after what is
  pending, the snapshot of added tickers, the filter changed);
- :meth:`Stream.new_epoch`: continuity lost; nothing before can be resumed.

Positions are assigned here (:meth:`Stream.publish`) for a stream of one process,
or elsewhere for a whole deployment (``--history redis``): then
:meth:`Stream.publish_at` takes each quote at the position it was given,
:meth:`Stream.restore` loads the deployment's window (at start-up, after a
reconnection), and :meth:`Stream.position_ahead` tells a transport when a client
resumes from a position this process has not seen yet (it read it from a faster
instance a moment ago), so it can wait for it instead of refusing the resume.

A :class:`Subscriber` is one client's side of the stream: its hub subscription, the
queue ahead of it (control frames, snapshot, replay) counted in bytes against a
budget, its ``max_hz`` throttle; :meth:`Subscriber.take` hands out what may go out
now, and :func:`render` shapes it into frames by the client's options (one quote per
frame, ``seq``/``epoch`` fields, JSON arrays). A transport (``quotes-server``'s
ASGI connection, the testing kit's ``ScriptedServer``) only moves those frames and
keeps time: every clock reading is passed in, nothing here awaits.

The engine is generic over the payload a transport carries for a quote (a
pre-built WebSocket frame in ``quotes-server``, the canonical JSON text in the
scripted server); a :class:`Codec` says how to read and build them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized
from datetime import datetime
from typing import Any, Generic, TypeVar

from quotes_core.actions import Reply, answer
from quotes_core.history import (
    DEFAULT_HISTORY_AGE,
    DEFAULT_HISTORY_SIZE,
    History,
    HistoryBackend,
    StreamItem,
)
from quotes_core.hub import DEFAULT_BOUND, Hub, Mode, Subscription, Tickered
from quotes_core.opening import DEFAULT_QUEUE_BYTES, DEFAULT_REPLAY_LIMIT, opening
from quotes_core.query import StreamOptions
from quotes_core.rendering import Control, Element
from quotes_core.schema import Quote
from quotes_core.snapshot import Snapshot
from quotes_core.throttle import Throttle
from quotes_core.tickers import TickerFilter
from quotes_core.wire import checked_epoch

__all__ = ["AHEAD_LIMIT", "CHUNK_BYTES", "Stream", "Subscriber"]

P = TypeVar("P", bound=Sized)
"""What a transport carries for one quote (``bytes`` frames, ``str`` JSON text)."""
F = TypeVar("F")
"""A frame as a transport writes it."""

CHUNK_BYTES = 64 * 1024
"""Most queued bytes one :meth:`Subscriber.take` hands out while its queue is long."""

AHEAD_LIMIT = 10_000
"""Most positions a resume may be ahead of this stream and still be waited for: further
ahead is not another instance's head start but a position never given (answered at once,
``recovered: false``)."""

_POSITION_BYTES = 40
"""Room for ``,"seq":...,"epoch":"..."`` in a sequenced quote."""


def _size(e: Element[Any]) -> int:
    """About what an element takes on the wire, in bytes."""
    if isinstance(e, Control):
        return len(e.text)
    if isinstance(e, StreamItem):
        return len(e.payload) + _POSITION_BYTES
    return len(e)


class Subscriber(Generic[P]):
    """
    One client's side of a :class:`Stream`: its subscription, its queue and throttle.

    Created by :meth:`Stream.open`. What is queued here (outside the hub's bounded
    buffer) is counted in bytes; :attr:`over_budget` tells a transport to close the
    client (``1013`` :data:`~quotes_core.wire.QUEUE_FULL_REASON`).

    Args:
        hub: the hub ``sub`` belongs to.
        sub: the client's subscription.
        options: what the client asked for at the handshake.
        budget: most bytes this subscriber may hold queued.
    """

    __slots__ = ("_out", "budget", "due", "hub", "options", "queued", "sub", "throttle")

    def __init__(
        self, hub: Hub[Any], sub: Subscription[Any], options: StreamOptions, budget: int
    ) -> None:
        self.hub = hub
        self.sub = sub
        self.options = options
        self.budget = budget
        self.queued = 0
        """Bytes queued here (outside the hub), about what they will take on the wire."""
        self.throttle: Throttle[P] | None = (
            Throttle(options.max_hz) if options.max_hz is not None else None
        )
        self.due = False
        """Set by the transport when held-back quotes became due (see :meth:`next_due`)."""
        self._out: list[Element[P]] = []

    @property
    def filter(self) -> TickerFilter:
        """The client's ticker filter now."""
        return self.sub.filter

    @property
    def over_budget(self) -> bool:
        """True when more than :attr:`budget` bytes are queued (a client not reading)."""
        return self.queued > self.budget

    @property
    def pending(self) -> bool:
        """True when :meth:`take` may have something to hand out."""
        return bool(self._out) or self.due or self.sub.pending > 0

    def control(self, text: str, now: float) -> None:
        """Queue a control frame, after everything already pending (hub included)."""
        self.flush_pending(now)
        self._out.append(Control(text))
        self.queued += len(text)

    def extend(self, items: Iterable[StreamItem[P]]) -> None:
        """Queue quotes (a snapshot or a replay) after everything already queued."""
        out = self._out
        size = 0
        for item in items:
            out.append(item)
            size += len(item.payload) + _POSITION_BYTES
        self.queued += size

    def flush_pending(self, now: float) -> None:
        """Move the hub's pending quotes into the queue, so what follows comes after them."""
        if self.sub.pending:
            moved = self._admit(self.hub.drain(self.sub), now)
            self._out.extend(moved)
            self.queued += sum(map(_size, moved))

    def retain(self, ticker_filter: TickerFilter) -> None:
        """Drop held-back quotes of tickers the new filter no longer wants."""
        if self.throttle is not None:
            self.throttle.retain(ticker_filter)

    def next_due(self) -> float | None:
        """When the earliest held-back quote may go out (``max_hz``), or ``None``."""
        return self.throttle.next_due() if self.throttle is not None else None

    def take(self, now: float, most: int = CHUNK_BYTES) -> list[Element[P]]:
        """
        What may go out at ``now``, in order: the queue, then the hub's pending quotes
        through the throttle. While more than ``most`` bytes are queued (a replay, a
        snapshot or replies held for a slow reader) only the oldest ``most`` bytes of
        the queue come out; live quotes wait in the hub meanwhile.
        """
        if self.queued > most:
            return self._cut(most)
        out = self._out
        self._out = []
        self.queued = 0
        live = self.hub.drain(self.sub) if self.sub.pending else []
        throttle = self.throttle
        if throttle is not None:
            self.due = False
            out.extend(throttle.release(now))
            out.extend(throttle.admit(live, now))
        else:
            out.extend(live)
        return out

    def _cut(self, most: int) -> list[Element[P]]:
        """Take the oldest queued elements, ``most`` bytes of them (at least one)."""
        out = self._out
        size = 0
        n = 0
        for e in out:
            size += _size(e)
            n += 1
            if size >= most:
                break
        chunk = out[:n]
        del out[:n]
        self.queued -= size
        return chunk

    def _admit(self, live: list[Any], now: float) -> list[Any]:
        if self.throttle is None or not live:
            return live
        return self.throttle.admit(live, now)


class Stream(Generic[P]):
    """
    The stream's state and rules (see the module docs); time is passed in.

    Args:
        bound: quotes a subscription buffers losslessly before it conflates.
        history_size: quotes the resume window holds at most.
        history_age: seconds a quote stays in the resume window.
        history: another resume window than the per-process :class:`History` (then
            ``history_size`` and ``history_age`` are its own business).
        epoch: the first epoch (default: a random one).
        replay_limit: most quotes one resume replays (more: ``recovered: false``).
        queue_bytes: most bytes queued for one client outside its hub buffer; a
            replay must fit in it.
        plain_feed: positions come from elsewhere (:meth:`publish_at`) and plain
            clients are fed apart, straight from the upstream (:meth:`publish_plain`),
            so they never wait for the deployment's sequencer; a client that gets an
            opening (``snapshot``, ``since``) then joins the sequenced hub, so that
            its opening and its live quotes come from the same flow.
    """

    def __init__(
        self,
        *,
        bound: int = DEFAULT_BOUND,
        history_size: int = DEFAULT_HISTORY_SIZE,
        history_age: float = DEFAULT_HISTORY_AGE,
        history: HistoryBackend[P] | None = None,
        epoch: str | None = None,
        replay_limit: int = DEFAULT_REPLAY_LIMIT,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        plain_feed: bool = False,
    ) -> None:
        self.plain: Hub[P] = Hub(bound=bound)
        """The hub of clients that get the contract's frames (payloads as they are)."""
        self.sequenced: Hub[StreamItem[P]] = Hub(bound=bound)
        """The hub of clients whose quotes need their position (``seq``, ``batch``,
        ``max_hz``); published to only while it has subscribers."""
        self.history: HistoryBackend[P] = (
            history if history is not None else History(history_size, history_age)
        )
        """The resume window (``since=``)."""
        self.snapshot: Snapshot[P] = Snapshot()
        """The latest quote of every ticker (``snapshot=1``)."""
        self.seq = 0
        """The newest position published (0 before any; not reset by a new epoch)."""
        self.epoch = checked_epoch(epoch)
        """The current epoch."""
        self.replay_limit = replay_limit
        self.queue_bytes = queue_bytes
        self.plain_feed = plain_feed

    def __len__(self) -> int:
        """Open subscriptions, in both hubs."""
        return len(self.plain) + len(self.sequenced)

    def publish(self, quote: Quote, payload: P, now: float) -> list[Subscription[Any]]:
        """
        Give ``quote`` (carried as ``payload``) the next position, record it in the
        history and the snapshot, and fan it out.

        Returns:
            The subscriptions that had nothing pending before: wake their clients.
        """
        self.seq = seq = self.seq + 1
        return self._fan_out(quote, StreamItem(seq, self.epoch, quote.ticker, payload, now))

    def publish_at(
        self, quote: Tickered, payload: P, seq: int, epoch: str, now: float
    ) -> list[Subscription[Any]]:
        """
        Publish ``quote`` at a position assigned elsewhere (the deployment's sequencer).
        Only its ticker is read: a caller that parsed the quote earlier keeps just that.

        A new ``epoch`` starts it here too (nothing before can be resumed); a position
        already published in this epoch is ignored (a reloaded window overlapping the
        live flow); a hole (positions missing) empties the resume window, since a
        resume across it could not be exact. The caller (which knows how the quotes
        travel) fills holes from the deployment's window before it publishes.

        Returns:
            The subscriptions to wake, as :meth:`publish`.
        """
        if epoch != self.epoch:
            self.new_epoch(epoch)
        elif seq <= self.seq:
            return []
        elif seq != self.seq + 1:
            self.history.clear()
        self.seq = seq
        item = StreamItem(seq, epoch, quote.ticker, payload, now)
        if not self.plain_feed:
            return self._fan_out(quote, item)
        self.history.append(item)
        self.snapshot.update(item)
        return self.sequenced.publish(quote, item) if len(self.sequenced) else []

    def publish_plain(self, quote: Quote, payload: P) -> list[Subscription[Any]]:
        """
        With ``plain_feed``: fan ``quote`` out to the plain clients as the upstream
        sends it, before (and whether or not) the deployment gives it a position.

        Returns:
            The subscriptions to wake, as :meth:`publish`.
        """
        return self.plain.publish(quote, payload)

    def restore(self, epoch: str, seq: int, items: Iterable[StreamItem[P]]) -> None:
        """
        Take the deployment's state: its ``epoch``, its newest position ``seq`` and its
        resume window ``items`` (in order, all of ``epoch``, the newest at most
        ``seq``). Nothing is sent to clients; the snapshot learns each quote.

        Raises:
            ValueError: ``epoch`` is not a valid epoch, or the items are out of order.
        """
        self.new_epoch(epoch)
        history = self.history
        snapshot = self.snapshot
        for item in items:
            history.append(item)
            snapshot.update(item)
        self.seq = seq

    def position_ahead(self, options: StreamOptions) -> int | None:
        """
        The position a resume asks for when this stream has not reached it yet in
        the same epoch (another instance of the deployment published it a moment
        ago): wait until :attr:`seq` reaches it, or a new epoch starts, before
        :meth:`open`; ``None`` when :meth:`open` can answer now.
        """
        since = options.since
        if (
            since is not None
            and since.epoch == self.epoch
            and self.seq < since.seq <= self.seq + AHEAD_LIMIT
        ):
            return since.seq
        return None

    def _fan_out(self, quote: Tickered, item: StreamItem[P]) -> list[Subscription[Any]]:
        payload = item.payload
        self.history.append(item)
        self.snapshot.update(item)
        woken: list[Subscription[Any]] = self.plain.publish(quote, payload)
        if len(self.sequenced):
            more = self.sequenced.publish(quote, item)
            if more:
                woken += more
        return woken

    def open(
        self,
        ticker_filter: TickerFilter,
        mode: Mode,
        options: StreamOptions,
        now: float,
    ) -> Subscriber[P]:
        """
        Subscribe a new client and queue what it gets before its live quotes (the
        ``recovered`` frame, then the replay, or the snapshot), in this same
        synchronous step, so it gets every quote exactly once.
        """
        sequenced = options.sequenced or (self.plain_feed and options.snapshot)
        hub: Hub[Any] = self.sequenced if sequenced else self.plain
        sub: Subscription[Any] = hub.subscribe(ticker_filter, mode=mode)
        subscriber: Subscriber[P] = Subscriber(hub, sub, options, self.queue_bytes)
        event, first = opening(
            options,
            ticker_filter,
            self.history,
            self.snapshot,
            epoch=self.epoch,
            last_seq=self.seq,
            now=now,
            replay_limit=self.replay_limit,
            replay_bytes=self.queue_bytes,
        )
        if event is not None:
            subscriber.control(event, now)
        subscriber.extend(first)
        return subscriber

    def act(
        self,
        subscriber: Subscriber[P],
        text: str,
        *,
        now: float,
        clock: datetime,
        grant: frozenset[str] | None = None,
        charge: Callable[[int], bool] | None = None,
    ) -> Reply[P] | None:
        """
        Answer a client's text message: the reply goes out after everything pending
        (hub included), then the snapshot of newly added tickers (``snapshot=1``),
        and the new filter applies to every later quote.

        Args:
            now: the transport's monotonic clock (the ``max_hz`` throttle).
            clock: the wall clock, UTC (``pong``'s ``server_time``).
            grant: the tickers the client may subscribe to (``None``: any).
            charge: weighs an action past its one frame (see :func:`~quotes_core.answer`).

        Returns:
            The reply (its ``error`` says why a message was refused), or ``None`` when
            ``charge`` refused it: the client is closing for its inbound rate.
        """
        reply: Reply[P] | None = answer(
            text,
            subscriber.filter,
            now=clock,
            grant=grant,
            snapshot=self.snapshot if subscriber.options.snapshot else None,
            charge=charge,
        )
        if reply is None:
            return None
        subscriber.control(reply.event, now)
        new = reply.filter
        if new is not None:
            subscriber.retain(new)
            subscriber.extend(reply.snapshot)
            subscriber.hub.change_filter(subscriber.sub, new)
        return reply

    def close(self, subscriber: Subscriber[P]) -> None:
        """Remove a client's subscription and free its buffers (idempotent)."""
        subscriber.hub.unsubscribe(subscriber.sub)
        subscriber.throttle = None

    def new_epoch(self, epoch: str | None = None) -> str:
        """
        Start a new epoch (continuity lost: an upstream outage, a restart): nothing
        before it can be resumed. Returns the new epoch.

        Raises:
            ValueError: ``epoch`` is not a valid epoch.
        """
        self.epoch = checked_epoch(epoch)
        self.history.clear()
        return self.epoch

    def wants_all(self) -> bool:
        """True while some client wants every ticker."""
        return self.plain.wants_all() or self.sequenced.wants_all()

    def tickers(self) -> set[str]:
        """The tickers some client asks for by name (wildcards not included)."""
        return set(self.plain.tickers()) | set(self.sequenced.tickers())
