"""The bounded buffer: bound, drop-oldest, blocking and closing."""

from __future__ import annotations

from collections import deque

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_client.buffer import BoundedBuffer, BufferClosed

sizes = st.integers(min_value=1, max_value=50)
items = st.lists(st.integers(), max_size=300)


@given(sizes, items)
def test_drop_oldest_never_exceeds_bound_and_keeps_newest(maxsize: int, values: list[int]) -> None:
    """After any sequence of offers, the buffer holds exactly the newest ``maxsize`` items."""
    buffer: BoundedBuffer[int] = BoundedBuffer(maxsize)
    for value in values:
        assert buffer.offer(value)
        assert len(buffer) <= maxsize
    assert buffer.drain() == values[-maxsize:]
    assert buffer.dropped == max(0, len(values) - maxsize)


@given(sizes, st.lists(st.one_of(st.integers(), st.none()), max_size=300))
def test_drop_oldest_matches_a_bounded_deque(maxsize: int, ops: list[int | None]) -> None:
    """Interleaved offers (ints) and takes (None) behave like ``deque(maxlen=maxsize)``."""
    buffer: BoundedBuffer[int] = BoundedBuffer(maxsize)
    model: deque[int] = deque(maxlen=maxsize)
    dropped = 0
    for op in ops:
        if op is None:
            if model:
                assert buffer.get_nowait() == model.popleft()
            else:
                with pytest.raises(IndexError):
                    buffer.get_nowait()
        else:
            dropped += len(model) == maxsize
            model.append(op)
            buffer.offer(op)
        assert len(buffer) == len(model) <= maxsize
    assert buffer.dropped == dropped
    assert buffer.drain() == list(model)


@given(sizes, items)
def test_block_policy_refuses_when_full_and_drops_nothing(maxsize: int, values: list[int]) -> None:
    """With ``block``, offers past the bound fail and the oldest items stay."""
    buffer: BoundedBuffer[int] = BoundedBuffer(maxsize, "block")
    accepted = [v for v in values if buffer.offer(v)]
    assert accepted == values[:maxsize]
    assert len(buffer) == min(maxsize, len(values))
    assert buffer.dropped == 0


@pytest.mark.anyio
async def test_blocking_put_waits_for_room() -> None:
    """A blocking ``put`` on a full buffer completes only after a ``get`` makes room."""
    buffer: BoundedBuffer[int] = BoundedBuffer(2, "block")
    await buffer.put(1)
    await buffer.put(2)
    done = anyio.Event()

    async def producer() -> None:
        await buffer.put(3)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(producer)
        for _ in range(20):
            await anyio.lowlevel.checkpoint()  # let the producer run as far as it can
        assert not done.is_set()
        assert len(buffer) == 2
        assert await buffer.get() == 1
        await done.wait()
    assert buffer.drain() == [2, 3]


@pytest.mark.anyio
async def test_close_with_error_delivers_the_rest_first() -> None:
    """After ``close(error)``, buffered items come out first, then the error is raised."""
    buffer: BoundedBuffer[int] = BoundedBuffer(5)
    buffer.offer(1)
    buffer.offer(2)
    buffer.close(RuntimeError("fatal"))
    assert await buffer.get() == 1
    assert await buffer.get() == 2
    with pytest.raises(RuntimeError, match="fatal"):
        await buffer.get()


@pytest.mark.anyio
async def test_close_wakes_a_waiting_consumer() -> None:
    """A consumer waiting on an empty buffer gets ``BufferClosed`` when it is closed."""
    buffer: BoundedBuffer[int] = BoundedBuffer(5)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            outcome: list[str] = []

            async def consumer() -> None:
                try:
                    await buffer.get()
                except BufferClosed:
                    outcome.append("closed")

            tg.start_soon(consumer)
            await anyio.lowlevel.checkpoint()
            buffer.close()
    assert outcome == ["closed"]


@pytest.mark.anyio
async def test_close_releases_a_blocked_producer() -> None:
    """A ``put`` blocked on a full buffer returns, without adding, when it is closed."""
    buffer: BoundedBuffer[int] = BoundedBuffer(1, "block")
    await buffer.put(1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(buffer.put, 2)
            await anyio.lowlevel.checkpoint()
            buffer.close()
    assert buffer.drain() == [1]


def test_invalid_arguments_are_rejected() -> None:
    """A bound below 1 or an unknown policy raise ValueError."""
    with pytest.raises(ValueError):
        BoundedBuffer(0)
    with pytest.raises(ValueError):
        BoundedBuffer(10, "drop_newest")  # type: ignore[arg-type]
