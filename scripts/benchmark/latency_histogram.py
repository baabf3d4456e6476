"""
A fixed-bucket latency histogram: cheap to fill in the hot path, exact to merge.

Latencies are counted in two tiers so that memory stays small and bounded however
long a run is: 10 µs buckets up to 1 s, then 10 ms buckets up to 10 minutes (the
last bucket also holds everything slower). Client processes fill the plain lists
directly (see ``loadgen``) and ship them sparse; the orchestrator merges them and
reads percentiles. A percentile is reported as the upper edge of its bucket, so it
never understates a latency by more than one bucket width.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = [
    "COARSE_BUCKETS",
    "COARSE_PER_FINE",
    "FINE_BUCKETS",
    "FINE_UNITS_PER_SECOND",
    "LatencyHistogram",
]

FINE_UNITS_PER_SECOND = 100_000.0
"""Fine buckets per second of latency (10 µs each)."""

FINE_BUCKETS = 100_000
"""Fine buckets: 10 µs wide, covering 0 to 1 s."""

COARSE_PER_FINE = 1000
"""Fine units per coarse bucket (coarse buckets are 10 ms wide)."""

COARSE_BUCKETS = 60_000
"""Coarse buckets: 10 ms wide, covering 1 s to 10 minutes and beyond."""

Sparse = list[tuple[int, int]]


def _sparse(counts: Sequence[int]) -> Sparse:
    return [(i, c) for i, c in enumerate(counts) if c]


class LatencyHistogram:
    """
    Counts of latencies in fixed buckets, with percentile queries.

    ``fine[i]`` counts latencies in ``[i, i + 1)`` tens of microseconds;
    ``coarse[j]`` counts latencies in ``[j, j + 1)`` tens of milliseconds (only
    ``j >= 100`` is used, since the fine tier covers the first second).
    """

    __slots__ = ("coarse", "fine")

    def __init__(self) -> None:
        self.fine: list[int] = [0] * FINE_BUCKETS
        self.coarse: list[int] = [0] * COARSE_BUCKETS

    def record(self, seconds: float) -> None:
        """
        Count one latency (slow path, for tests and tools; hot loops inline this).

        Args:
            seconds: the latency; negative values (clock jitter) count as zero.
        """
        k = int(seconds * FINE_UNITS_PER_SECOND)
        if k < FINE_BUCKETS:
            self.fine[k if k > 0 else 0] += 1
        else:
            j = k // COARSE_PER_FINE
            self.coarse[j if j < COARSE_BUCKETS else COARSE_BUCKETS - 1] += 1

    @property
    def count(self) -> int:
        """How many latencies were recorded."""
        return sum(self.fine) + sum(self.coarse)

    def to_sparse(self) -> tuple[Sparse, Sparse]:
        """The non-zero buckets of both tiers, small enough to send between processes."""
        return _sparse(self.fine), _sparse(self.coarse)

    def merge_sparse(
        self, fine: Iterable[tuple[int, int]], coarse: Iterable[tuple[int, int]]
    ) -> None:
        """Add counts produced by :meth:`to_sparse` (possibly in another process)."""
        for i, c in fine:
            self.fine[i] += c
        for j, c in coarse:
            self.coarse[j] += c

    def _edges(self) -> Iterable[tuple[float, int]]:
        """(upper edge in seconds, count) of every non-empty bucket, in order."""
        for i, c in enumerate(self.fine):
            if c:
                yield (i + 1) / FINE_UNITS_PER_SECOND, c
        for j, c in enumerate(self.coarse):
            if c:
                yield (j + 1) * COARSE_PER_FINE / FINE_UNITS_PER_SECOND, c

    def percentiles(self, qs: Sequence[float]) -> list[float | None]:
        """
        Latency percentiles, in seconds.

        Args:
            qs: percentiles in ``[0, 100]``, ascending.

        Returns:
            One value per percentile (``None`` for all when nothing was recorded);
            ``100`` gives the maximum.
        """
        total = self.count
        if total == 0:
            return [None for _ in qs]
        # The q-th percentile is the smallest value with at least q% of samples at or below it.
        targets = [max(1, math.ceil(q * total / 100 - 1e-9)) for q in qs]
        out: list[float | None] = []
        seen = 0
        k = 0
        for edge, c in self._edges():
            seen += c
            while k < len(targets) and seen >= targets[k]:
                out.append(edge)
                k += 1
            if k == len(targets):
                break
        return out
