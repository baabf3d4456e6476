"""
The outbox of a client that opted into the stream protocol: the engine's
:class:`~quotes_core.Subscriber` rendered into pre-built frames, and its clock.

A client that uses none of the protocol's options or actions writes the hub's
shared frames straight through :class:`~quotes_server.connection.PlainOutbox`. One
that asked for ``snapshot``, ``seq``/``since``, ``max_hz`` or ``batch``, or sent an
action, gets a :class:`Session` as its outbox. Every rule (what is queued and in
which order, the ``max_hz`` throttle, the byte budget, the 64 KiB chunks of a long
queue, the shape of each frame) is the engine's; the session only reads the event
loop's clock, runs the timer of held-back ``max_hz`` quotes (only while something
is held) and hands the frames to the connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from quotes_core import Codec, Element, StreamOptions, Subscriber, render
from quotes_server.frames import frame_text, text_frame

__all__ = ["FRAMES", "Renderer", "Session", "websocket_frames"]


def _same(frame: bytes) -> bytes:
    return frame


FRAMES: Codec[bytes, bytes] = Codec(text_frame, frame_text, _same)
"""quotes-server's payloads are pre-built text frames; a plain quote goes out as is."""

Renderer = Callable[[Sequence[Element[Any]], StreamOptions], tuple[list[bytes], int]]
"""What a transport writes for the engine's elements: its chunks, and the quotes in them."""


def websocket_frames(
    elements: Sequence[Element[Any]], options: StreamOptions
) -> tuple[list[bytes], int]:
    """The WebSocket frames of ``elements`` (the engine's :func:`~quotes_core.render`)."""
    return render(elements, options, FRAMES)


class Session:
    """
    An opted-in connection's outbox (the :class:`~quotes_server.connection.Outbox`
    protocol) over its engine subscriber.

    Args:
        subscriber: the client's side of the stream.
        renderer: how the transport writes the engine's elements (WebSocket frames,
            or Server-Sent Events).
    """

    __slots__ = ("_loop", "_render", "_timer", "subscriber", "wake")

    def __init__(
        self, subscriber: Subscriber[bytes], renderer: Renderer = websocket_frames
    ) -> None:
        self.subscriber = subscriber
        self._render = renderer
        self.wake: Callable[[], None] | None = None
        """Called when held quotes become due (set to the connection's ``on_ready``)."""
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    def now(self) -> float:
        """The clock the engine's throttle runs on (the event loop's)."""
        return self._loop.time()

    @property
    def pending(self) -> bool:
        return self.subscriber.pending

    def take(self) -> tuple[list[bytes], int]:
        subscriber = self.subscriber
        elements = subscriber.take(self._loop.time())
        if subscriber.throttle is not None:
            self.arm()
        if not elements:
            return [], 0
        return self._render(elements, subscriber.options)

    def arm(self) -> None:
        """Run the timer until the earliest held-back quote is due (none: no timer)."""
        due = self.subscriber.next_due()
        timer = self._timer
        if due is None:
            if timer is not None:
                timer.cancel()
                self._timer = None
            return
        if timer is not None:
            if timer.when() <= due:
                return
            timer.cancel()
        self._timer = self._loop.call_at(due, self._fire)

    def close(self) -> None:
        """Stop the ``max_hz`` timer (the connection is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.wake = None

    def _fire(self) -> None:
        self._timer = None
        self.subscriber.due = True
        if self.wake is not None:
            self.wake()
