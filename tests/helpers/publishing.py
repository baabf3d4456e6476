"""A background publisher of test quotes into a private Redis."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer
from tests.helpers.server import CHANNEL


@contextmanager
def publishing(
    redis: RedisServer, tickers: Sequence[str], interval: float = 0.05
) -> Iterator[None]:
    """
    Publish one quote per ticker every ``interval`` seconds until the block ends.

    A Redis outage is tolerated (tests stop Redis on purpose); publishing resumes
    when it is back. ``close`` walks so that every quote changes the price.
    """
    stop = threading.Event()

    def run() -> None:
        seq = 0
        while not stop.wait(interval):
            seq += 1
            msgs = [upstream_message(t, seq, close=100 + seq % 17 / 10) for t in tickers]
            with contextlib.suppress(OSError, RuntimeError):
                redis.publish_many(CHANNEL, msgs)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
