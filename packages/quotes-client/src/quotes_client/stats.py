"""
Counters and latency statistics of a client, in bounded memory.

Latency is the receive time (this machine's wall clock) minus the quote's
``timestamp``: it includes the upstream streamer, Redis, the server and the
network, and it is only as good as the clocks' synchronisation (it can even be
negative when this machine's clock is behind). Percentiles are computed over a
sliding window of the most recent samples, so memory stays fixed however long
the client runs; ``count`` and ``max`` cover every sample.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property

__all__ = ["DEFAULT_LATENCY_WINDOW", "ClientState", "ClientStats", "Latency", "LatencyStats"]

DEFAULT_LATENCY_WINDOW = 10_000
"""Samples kept for the latency percentiles."""


class ClientState(StrEnum):
    """Where the client's connection loop is."""

    IDLE = "idle"
    """Created, not started."""
    CONNECTING = "connecting"
    """Opening a connection (TCP + WebSocket handshake)."""
    CONNECTED = "connected"
    """Receiving quotes."""
    DISCONNECTED = "disconnected"
    """The last attempt or connection just ended; backing off or failing comes next."""
    BACKING_OFF = "backing_off"
    """Waiting before the next attempt."""
    CLOSED = "closed"
    """Stopped by the caller."""
    FAILED = "failed"
    """Stopped by a fatal error or ``max_retries``."""


@dataclass(frozen=True, slots=True)
class Latency:
    """
    A latency summary, in seconds (``None`` before the first sample).

    Attributes:
        count: every sample since the client started.
        p50: median over the window.
        p99: 99th percentile over the window.
        max: largest sample since the client started.
    """

    count: int = 0
    p50: float | None = None
    p99: float | None = None
    max: float | None = None


def _percentile(ordered: list[float], fraction: float) -> float:
    # nearest rank: the smallest sample with at least `fraction` of samples <= it
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class LatencyStats:
    """
    Latency samples: a fixed window for percentiles plus running count and max.

    Args:
        window: how many recent samples the percentiles cover (at least 1).
    """

    def __init__(self, window: int = DEFAULT_LATENCY_WINDOW) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._samples: deque[float] = deque(maxlen=window)
        self.count = 0
        self.max: float | None = None

    def add(self, seconds: float) -> None:
        """Record one sample."""
        self._samples.append(seconds)
        self.count += 1
        if self.max is None or seconds > self.max:
            self.max = seconds

    def snapshot(self) -> Latency:
        """Summarise the samples so far (sorts the window: call it now and then)."""
        if not self._samples:
            return Latency()
        ordered = sorted(self._samples)
        return Latency(
            count=self.count,
            p50=_percentile(ordered, 0.50),
            p99=_percentile(ordered, 0.99),
            max=self.max,
        )


@dataclass(frozen=True)
class ClientStats:
    """
    A snapshot of a client's counters.

    The counters are copied when the snapshot is taken, so reading them is cheap
    (once per quote is fine). ``latency`` is computed when first read on a snapshot
    (it sorts the latency window, up to ``latency_window`` samples): read it now and
    then, not once per quote.

    Attributes:
        state: where the connection loop is now.
        received: valid quotes received (whether or not the consumer took them yet).
        invalid: messages that failed validation and were skipped.
        dropped: quotes discarded by the drop-oldest buffer.
        buffered: quotes waiting for the consumer.
        connects: connections opened.
        reconnects: connections opened after the first one.
        attempts: connection attempts, successful or not.
        latency: receive-time latency summary (computed on first read).
        gaps: times the client saw it may have missed quotes (``resume`` only:
            an epoch change, a resume the server could not honour, or a seq jump
            on a stream of every ticker; see :mod:`quotes_client.resume`).
        missed: seq numbers jumped over on a stream of every ticker.
        recovered: reconnects after which the server replayed what was missed.
        unrecovered: reconnects after which it could not (a snapshot came instead).
    """

    state: ClientState
    received: int
    invalid: int
    dropped: int
    buffered: int
    connects: int
    reconnects: int
    attempts: int
    summarize: Callable[[], Latency] = field(default=Latency, repr=False, compare=False)
    """Computes :attr:`latency` (the client's latency window, summarised)."""
    gaps: int = 0
    missed: int = 0
    recovered: int = 0
    unrecovered: int = 0

    @cached_property
    def latency(self) -> Latency:
        """Receive-time latency summary, computed when first read on this snapshot."""
        return self.summarize()
