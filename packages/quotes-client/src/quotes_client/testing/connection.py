"""
One client connection of the scripted server: its hub subscription, its writer,
and the controls a test uses on it.

The writer works like ``quotes-server``'s: the hub says the subscription went from
empty to non-empty, the writer wakes and sends everything pending, oldest first,
one text frame per quote. While the connection is stalled the writer sends
nothing, so quotes pile up in the hub, FIFO up to the bound, then conflated.

A connection that opted into the stream protocol (``seq=1``, ``since=``,
``snapshot=1``, ``batch=1``) subscribes to the server's sequenced hub instead: its
quotes are :class:`~quotes_core.StreamItem` s, and what the handshake queued first
(the ``recovered`` control frame, the snapshot or the replay) goes out before them.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from quotes_core import (
    Hub,
    Mode,
    Reply,
    StreamItem,
    StreamOptions,
    Subscription,
    TickerFilter,
    answer,
    with_position,
)

if TYPE_CHECKING:
    from quotes_client.testing.server import ScriptedServer

__all__ = ["ScriptedConnection"]

Element = str | StreamItem[str]
"""What a connection writes: a quote's canonical JSON (plain hub), a sequenced quote
(stream hub) or, queued by the handshake, a control frame's JSON text."""


class ScriptedConnection:
    """
    An accepted connection of a :class:`~quotes_client.testing.ScriptedServer`.

    Attributes:
        index: position in ``server.connections`` (0 for the first).
        path: the endpoint the client connected to.
        query: the handshake's query parameters.
        headers: the handshake's request headers.
        subscription: its hub subscription (filter, mode, counters).
        options: the stream protocol options it asked for (all off: the contract).
        received: every message the client sent, in order.
        sent: quote and raw frames written so far.
    """

    def __init__(
        self,
        server: ScriptedServer,
        hub: Hub[Any],
        subscription: Subscription[Any],
        path: str,
        query: dict[str, list[str]],
        headers: Headers,
        index: int,
        options: StreamOptions | None = None,
    ) -> None:
        self.server = server
        self.hub = hub
        self.subscription = subscription
        self.options = options if options is not None else StreamOptions()
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
        self._out: list[Element] = []

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
        # the client's message, answered as quotes-server answers it (no token, no
        # inbound rate here): the reply after everything pending, hub included, then
        # the snapshot of added tickers, then the new filter
        reply: Reply[str] | None = answer(
            text,
            self.subscription.filter,
            now=datetime.now(UTC),
            snapshot=self.server.snapshot if self.options.snapshot else None,
        )
        if reply is None:  # only a charge refuses; none is given
            return
        if self.subscription.pending:
            self._out.extend(self.hub.drain(self.subscription))
        self._out.append(reply.event)
        if reply.filter is not None:
            self._out.extend(reply.snapshot)
            self.hub.change_filter(self.subscription, reply.filter)
        self._wake.set()

    def _queue(self, elements: list[Element]) -> None:
        # the handshake's control frame, snapshot or replay: before any live quote
        self._out.extend(elements)

    def _has_pending(self) -> bool:
        return bool(self._out) or self.subscription.pending > 0

    def _take(self) -> list[Element]:
        out, self._out = self._out, []
        if self.subscription.pending:
            out.extend(self.hub.drain(self.subscription))
        return out

    def _frames(self, elements: list[Element]) -> list[str]:
        # The one place where a connection's outgoing frames get their shape: the
        # contract's default is one canonical quote per text frame, unchanged. With
        # the stream protocol, quotes are StreamItems: seq=1 appends seq/epoch,
        # batch=1 joins the quotes of one flush into a JSON array; control frames
        # (str) are never inside an array.
        if self.options.plain:
            return [e for e in elements if isinstance(e, str)]
        seq, batch = self.options.seq, self.options.batch
        frames: list[str] = []
        group: list[str] = []
        for e in elements:
            if isinstance(e, str):
                if group:
                    frames.append("[" + ",".join(group) + "]")
                    group = []
                frames.append(e)
                continue
            text = with_position(e.payload, e.seq, e.epoch) if seq else e.payload
            if batch:
                group.append(text)
            else:
                frames.append(text)
        if group:
            frames.append("[" + ",".join(group) + "]")
        return frames

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
                    self.server._notify()
        except ConnectionClosed:
            return

    def _stop_writer(self) -> None:
        if self._writer is not None:
            self._writer.cancel()

    async def _ended(self) -> None:
        self._stop_writer()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self.hub.unsubscribe(self.subscription)
        self._done.set()
        self._idle.set()

    def __repr__(self) -> str:
        state = "open" if self.open else f"closed {self.close_code}"
        return f"<ScriptedConnection #{self.index} {self.path} tickers={self.filter} {state}>"
