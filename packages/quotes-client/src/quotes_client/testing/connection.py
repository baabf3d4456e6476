"""
One client connection of the scripted server: its side of the stream engine, its
writer, and the controls a test uses on it.

The connection is a transport of :class:`quotes_core.Stream`, as ``quotes-server``'s
are: the engine's :class:`~quotes_core.Subscriber` decides what goes out and in
which order (what the handshake queued first: the ``recovered`` frame, the snapshot
or the replay; replies after what is pending; the ``max_hz`` throttle) and
:func:`quotes_core.render` shapes the frames. The writer works like the server's:
the hub says the subscription went from empty to non-empty, the writer wakes and
sends everything pending, oldest first. While the connection is stalled the writer
sends nothing, so quotes pile up in the hub, FIFO up to the bound, then conflated.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from quotes_core import (
    QUEUE_FULL_REASON,
    TEXT_CODEC,
    CloseCode,
    Element,
    Hub,
    Mode,
    Stream,
    StreamOptions,
    Subscriber,
    Subscription,
    TickerFilter,
    render,
)

__all__ = ["ScriptedConnection"]


class ScriptedConnection:
    """
    An accepted connection of a :class:`~quotes_client.testing.ScriptedServer`.

    Attributes:
        index: position in ``server.connections`` (0 for the first).
        path: the endpoint the client connected to.
        query: the handshake's query parameters.
        headers: the handshake's request headers.
        subscriber: its side of the server's stream engine.
        received: every message the client sent, in order.
        sent: quote and raw frames written so far.
    """

    def __init__(
        self,
        stream: Stream[str],
        notify: Callable[[], None],
        subscriber: Subscriber[str],
        path: str,
        query: dict[str, list[str]],
        headers: Headers,
        index: int,
    ) -> None:
        self.stream = stream
        self.subscriber = subscriber
        self._notify = notify
        self.path = path
        self.query = query
        self.headers = headers
        self.index = index
        self.received: list[str | bytes] = []
        self.sent = 0
        self.stalled = False
        """True while :meth:`stall` holds the writer."""
        self._ws: ServerConnection | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._done = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def subscription(self) -> Subscription[Any]:
        """Its hub subscription (filter, mode, counters)."""
        return self.subscriber.sub

    @property
    def hub(self) -> Hub[Any]:
        """The server hub its subscription belongs to."""
        return self.subscriber.hub

    @property
    def options(self) -> StreamOptions:
        """The stream protocol options it asked for (all off: the contract)."""
        return self.subscriber.options

    @property
    def filter(self) -> TickerFilter:
        """The ticker filter the client asked for."""
        return self.subscription.filter

    @property
    def mode(self) -> Mode:
        """The buffering mode the client asked for."""
        return self.subscription.mode

    @property
    def open(self) -> bool:
        """True until the connection has ended (either side, any way)."""
        return not self._done.is_set()

    @property
    def close_code(self) -> int | None:
        """The close code of the ended connection (1006 when TCP was dropped)."""
        return None if self._ws is None or self.open else self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason of the ended connection."""
        return None if self._ws is None or self.open else self._ws.close_reason

    # -- controls ----------------------------------------------------------------

    async def drain(self, timeout: float = 10.0) -> None:
        """
        Wait until everything pending has been written to the socket.

        Raises:
            RuntimeError: the connection is stalled (it would never drain).
            TimeoutError: still pending after ``timeout`` seconds.
        """
        if self.stalled:
            raise RuntimeError("a stalled connection never drains: resume() it first")
        async with asyncio.timeout(timeout):
            while self.open and (self._has_pending() or not self._idle.is_set()):
                if self.stalled:
                    raise RuntimeError("the connection was stalled while draining")
                self._wake.set()
                await self._idle.wait()
                await asyncio.sleep(0)  # let the writer pick up what arrived meanwhile

    async def close(self, code: int = 1000, reason: str = "", *, flush: bool = True) -> None:
        """
        Close with ``code`` and ``reason`` (1011, 1001, 1008, 1013...) and wait for the end.

        Args:
            flush: write what is pending first (not when stalled); else drop it,
                as ``quotes-server`` does when it closes a connection.
        """
        if not self.open or self._ws is None:
            return
        if flush and not self.stalled:
            with contextlib.suppress(TimeoutError):
                await self.drain()
        self._stop_writer()
        with contextlib.suppress(ConnectionClosed):
            await self._ws.close(code, reason)
        await self._done.wait()

    def abort(self) -> None:
        """Drop the TCP connection without a close frame; the client sees 1006."""
        if self._ws is not None:
            self._ws.transport.abort()

    def stall(self) -> None:
        """Stop writing: quotes stay pending in the hub (FIFO, then conflated)."""
        self.stalled = True

    def resume(self) -> None:
        """Write again, starting with what piled up while stalled."""
        self.stalled = False
        self._wake.set()

    async def send_raw(self, data: str | bytes) -> None:
        """
        Send one frame as is, after what is pending: ``str`` as a text frame,
        ``bytes`` as a binary frame (``"not json"``, ``'{"foo": 1}'``, ``b"\\x00"``).
        """
        if self._ws is None:
            raise RuntimeError("not connected")
        if not self.stalled:
            await self.drain()
        await self._ws.send(data)
        self.sent += 1

    async def wait_closed(self, timeout: float = 10.0) -> None:
        """Wait until the connection has ended."""
        async with asyncio.timeout(timeout):
            await self._done.wait()

    # -- the writer --------------------------------------------------------------

    def _attach(self, ws: ServerConnection) -> None:
        self._ws = ws
        self._writer = asyncio.get_running_loop().create_task(self._write_loop(ws))
        if self._has_pending():
            self._wake.set()

    def _answer(self, text: str) -> None:
        # the client's message, answered by the engine as quotes-server answers it
        # (no token, no inbound rate here); a client whose queue passes its byte
        # budget gets quotes-server's 1013
        self.stream.act(self.subscriber, text, now=self._loop.time(), clock=datetime.now(UTC))
        if self.subscriber.over_budget:
            if self._closing is None:
                close = self.close(CloseCode.TRY_AGAIN_LATER, QUEUE_FULL_REASON, flush=False)
                self._closing = self._loop.create_task(close)
            return
        self._arm()
        self._wake.set()

    def _has_pending(self) -> bool:
        return self.subscriber.pending

    def _take(self) -> list[Element[str]]:
        out = self.subscriber.take(self._loop.time())
        self._arm()
        return out

    def _frames(self, elements: list[Element[str]]) -> list[str]:
        return render(elements, self.subscriber.options, TEXT_CODEC)[0]

    def _arm(self) -> None:
        # max_hz: wake the writer when the earliest held-back quote is due
        due = self.subscriber.next_due()
        timer = self._timer
        if timer is not None and (due is None or timer.when() > due):
            timer.cancel()
            self._timer = timer = None
        if due is not None and timer is None:
            self._timer = self._loop.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.subscriber.due = True
        self._wake.set()

    async def _write_loop(self, ws: ServerConnection) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                self._idle.clear()
                try:
                    while self._has_pending() and not self.stalled:
                        for frame in self._frames(self._take()):
                            await ws.send(frame)
                            self.sent += 1
                finally:
                    self._idle.set()
                    self._notify()
        except ConnectionClosed:
            return

    def _stop_writer(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _ended(self) -> None:
        self._stop_writer()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self.stream.close(self.subscriber)
        self._done.set()
        self._idle.set()

    def __repr__(self) -> str:
        state = "open" if self.open else f"closed {self.close_code}"
        return f"<ScriptedConnection #{self.index} {self.path} tickers={self.filter} {state}>"
