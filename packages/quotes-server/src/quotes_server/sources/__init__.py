"""
Where quotes come from: the Redis subscription or the built-in demo feed.

A source pushes raw upstream messages (bytes, unparsed) and its state changes into
a :class:`Sink`; the server parses, validates and fans them out. Both sources
implement :class:`QuoteSource`.
"""

from __future__ import annotations

from collections.abc import Callable, Set
from enum import StrEnum
from typing import Protocol, TypedDict

from quotes_core import TickerFilter

__all__ = ["FollowsInterest", "QuoteSource", "Sink", "SourceState"]


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


class QuoteSource(Protocol):
    """A producer of raw quote messages."""

    name: str
    """Short name for logs and metrics (``redis`` or ``demo``)."""

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

    async def run(self, sink: Sink) -> None:
        """Feed ``sink`` until cancelled; never returns on its own."""
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
