"""
The bounded buffer between the socket reader and the consumer.

One reader task puts quotes in, the consumer takes them out. The buffer never
holds more than ``maxsize`` items; what happens when it is full is the
*overflow policy*:

* ``"drop_oldest"`` (default): the new item goes in and the oldest one is
  dropped and counted in :attr:`BoundedBuffer.dropped`. The reader never waits,
  so a slow consumer never stalls the socket and always sees the newest data.
* ``"block"``: :meth:`BoundedBuffer.put` waits for room. The reader stops
  reading the socket, the WebSocket library's own small queue fills, it stops
  reading the TCP connection and the server feels the backpressure. Nothing is
  dropped here (the server may still conflate or disconnect a slow client).

:meth:`BoundedBuffer.close` ends the stream: consumers first get what is still
buffered, then the error given to ``close`` (or :class:`BufferClosed`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, Literal, TypeVar

__all__ = ["DEFAULT_BUFFER_SIZE", "BoundedBuffer", "BufferClosed", "Overflow"]

T = TypeVar("T")

Overflow = Literal["drop_oldest", "block"]
"""What a full buffer does with a new item."""

DEFAULT_BUFFER_SIZE = 1000
"""Quotes held for a slow consumer (the contract's "last 1,000")."""


class BufferClosed(Exception):
    """The buffer was closed without an error and nothing is left in it."""


class BoundedBuffer(Generic[T]):
    """
    A FIFO of at most ``maxsize`` items with a drop-oldest or blocking policy.

    Args:
        maxsize: the bound (at least 1).
        overflow: ``"drop_oldest"`` or ``"block"``.
    """

    def __init__(self, maxsize: int = DEFAULT_BUFFER_SIZE, overflow: Overflow = "drop_oldest"):
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        if overflow not in ("drop_oldest", "block"):
            raise ValueError(f"overflow must be 'drop_oldest' or 'block', not {overflow!r}")
        self.maxsize = maxsize
        self.overflow: Overflow = overflow
        self._items: deque[T] = deque()
        self._not_empty = asyncio.Event()
        self._not_full = asyncio.Event()
        self._not_full.set()
        self._closed = False
        self._closed_event = asyncio.Event()
        self._error: BaseException | None = None
        self.dropped = 0
        """Items discarded by the drop-oldest policy."""

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (items may still be waiting)."""
        return self._closed

    def offer(self, item: T) -> bool:
        """
        Add ``item`` without waiting.

        Returns:
            False only when the policy is ``"block"`` and the buffer is full (the
            item was not added); with ``"drop_oldest"`` it always succeeds.
        """
        items = self._items
        if len(items) >= self.maxsize:
            if self.overflow == "block":
                return False
            items.popleft()
            self.dropped += 1
        items.append(item)
        self._not_empty.set()
        if len(items) >= self.maxsize:
            self._not_full.clear()
        return True

    async def put(self, item: T) -> None:
        """
        Add ``item``, waiting for room when the policy is ``"block"``.

        Returns without adding when the buffer gets closed while waiting.
        """
        while not self.offer(item):
            if self._closed:
                return
            await self._not_full.wait()

    def get_nowait(self) -> T:
        """
        Take the oldest item.

        Raises:
            IndexError: the buffer is empty.
        """
        item = self._items.popleft()
        self._after_take()
        return item

    def drain(self, limit: int | None = None) -> list[T]:
        """Take up to ``limit`` buffered items (all by default), oldest first."""
        items = self._items
        count = len(items) if limit is None else min(limit, len(items))
        batch = [items.popleft() for _ in range(count)]
        self._after_take()
        return batch

    async def get(self) -> T:
        """
        Wait for an item and take it.

        Raises:
            BaseException: the error given to :meth:`close`, once the buffer is empty.
            BufferClosed: the buffer was closed without an error and is empty.
        """
        while not self._items:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise BufferClosed
            await self._not_empty.wait()
        return self.get_nowait()

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` is called."""
        await self._closed_event.wait()

    def close(self, error: BaseException | None = None) -> None:
        """
        End the stream; ``get`` raises ``error`` (or :class:`BufferClosed`) once empty.

        Only the first call counts; blocked ``put`` calls return.
        """
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._closed_event.set()
        self._not_empty.set()
        self._not_full.set()

    def _after_take(self) -> None:
        if not self._items and not self._closed:
            self._not_empty.clear()
        if len(self._items) < self.maxsize:
            self._not_full.set()
