"""
What the runtime takes from a source of the deployment's positions (``--history redis``).

The source (:mod:`quotes_server.sources.sequenced`) feeds two flows:

- every upstream message as it comes (:meth:`DeploymentFeed.on_live`): the plain
  clients get it at once, as with a stream of one process, so they never wait for
  the sequencer and never go silent while a standby takes over;
- the same quotes with the deployment's positions (:meth:`DeploymentFeed.on_positioned`):
  the resume window, the snapshot and every client that asked for positions or got
  an opening (:class:`quotes_core.Stream` with ``plain_feed``).

It also brings the stream to the deployment's epoch and window
(:meth:`DeploymentFeed.restore`, :meth:`DeploymentFeed.begin_epoch`), lets a resume wait
briefly for a position another instance gave first (:meth:`DeploymentFeed.wait_position`)
and reports where positions belong (:meth:`DeploymentFeed.history_status`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from quotes_core import InvalidQuote, Quote, Stream, StreamItem, StreamOptions, parse_quote
from quotes_server.frames import text_frame
from quotes_server.metrics import Metrics
from quotes_server.rounds import WriteRounds
from quotes_server.settings import Settings
from quotes_server.sources import QuoteSource, StoredQuote

__all__ = ["RECENT", "DeploymentFeed"]

RECENT = 4096
"""Upstream messages whose ticker and frame are kept for their position (their
position comes milliseconds later; older ones are parsed again if it ever does)."""


class _Ticker:
    """A quote as publishing it at its position needs it: its ticker."""

    __slots__ = ("ticker",)

    def __init__(self, ticker: str) -> None:
        self.ticker = ticker


log = logging.getLogger("quotes_server")


class DeploymentFeed:
    """The runtime's side of the deployment's positions (a base of ``Runtime``)."""

    settings: Settings
    source: QuoteSource
    metrics: Metrics
    stream: Stream[bytes]
    rounds: WriteRounds
    _advanced: asyncio.Event
    _position_waiters: int
    _recent: dict[bytes, tuple[str, bytes]]
    """The ticker and frame of each upstream message :meth:`on_live` parsed, until its
    position comes: plain tuples of a string and bytes, which the garbage collector
    stops tracking. Keeping the parsed quote (a model and its dict) for the
    milliseconds the position takes made thousands of objects a second old enough
    for the oldest generation, and a full collection every few seconds."""

    def _invalid(self, raw: bytes, exc: InvalidQuote) -> None:
        raise NotImplementedError

    def new_epoch(self) -> None:
        raise NotImplementedError

    def on_live(self, raw: bytes) -> bool:
        """
        One upstream message as it comes: validated, counted, and sent to plain
        clients; True when it is a valid quote (the sequencer appends only those).
        Its ticker and frame are kept until it comes back with its position.
        """
        self.metrics.hot.received += 1
        rounds = self.rounds
        rounds.arrived()
        try:
            quote, payload = parse_quote(raw)
        except InvalidQuote as exc:
            self._invalid(raw, exc)
            return False
        frame = text_frame(payload)
        recent = self._recent
        recent[raw] = (quote.ticker, frame)
        if len(recent) > RECENT:
            del recent[next(iter(recent))]  # the oldest: its position never came
        rounds.newest = quote.timestamp
        rounds.published(self.stream.publish_plain(quote, frame))
        return True

    def on_positioned(self, raw: bytes, seq: int, epoch: str) -> None:
        """
        One quote at the deployment's position (validated by the sequencer). It came
        through :meth:`on_live` already, which counted it against the write round's
        budget and the held round's: it is not counted twice (the plain clients'
        rounds would be cut short).
        """
        rounds = self.rounds
        known = self._recent.pop(raw, None)  # parsed by on_live a moment ago
        quote: Quote | _Ticker
        if known is not None:
            quote, frame = _Ticker(known[0]), known[1]
        else:
            try:
                quote, payload = parse_quote(raw)
            except InvalidQuote as exc:  # a sequencer of another version, or not ours
                self._invalid(raw, exc)
                return
            frame = text_frame(payload)
        now = time.monotonic()
        rounds.published(self.stream.publish_at(quote, frame, seq, epoch, now), arrival=False)
        if self._position_waiters:
            self._advanced.set()

    def begin_epoch(self, epoch: str, seq: int) -> None:
        """The deployment started ``epoch`` after ``seq``: nothing before can be resumed."""
        if epoch != self.stream.epoch:
            old = self.stream.epoch
            self.stream.restore(epoch, seq, ())
            log.info("stream epoch %s -> %s at seq %d (the deployment's)", old, epoch, seq)
            self._advanced.set()

    def restore(self, epoch: str | None, seq: int, window: list[StoredQuote]) -> None:
        """Take the deployment's epoch and resume window (see :class:`Sink`)."""
        stream = self.stream
        if epoch is None:
            self.new_epoch()
            return
        items = []
        for stored in window:
            try:
                quote, payload = parse_quote(stored.raw)
            except InvalidQuote as exc:
                self._invalid(stored.raw, exc)
                continue
            frame = text_frame(payload)
            items.append(StreamItem(stored.seq, epoch, quote.ticker, frame, stored.time))
        old = stream.epoch
        stream.restore(epoch, seq, items)
        log.info(
            "stream epoch %s -> %s at seq %d: %d quote(s) of the deployment's window loaded",
            old,
            epoch,
            seq,
            len(items),
        )
        self._advanced.set()

    def position(self) -> tuple[str, int]:
        return self.stream.epoch, self.stream.seq

    def history_status(self) -> dict[str, object]:
        """Where positions belong, the epoch, the newest position, the window's size,
        and with ``--history redis`` this instance's role (``/ready``, ``/metrics``)."""
        stream = self.stream
        status: dict[str, object] = {
            "backend": self.settings.history,
            "epoch": stream.epoch,
            "seq": stream.seq,
            "window": len(stream.history),
        }
        sequencing = self.source.sequencing
        if sequencing is not None:
            status["role"] = sequencing.role
            status["takeovers"] = sequencing.takeovers
            status["new_epochs"] = sequencing.new_epochs
        return status

    async def wait_position(self, options: StreamOptions) -> None:
        """
        Wait (at most a second) until this instance has published the position a
        resume asks for, when another instance of the deployment gave it to the client
        a moment ago (see :meth:`quotes_core.Stream.position_ahead`).
        """
        stream = self.stream
        if stream.position_ahead(options) is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(1.0, self.settings.redis_timeout)
        self._position_waiters += 1
        try:
            while stream.position_ahead(options) is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                self._advanced.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._advanced.wait(), remaining)
        finally:
            self._position_waiters -= 1
