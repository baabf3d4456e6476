"""
Connection-state events, as frozen dataclasses, and a bounded stream of them.

A client emits, in order: :class:`Connecting`, then :class:`Connected` or
:class:`ConnectFailed`; an open connection ends with :class:`Disconnected`;
before each new attempt comes :class:`BackingOff` with the delay. The stream
ends with :class:`Failed` (fatal error, ``max_retries``) or :class:`Closed`
(the caller stopped the client).

With the opt-in stream protocol, protocol events come in between, without
changing the client's state: :class:`Recovered` (the server's answer to a
resume), :class:`FilterChanged` (the filter the server confirmed),
:class:`ServerError` (a message the server refused; the stream goes on) and
:class:`Gap` (quotes may have been missed).

Receive them with the ``on_event`` callback of ``QuotesClient`` (called in the
event loop, must not block) or by iterating ``client.events()``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from quotes_client.errors import StreamError
from quotes_core import TickerFilter

__all__ = [
    "BackingOff",
    "Closed",
    "ConnectFailed",
    "Connected",
    "Connecting",
    "ConnectionEvent",
    "Disconnected",
    "EventStream",
    "Failed",
    "FilterChanged",
    "Gap",
    "ProtocolEvent",
    "Recovered",
    "ServerError",
]


@dataclass(frozen=True, slots=True)
class Connecting:
    """An attempt to open a connection starts (``attempt`` counts from 1)."""

    url: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Connected:
    """The handshake succeeded; quotes flow."""

    url: str
    attempt: int


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """
    An attempt failed before the connection opened.

    ``status`` is the HTTP status when the server answered with one (503 ...).
    """

    reason: str
    status: int | None
    fatal: bool


@dataclass(frozen=True, slots=True)
class Disconnected:
    """
    An open connection ended.

    Attributes:
        code: the WebSocket close code (1006 when the connection just dropped;
            ``None`` when the staleness watchdog gave up on it).
        reason: human-readable description, with the server's close reason.
        by_server: the server or the network ended it, not this client.
        duration: how long the connection stayed open, in seconds.
        fatal: the client will not reconnect.
    """

    code: int | None
    reason: str
    by_server: bool
    duration: float
    fatal: bool


@dataclass(frozen=True, slots=True)
class BackingOff:
    """
    The client waits ``delay`` seconds before attempt number ``attempt``.

    ``retry_after`` is the server's ``Retry-After``, when it sent one.
    """

    delay: float
    attempt: int
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """The client stopped for good; iterating it raises ``error``."""

    error: StreamError


@dataclass(frozen=True, slots=True)
class Closed:
    """The caller closed the client."""


@dataclass(frozen=True, slots=True)
class Recovered:
    """
    The server's answer to a resume (``since=``), before any quote of the connection.

    ``recovered`` True: the missed quotes follow, then the live stream: nothing
    was lost. False: the server could not replay them (it restarted, or its
    history window moved past the client's position); the client asked for a
    snapshot on that connection, so the latest quote of every ticker follows.
    ``epoch`` and ``seq`` are the server's, as it sent them.
    """

    recovered: bool
    epoch: str | None
    seq: int | None


@dataclass(frozen=True, slots=True)
class FilterChanged:
    """The filter the stream now follows, as the server confirmed it (``subscribed``)."""

    filter: TickerFilter


@dataclass(frozen=True, slots=True)
class ServerError:
    """
    The server refused a message (``{"event":"error"}``); the connection stays open.

    ``code`` is machine-readable (``invalid_ticker``, ``too_many_tickers``,
    ``forbidden`` ...), ``message`` says it for humans.
    """

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Gap:
    """
    The client may have missed quotes (see :mod:`quotes_client.resume`).

    Attributes:
        reason: ``"seq"`` (seq numbers jumped over on a stream of every ticker),
            ``"epoch"`` (the server's epoch changed: it restarted, or its upstream
            had an outage) or ``"unrecovered"`` (the server could not replay).
        missed: seq numbers jumped over, or ``None`` when unknown.
        epoch: the server's epoch now.
        seq: the seq now.
    """

    reason: str
    missed: int | None
    epoch: str | None
    seq: int | None


ProtocolEvent = Recovered | FilterChanged | ServerError | Gap
"""An event of the opt-in stream protocol (the client's state does not change)."""

ConnectionEvent = (
    Connecting
    | Connected
    | ConnectFailed
    | Disconnected
    | BackingOff
    | Failed
    | Closed
    | Recovered
    | FilterChanged
    | ServerError
    | Gap
)
"""Any event a client emits."""


class EventStream:
    """
    An async iterator of connection events, bounded to the newest ``maxlen``.

    Made by ``QuotesClient.events()``; it ends after the client's last event
    (:class:`Failed` or :class:`Closed`). Events are cheap and rare, but a
    listener that never reads must not grow memory: past ``maxlen`` the oldest
    are dropped and counted in :attr:`dropped`.
    """

    def __init__(self, unsubscribe: Callable[[EventStream], None], maxlen: int = 256) -> None:
        self._items: deque[ConnectionEvent] = deque(maxlen=maxlen)
        self._ready = asyncio.Event()
        self._ended = False
        self._unsubscribe = unsubscribe
        self.dropped = 0
        """Events discarded because the listener fell ``maxlen`` behind."""

    def push(self, event: ConnectionEvent) -> None:
        """Deliver one event (the client calls this)."""
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
        self._items.append(event)
        if isinstance(event, Failed | Closed):
            self._ended = True
        self._ready.set()

    def end(self) -> None:
        """End the stream after what is already queued."""
        self._ended = True
        self._ready.set()

    def close(self) -> None:
        """Stop listening; the iterator ends now."""
        self._unsubscribe(self)
        self._items.clear()
        self.end()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ConnectionEvent:
        while not self._items:
            if self._ended:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()
