"""Stopping tasks: a cancelled caller stays cancelled."""

from __future__ import annotations

import asyncio

import pytest

from quotes_server.tasks import cancel_and_wait

pytestmark = pytest.mark.anyio


async def test_the_tasks_end_and_their_errors_are_retrieved() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    async def failing() -> None:
        raise RuntimeError("reported elsewhere")

    loop = asyncio.get_running_loop()
    a, b = loop.create_task(forever()), loop.create_task(failing())
    await asyncio.sleep(0)
    await cancel_and_wait([a, b])
    assert a.cancelled()
    assert isinstance(b.exception(), RuntimeError)


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    """
    The trap it replaces: a caller cancelled while it waits for a child that takes a
    turn to stop must end cancelled, not carry on (a shard link reconnecting after it
    was stopped, seen as a hung test).
    """
    stopping = asyncio.Event()
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopping.set()
            await asyncio.shield(release.wait())  # a cleanup that takes until released

    carried_on = False
    children: list[asyncio.Task[None]] = []

    async def caller() -> None:
        nonlocal carried_on
        child = asyncio.get_running_loop().create_task(slow_to_stop())
        children.append(child)
        await asyncio.sleep(0)
        await cancel_and_wait([child])
        carried_on = True

    task = asyncio.get_running_loop().create_task(caller())
    await stopping.wait()  # the caller is waiting for its child now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not carried_on
    release.set()  # let the child finish its cleanup
    await asyncio.wait(children)
    assert children[0].cancelled()
