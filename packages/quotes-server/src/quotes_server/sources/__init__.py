"""
Where quotes come from: the Redis subscription or the built-in demo feed.

A source pushes raw upstream messages (bytes, unparsed) and its state changes into
a :class:`Sink`; the server parses, validates and fans them out. Every source
implements :class:`QuoteSource`. A source whose quotes carry positions assigned by
the deployment (``--history redis``: :mod:`quotes_server.sources.sequenced`) hands
them over with :meth:`Sink.on_positioned` instead, and brings the stream to the
deployment's epoch and window with :meth:`Sink.restore`.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from enum import StrEnum
from typing import NamedTuple, Protocol, TypedDict

from quotes_core import TickerFilter

__all__ = [
    "FollowsInterest",
    "QuoteSource",
    "RuntimeSink",
    "Sequencing",
    "Sink",
    "SourceState",
    "StoredQuote",
]


class SourceState(StrEnum):
    """
    Upstream state, as the Redis state machine defines it::

        CONNECTING --SUBSCRIBE confirmed--> UP --failure--> RECONNECTING --grace over--> DOWN
             |                               ^                   |                        |
             +--------first failure----------|-------------------+------------------------+
                                             +-------- SUBSCRIBE confirmed again ---------+
    """

    CONNECTING = "connecting"
    """Before the first successful SUBSCRIBE: handshakes get 503."""
    UP = "up"
    """Subscribed and healthy."""
    RECONNECTING = "reconnecting"
    """Lost, within the grace period: clients stay connected, handshakes accepted."""
    DOWN = "down"
    """Lost past the grace period: clients closed with 1011, handshakes get 503."""

    @property
    def accepting(self) -> bool:
        """True when new WebSocket handshakes are accepted."""
        return self in (SourceState.UP, SourceState.RECONNECTING)


class StoredQuote(NamedTuple):
    """A quote of the deployment's history, as read back from Redis."""

    seq: int
    """Its position."""
    raw: bytes
    """The upstream message (validated when it was appended)."""
    time: float
    """When it was appended, on this process's monotonic clock."""


class Sink(Protocol):
    """What a source feeds: raw messages and state changes."""

    def on_message(self, raw: bytes) -> None:
        """One raw upstream message (not yet validated)."""

    def on_state(self, state: SourceState) -> None:
        """The source moved to ``state``."""

    def room(self) -> int:
        """
        Messages the sink takes before its next write round. A source that reads in
        bulk hands over at most this many, then waits a loop turn (the round runs
        first), so a burst never piles more onto a client between two rounds.
        """
        ...

    def close_affected(self, affected: Callable[[TickerFilter], bool]) -> None:
        """Part of the upstream is down for good: close the clients ``affected`` says need it."""


class RuntimeSink(Sink, Protocol):
    """The server's sink (the runtime): also takes positions assigned by the deployment."""

    def on_live(self, raw: bytes) -> bool:
        """One raw upstream message as it comes, before the deployment positions it:
        for the clients that need no position (counted and validated here); True
        when it is a valid quote (the sequencer appends only those)."""
        ...

    def on_positioned(self, raw: bytes, seq: int, epoch: str) -> None:
        """One upstream message at the deployment's position ``seq`` of ``epoch``."""

    def begin_epoch(self, epoch: str, seq: int) -> None:
        """The deployment started ``epoch`` after position ``seq``."""

    def restore(self, epoch: str | None, seq: int, window: list[StoredQuote]) -> None:
        """Take the deployment's ``epoch`` (``None``: none is known: a new local one),
        its newest position and its resume window."""

    def position(self) -> tuple[str, int]:
        """The stream's epoch and newest position here."""
        ...


class QuoteSource(Protocol):
    """A producer of raw quote messages."""

    name: str
    """Short name for logs and metrics (``redis`` or ``demo``)."""

    assigns_positions: bool
    """True when the deployment assigns positions (the quotes come through
    :meth:`Sink.on_positioned`): the runtime never starts an epoch itself."""

    @property
    def state(self) -> SourceState:
        """The current state."""
        ...

    @property
    def reconnects(self) -> int:
        """Upstream reconnections so far (``quotes_upstream_reconnects_total``)."""
        ...

    @property
    def interest(self) -> FollowsInterest | None:
        """The source itself when it subscribes only to what clients want, else ``None``."""
        ...

    @property
    def sequencing(self) -> Sequencing | None:
        """The deployment's sequencing as this instance takes part in it (``--history
        redis``), else ``None``."""
        ...

    async def run(self, sink: RuntimeSink) -> None:
        """Feed ``sink`` until cancelled; never returns on its own."""
        ...


class Sequencing(Protocol):
    """This instance's part in the deployment's positions (``--history redis``)."""

    @property
    def role(self) -> str:
        """``sequencing`` while this instance holds the lease, else ``following``."""
        ...

    @property
    def takeovers(self) -> int:
        """Leases this instance took (the epoch continued or a new one started)."""
        ...

    @property
    def new_epochs(self) -> int:
        """Takeovers here that could not prove continuity and started a new epoch."""
        ...


class ShardHealth(TypedDict):
    """Per-shard health of a sharded source (``/ready``'s ``shards``)."""

    shards: int
    """Shard channels in all."""
    healthy: int
    """Shards whose owner is known and whose link is up."""
    subscribed: int
    """Shards whose channel is currently subscribed (the ones some client needs)."""
    lost: list[int]
    """Shards lost and still within the grace period."""
    down: list[int]
    """Shards down past the grace period, or never up: their clients get 1011 / 503."""


class FollowsInterest(Protocol):
    """
    A source that subscribes upstream only to what clients want (the sharded one).

    The runtime reports the hub's interest after every change, asks it whether a
    handshake's filter can be served, and lets new connections wait until their
    part of the upstream is subscribed.
    """

    def set_interest(self, wants_all: bool, tickers: Set[str]) -> None:
        """Clients now want every ticker (``wants_all``) or those ``tickers``."""

    def accepts(self, filter: TickerFilter) -> bool:
        """True when a client with ``filter`` can be served now."""
        ...

    async def wait_subscribed(self, filter: TickerFilter, limit: float) -> bool:
        """Wait until the upstream part ``filter`` needs is subscribed; False at the deadline."""
        ...

    def shard_health(self) -> ShardHealth:
        """How each part of the upstream is doing, for ``/ready`` and ``/metrics``."""
        ...
