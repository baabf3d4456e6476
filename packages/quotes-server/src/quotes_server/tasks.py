"""
Stopping tasks without swallowing a cancellation.

``task.cancel()`` then ``with suppress(CancelledError): await task`` is a trap: if
the *caller* is cancelled while it waits, its own ``CancelledError`` is suppressed
too, and the caller runs on as if nothing happened (a link's loop reconnecting
after it was told to stop, a shutdown that never ends). :func:`cancel_and_wait`
waits with :func:`asyncio.wait`, which never raises for the tasks it waits on but
lets the caller's own cancellation through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended (their errors are retrieved)."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if not pending:
        return
    await asyncio.wait(pending)
    for task in pending:
        if not task.cancelled():
            task.exception()  # retrieved: whoever ran it has reported it already
