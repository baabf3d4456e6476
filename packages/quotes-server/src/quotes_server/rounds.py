"""
Write rounds: when the connections with new frames write them.

The stream engine says which subscriptions went from empty to non-empty; the
rounds collect them and run one round per event-loop turn (a loop callback of its
own, after the source has handed over everything it had), in which each of their
connections writes its whole batch with one non-blocking write. No write to any
client happens in the source's reading loop, so a slow client can never hold up
the upstream reader.

Under load a round is held a little (:class:`quotes_core.FlushPacer`) so that more
quotes share each client's next write, and released early once enough quotes
have arrived; :meth:`WriteRounds.room` tells a source that reads in bulk how many
messages to hand over before the next round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from quotes_core import INTERNAL_ERROR_REASON, CloseCode, FlushPacer, Subscription
from quotes_server.clients import Client
from quotes_server.metrics import Metrics

__all__ = ["WriteRounds"]

log = logging.getLogger("quotes_server")


class WriteRounds:
    """
    The write-round scheduler of one process.

    Args:
        window: the pacer's longest hold of a round, in seconds (``flush_window``).
        connections: the open connections, by subscription (read at each round).
        metrics: the hot-path counters and the delivery-latency histogram.
    """

    def __init__(
        self,
        window: float,
        connections: Mapping[Subscription[Any], Client],
        metrics: Metrics,
    ) -> None:
        self._connections = connections
        self._metrics = metrics
        self._pacer = FlushPacer(window)
        self._ready: list[Subscription[Any]] = []
        self._handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._since = 0
        """Upstream messages since the last round started."""
        self.newest: datetime | None = None
        """The newest quote's timestamp (the latency histogram observes it per round)."""

    def arrived(self) -> None:
        """One upstream message arrived (valid or not): it counts against :meth:`room`."""
        self._since += 1

    def published(self, woken: list[Subscription[Any]], *, arrival: bool = True) -> None:
        """
        A quote was published and woke ``woken``: make sure a round will run (held
        while the pacer asks for it, released once enough quotes have arrived).
        ``arrival=False``: the quote was counted already (the same upstream message
        published again with its deployment position), so a held round does not
        count it twice.
        """
        if woken:
            self._ready += woken
        if self._ready:
            if self._handle is None:
                loop = asyncio.get_running_loop()
                delay = self._pacer.delay(time.monotonic())
                if delay > 0.0:  # busy: let more frames share each client's next write
                    self._handle = loop.call_later(delay, self._run)
                else:
                    self._handle = loop.call_soon(self._run)
            elif arrival and self._pacer.arrived():  # a held round waited for enough quotes
                self._release_held()

    def room(self) -> int:
        """
        Messages to take before the next round: the pacer's budget less what arrived
        since the last round (the whole budget while no round is pending).
        """
        if self._handle is None:
            self._since = 0
        room = self._pacer.budget - self._since
        if room <= 0:
            if self._pacer.holding:  # the round waits for time: the budget is spent first
                self._release_held()
            return 0
        return room

    def _release_held(self) -> None:
        """Run the pending (held) round after this loop turn instead of later."""
        if self._handle is not None:
            self._handle.cancel()
        self._pacer.started()
        self._handle = asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        """Let every connection with new frames write them (one write each)."""
        start = time.monotonic()
        self._handle = None
        self._since = 0
        self._pacer.started()
        metrics = self._metrics
        metrics.hot.flushes += 1
        ready, self._ready = self._ready, []
        connections = self._connections
        for sub in ready:
            conn = connections.get(sub)
            if conn is None:
                continue
            try:
                conn.on_ready()
            except Exception:  # one broken connection must not starve the others
                log.exception("client %s: write failed", conn.client_id)
                conn.close(CloseCode.INTERNAL_ERROR, INTERNAL_ERROR_REASON)
        if self.newest is not None:
            metrics.latency.observe(max(0.0, time.time() - self.newest.timestamp()))
        self._pacer.finished(start, time.monotonic())
