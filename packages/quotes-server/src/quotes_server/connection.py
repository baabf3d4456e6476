"""
One WebSocket client: its outbox, its writer task and its lifecycle.

The hub never waits for a socket. When it reports that a subscription went from
empty to non-empty, the runtime's flush (a loop callback of its own, once per
event-loop turn, never inside the Redis reader) calls :meth:`Connection.on_ready`.
If the socket can take data, the pending pre-built frames are written right there
with one non-blocking write; otherwise the connection's writer task is woken, waits
until the socket is writable again and writes then. A slow client only ever delays
its own writer; its backlog stays in the hub, bounded by the core's
FIFO-then-conflation buffer.

The connection knows nothing of the stream protocol: it writes what its
:class:`Outbox` hands it (for a plain client, :class:`PlainOutbox`: the hub's
shared pre-built frames, as they are) and passes client text messages to the
``on_text`` callback it was given. Whoever owns the connection (the runtime)
decides what those mean; this module imports nothing of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from quotes_core import INTERNAL_ERROR_REASON, CloseCode, Hub, Subscriber, Subscription
from quotes_server.frames import FramesExtension, frame_text
from quotes_server.limits import InboundExtension
from quotes_server.metrics import HotCounters
from quotes_server.session import Session

__all__ = ["CloseCode", "Connection", "Outbox", "PlainOutbox"]

log = logging.getLogger("quotes_server.connection")

Send = Any  # the ASGI send callable
Receive = Any  # the ASGI receive callable


class Outbox(Protocol):
    """What a connection writes: complete pre-built frames, ready now."""

    @property
    def pending(self) -> bool:
        """True when :meth:`take` has frames to hand out now."""
        ...

    def take(self) -> tuple[list[bytes], int]:
        """The frames to write now (possibly none) and how many quotes they carry."""
        ...


class PlainOutbox:
    """A plain client's outbox: the hub's shared frames of its subscription, as they are."""

    __slots__ = ("_drain", "_sub")

    def __init__(self, hub: Hub[bytes], sub: Subscription[bytes]) -> None:
        self._drain = hub.drain
        self._sub = sub

    @property
    def pending(self) -> bool:
        return self._sub.pending > 0

    def take(self) -> tuple[list[bytes], int]:
        batch = self._drain(self._sub)
        return batch, len(batch)


TextHandler = Callable[["Connection", str], None]
"""Called with each text message the client sends."""


class Connection:
    """
    A connected client. Created before ``accept``; :meth:`serve` runs until the
    connection ends and cleans up on every path.

    Args:
        subscriber: the client's side of the stream engine (its subscription's
            filter, counters and buffer are read here; the rest is its owner's).
        outbox: where the frames to write come from.
        hot: the hot-path counters (frames forwarded, socket writes, conflated).
        on_text: called with every text message of the client.
    """

    def __init__(
        self,
        subscriber: Subscriber[bytes],
        outbox: Outbox,
        send: Send,
        receive: Receive,
        *,
        hot: HotCounters,
        on_text: TextHandler | None = None,
        client_id: str,
        remote: str,
        host: str = "?",
        frames: FramesExtension | None = None,
        inbound: InboundExtension | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.sub = subscriber.sub
        self.outbox = outbox
        """Replaceable: the owner may swap it (e.g. on a client's first action)."""
        self.session: Session | None = None
        """The stream-protocol outbox, once the client has one (opted in or acted)."""
        self.hot = hot
        self._on_text = on_text
        self.client_id = client_id
        self.remote = remote
        self.host = host
        """The client's IP address, as counted by the per-address cap."""
        self.ticker_grant: frozenset[str] | None = None
        """The tickers this client's token may subscribe to (``None``: any)."""
        self._send = send
        self._receive = receive
        self.raw_frames = frames is not None
        """True when the server offers the ``quotes.frames`` extension on this socket."""
        self._charge = inbound["charge"] if inbound is not None else None
        self._write_raw = frames["write"] if frames is not None else None
        self._writable = frames["writable"] if frames is not None else None
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self.sent = 0
        """Frames handed to the socket."""
        self.close_code: int | None = None
        """The code we closed with, if we closed first."""
        self.close_reason = ""
        self._busy = False
        self._seen_sent = 0
        self._stall_start: float | None = None
        self._conflated_seen = 0

    kind = "ws"
    """Counted in the WebSocket metrics (:class:`~quotes_server.clients.Client`)."""

    @property
    def detail(self) -> str:
        return f"raw_frames={self.raw_frames}"

    def on_ready(self) -> None:
        """
        The hub has new pending frames: write them now if the socket can take them
        (one non-blocking write), else let the writer task wait for writability.
        """
        write = self._write_raw
        writable = self._writable
        if (
            write is None
            or writable is None
            or self._busy
            or self.close_code is not None
            or not writable.is_set()
        ):
            self._wake.set()
            return
        batch, quotes = self.outbox.take()
        if batch and write(batch[0] if len(batch) == 1 else b"".join(batch)):
            self.sent += len(batch)
            hot = self.hot
            hot.forwarded += quotes
            hot.writes += 1
        if self.sub.conflated != self._conflated_seen:
            self._account_conflated()
        if self.session is not None and self.outbox.pending:
            self._wake.set()  # a chunk of a long queue went out: the writer sends the rest

    def charge(self, weight: int) -> bool:
        """
        Weigh the client's current message ``weight`` frames more against its inbound
        rate; False when that passes the rate (the connection is closing with 1008).
        """
        return self._charge is None or self._charge(weight)

    def close(self, code: int, reason: str) -> None:
        """Close the connection from the server side (idempotent)."""
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = reason
        if self._writer is not None:
            self._writer.cancel()
        self._closing = asyncio.get_running_loop().create_task(self._send_close(code, reason))

    async def _send_close(self, code: int, reason: str) -> None:
        with contextlib.suppress(OSError, RuntimeError):  # already gone
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def stalled(self, now: float, timeout: float) -> bool:
        """
        True when the connection has had quotes to write and has sent nothing for
        ``timeout`` seconds. Called by the runtime's watchdog.
        """
        pending = self._busy or self.outbox.pending
        if self.sent != self._seen_sent or not pending:
            self._seen_sent = self.sent
            self._stall_start = None
            return False
        if self._stall_start is None:
            self._stall_start = now
        return now - self._stall_start >= timeout

    async def serve(self) -> int | None:
        """
        Run the writer and read client frames until the connection ends.

        Returns:
            The close code: ours if we closed first, else the peer's.
        """
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        if self.outbox.pending:  # e.g. a snapshot or replay prepared at subscribe time
            self._wake.set()
        peer_code: int | None = None
        try:
            while True:
                message = await self._receive()
                kind = message["type"]
                if kind == "websocket.disconnect":
                    peer_code = message.get("code")
                    break
                if kind == "websocket.receive":
                    self._client_message(message)
        finally:
            writer = self._writer
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            if self._closing is not None:
                await asyncio.gather(self._closing, return_exceptions=True)
            self._account_conflated()
            # A finished task keeps its exception, whose traceback keeps the frame that
            # refers to this connection: drop the tasks, so no reference cycle is left
            # and the connection is freed when it ends, not at the next full GC.
            self._writer = self._closing = None
        return self.close_code if self.close_code is not None else peer_code

    def _client_message(self, message: dict[str, Any]) -> None:
        # The contract needs nothing from clients; their messages are read (so pings
        # and closes keep working), binary ones are ignored and text ones go to the
        # owner (the stream protocol's actions). Oversized frames never get here:
        # uvicorn closes those with 1009.
        # Once we are closing, what the client still sends is not acted on: its
        # actions would be answered after our close frame (and a client over its
        # budget counted again for each one).
        text = message.get("text")
        if text is not None and self._on_text is not None and self.close_code is None:
            self._on_text(self, text)

    def _account_conflated(self) -> None:
        delta = self.sub.conflated - self._conflated_seen
        if delta:
            self._conflated_seen = self.sub.conflated
            self.hot.conflated += delta

    async def _write_loop(self) -> None:
        hot = self.hot
        sub = self.sub
        send = self._send
        wake = self._wake
        write = self._write_raw
        writable = self._writable
        try:
            while True:
                await wake.wait()
                wake.clear()
                while self.outbox.pending:
                    self._busy = True
                    if write is not None and writable is not None:
                        if not writable.is_set():
                            await writable.wait()  # backpressure: the socket is full
                        batch, quotes = self.outbox.take()
                        if not batch:
                            continue
                        if not write(b"".join(batch)):
                            return  # closing; the reader sees the disconnect
                        self.sent += len(batch)
                        hot.writes += 1
                    else:
                        batch, quotes = self.outbox.take()
                        for frame in batch:
                            await send({"type": "websocket.send", "text": frame_text(frame)})
                            self.sent += 1
                        hot.writes += len(batch)
                    hot.forwarded += quotes
                    if sub.conflated != self._conflated_seen:
                        self._account_conflated()
                self._busy = False
        except OSError:
            return  # the client went away; the reader sees the disconnect
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("client %s: send failed", self.client_id)
            self.close(CloseCode.INTERNAL_ERROR, INTERNAL_ERROR_REASON)
