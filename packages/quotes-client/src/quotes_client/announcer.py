"""
Where a client's connection events go: its state, every listener, the log.

The connection loop announces each :mod:`~quotes_client.events` event once;
:class:`Announcer` folds it into the client's :class:`~quotes_client.stats.ClientState`,
pushes it to every :class:`~quotes_client.events.EventStream`, calls the
``on_event`` callback (whose exceptions are logged, never raised into the loop),
logs it, and wakes whoever waits for the state to change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from quotes_client.events import (
    BackingOff,
    Closed,
    Connected,
    ConnectFailed,
    Connecting,
    ConnectionEvent,
    Disconnected,
    EventStream,
    Failed,
    FilterChanged,
    Gap,
    Recovered,
    ServerError,
)
from quotes_client.stats import ClientState

__all__ = ["Announcer"]

logger = logging.getLogger("quotes_client")

# protocol events (Recovered, FilterChanged, ServerError, Gap) leave the state as it is
_STATES: dict[type, ClientState] = {
    Connecting: ClientState.CONNECTING,
    Connected: ClientState.CONNECTED,
    ConnectFailed: ClientState.DISCONNECTED,
    Disconnected: ClientState.DISCONNECTED,
    BackingOff: ClientState.BACKING_OFF,
    Failed: ClientState.FAILED,
    Closed: ClientState.CLOSED,
}


class Announcer:
    """A client's state and the listeners of its events."""

    def __init__(self, on_event: Callable[[ConnectionEvent], object] | None = None) -> None:
        self.state = ClientState.IDLE
        self._on_event = on_event
        self._streams: list[EventStream] = []
        self._changed = asyncio.Event()

    def emit(self, event: ConnectionEvent) -> None:
        """Announce ``event`` to the state, the listeners and the log."""
        self.state = _STATES.get(type(event), self.state)
        _log_event(event)
        for stream in self._streams:
            stream.push(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                logger.exception("quotes-client: on_event callback failed")
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def listen(self, maxlen: int) -> EventStream:
        """A new listener, from now on; already ended when the client has."""
        stream = EventStream(self._forget, maxlen)
        if self.state in (ClientState.CLOSED, ClientState.FAILED):
            stream.end()
        else:
            self._streams.append(stream)
        return stream

    def end(self) -> None:
        """The last event was announced: end every listener."""
        for stream in self._streams:
            stream.end()
        self._streams.clear()

    async def changed(self) -> None:
        """Wait for the next event."""
        await self._changed.wait()

    def _forget(self, stream: EventStream) -> None:
        if stream in self._streams:
            self._streams.remove(stream)


def _log_event(event: ConnectionEvent) -> None:
    match event:
        case Connecting(url=url, attempt=attempt):
            logger.debug("quotes-client: connecting to %s (attempt %d)", url, attempt)
        case Connected(url=url):
            logger.info("quotes-client: connected to %s", url)
        case ConnectFailed(reason=reason):
            logger.warning("quotes-client: connection failed: %s", reason)
        case Disconnected(reason=reason):
            logger.warning("quotes-client: disconnected: %s", reason)
        case BackingOff(delay=delay):
            logger.info("quotes-client: reconnecting in %.1f s", delay)
        case Failed(error=error):
            logger.info("quotes-client: stopped: %s", error)
        case Closed():
            logger.debug("quotes-client: closed")
        case Recovered(recovered=True, seq=seq):
            logger.info("quotes-client: resumed after seq %s, nothing missed", seq)
        case Recovered(recovered=False):
            logger.warning("quotes-client: the server could not replay: snapshot instead")
        case FilterChanged(filter=new):
            logger.info("quotes-client: tickers now %s", new)
        case ServerError(code=code, message=message):
            logger.warning("quotes-client: server error %s: %s", code, message)
        case Gap(reason=reason, missed=missed):
            shown = "" if missed is None else f" ({missed} missed)"
            logger.warning("quotes-client: gap in the stream: %s%s", reason, shown)
