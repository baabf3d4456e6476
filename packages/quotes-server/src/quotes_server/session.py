"""
The stream protocol on one connection: the outbox of a client that opted in.

A client that uses none of the protocol's options or actions writes the hub's
shared frames straight through :class:`~quotes_server.connection.PlainOutbox`. One
that asked for ``snapshot``, ``seq``/``since``, ``max_hz`` or ``batch``, or sent an
action, gets a :class:`Session` as its outbox: it puts control frames, the snapshot
and the replay in order ahead of the live quotes, holds quotes back per ticker for
``max_hz`` (the core's :class:`~quotes_core.Throttle`; a timer runs only while
something is held) and formats what goes out (``seq``/``epoch`` fields, JSON array
frames). The decisions themselves (what a resume replays, what an action does to
the filter) are the core's; the runtime wires them here.

What a session queues outside the hub (a replay, a snapshot, control replies and
the quotes moved ahead of them) is counted in bytes against a budget
(:attr:`Session.over_budget`; the runtime closes a client past it with 1013), and
is handed to the socket at most :data:`CHUNK_BYTES` at a time, each chunk only when
the socket can take it; live quotes wait meanwhile in the hub, whose buffer is
bounded on its own. So no client, reading or not, holds more than its budget here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from quotes_core import (
    Hub,
    StreamItem,
    StreamOptions,
    Subscription,
    Throttle,
    TickerFilter,
    with_position,
)
from quotes_server.frames import frame_text, text_frame

__all__ = ["CHUNK_BYTES", "Element", "Session"]

CHUNK_BYTES = 64 * 1024
"""Most queued bytes one write takes (the rest waits until the socket drains)."""

_POSITION_BYTES = 40
"""Room for ``,"seq":...,"epoch":"..."`` in a sequenced quote."""

Element = str | bytes | StreamItem[bytes]
"""What a session queues: a control frame's JSON text, a plain quote frame, or a
sequenced quote (its payload is the quote's plain frame)."""


class Session:
    """
    An opted-in connection's outbox and protocol state.

    Args:
        hub: the hub ``sub`` belongs to (``Hub[bytes]`` of plain frames, or
            ``Hub[StreamItem[bytes]]`` for sequenced, throttled or batched clients).
        sub: the connection's subscription.
        options: what the client asked for at the handshake.
        budget: most bytes the session may hold queued (see :attr:`over_budget`).
    """

    def __init__(
        self, hub: Hub[Any], sub: Subscription[Any], options: StreamOptions, budget: int
    ) -> None:
        self.hub = hub
        self.sub = sub
        self.options = options
        self.budget = budget
        self.queued = 0
        """Bytes queued here (outside the hub), about what they will take on the wire."""
        self.throttle: Throttle[bytes] | None = (
            Throttle(options.max_hz) if options.max_hz is not None else None
        )
        self.wake: Callable[[], None] | None = None
        """Called when held quotes become due (set to the connection's ``on_ready``)."""
        self._out: list[Element] = []
        self._due = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    # --- what the runtime queues -------------------------------------------------------------

    @property
    def over_budget(self) -> bool:
        """True when more than :attr:`budget` bytes are queued (a client not reading)."""
        return self.queued > self.budget

    def control(self, text: str) -> None:
        """Queue a control frame, after everything already pending (hub included)."""
        self.flush_pending()
        self._out.append(text)
        self.queued += len(text)

    def extend(self, items: Iterable[StreamItem[bytes]]) -> None:
        """Queue quotes (a snapshot or a replay) after everything already queued."""
        out = self._out
        size = 0
        for item in items:
            out.append(item)
            size += len(item.payload) + _POSITION_BYTES
        self.queued += size

    def flush_pending(self) -> None:
        """Move the hub's pending quotes into the queue, so what follows comes after them."""
        if self.sub.pending:
            moved = self._admit(self.hub.drain(self.sub))
            self._out.extend(moved)
            self.queued += sum(map(_size, moved))

    def retain(self, ticker_filter: TickerFilter) -> None:
        """Drop held-back quotes of tickers the new filter no longer wants."""
        if self.throttle is not None:
            self.throttle.retain(ticker_filter)

    def close(self) -> None:
        """Stop the ``max_hz`` timer (the connection is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.wake = None

    # --- the Outbox protocol -----------------------------------------------------------------

    @property
    def pending(self) -> bool:
        return bool(self._out) or self._due or self.sub.pending > 0

    def take(self) -> tuple[list[bytes], int]:
        out = self._out
        if self.queued > CHUNK_BYTES:
            # a replay, a snapshot or replies held for a slow reader: one chunk now,
            # the next when the socket has taken it; live quotes wait in the hub
            return self._format(self._cut(CHUNK_BYTES))
        self._out = []
        self.queued = 0
        live = self.hub.drain(self.sub) if self.sub.pending else []
        if self.throttle is not None:
            self._due = False
            out.extend(self.throttle.release(self._loop.time()))
            out.extend(self._admit(live))
            self._arm()
        else:
            out.extend(live)
        if not out:
            return [], 0
        return self._format(out)

    # --- internals -----------------------------------------------------------------------------

    def _cut(self, most: int) -> list[Element]:
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

    def _admit(self, live: list[Any]) -> list[Any]:
        if self.throttle is None or not live:
            return live
        admitted = self.throttle.admit(live, self._loop.time())
        self._arm()
        return admitted

    def _arm(self) -> None:
        throttle = self.throttle
        due = throttle.next_due() if throttle is not None else None
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

    def _fire(self) -> None:
        self._timer = None
        self._due = True
        if self.wake is not None:
            self.wake()

    def _format(self, elements: list[Element]) -> tuple[list[bytes], int]:
        seq = self.options.seq
        batch = self.options.batch
        frames: list[bytes] = []
        group: list[str] = []
        quotes = 0
        for e in elements:
            if isinstance(e, str):  # a control frame: never inside an array
                if group:
                    frames.append(text_frame("[" + ",".join(group) + "]"))
                    group = []
                frames.append(text_frame(e))
                continue
            quotes += 1
            if isinstance(e, bytes):
                if batch:
                    group.append(frame_text(e))
                else:
                    frames.append(e)
                continue
            if seq:
                text = with_position(frame_text(e.payload), e.seq, e.epoch)
                if batch:
                    group.append(text)
                else:
                    frames.append(text_frame(text))
            elif batch:
                group.append(frame_text(e.payload))
            else:
                frames.append(e.payload)
        if group:
            frames.append(text_frame("[" + ",".join(group) + "]"))
        return frames, quotes


def _size(e: Element) -> int:
    """About what a queued element takes on the wire, in bytes."""
    if isinstance(e, StreamItem):
        return len(e.payload) + _POSITION_BYTES
    return len(e)
