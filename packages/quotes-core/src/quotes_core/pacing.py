"""
When to run the next write round: at once when idle, a little later when busy.

A fan-out server writes each client's new frames in *rounds* (one pass over the
clients with pending frames, one socket write each). Writing after every event-loop
turn keeps an idle server's latency at its floor, but under load it makes one
system call per delivery. :class:`FlushPacer` holds the next round back only while
the server is busy, so that the frames arriving meanwhile share a write:

* the next round starts no sooner than ``min(window, cost)`` after the last one
  ended, where ``cost`` is how long that round took. Rounds thus take at most about
  half the time while they are expensive, and the hold never exceeds ``window``;
* a server whose last round was cheap, or that has been idle for longer than that
  round took, never waits;
* a held round is released early after ``budget`` new items (the caller counts
  them with :meth:`FlushPacer.arrived`), so a burst cannot pile more than that onto
  a client between two rounds.

Pure: the caller passes the times (any monotonic clock, in seconds).
"""

from __future__ import annotations

__all__ = ["DEFAULT_FLUSH_BUDGET", "DEFAULT_FLUSH_WINDOW", "FlushPacer"]

DEFAULT_FLUSH_WINDOW = 0.005
"""Longest hold of a write round, in seconds."""

DEFAULT_FLUSH_BUDGET = 256
"""Items after which a held round is released."""


class FlushPacer:
    """
    Decides how long to hold the next write round.

    Args:
        window: the longest hold in seconds (``0``: never hold, a round after every
            loop turn).
        budget: new items after which a held round is released (>= 1).
    """

    __slots__ = ("_cost", "_end", "_held", "budget", "holding", "window")

    def __init__(
        self, window: float = DEFAULT_FLUSH_WINDOW, budget: int = DEFAULT_FLUSH_BUDGET
    ) -> None:
        if window < 0:
            raise ValueError("window must be >= 0")
        if budget < 1:
            raise ValueError("budget must be at least 1")
        self.window = window
        self.budget = budget
        self._end = float("-inf")
        self._cost = 0.0
        self._held = 0
        self.holding = False
        """True between a :meth:`delay` that held the round and that round's start."""

    def delay(self, now: float) -> float:
        """
        Seconds to wait before the next round (``0.0``: after this loop turn).

        Called when the first new item since the last round arrives.
        """
        if self.window > 0.0:
            wait = min(self.window, self._cost) - max(0.0, now - self._end)
            if wait > 0.0:
                self.holding = True
                self._held = 0
                return wait
        self.holding = False
        return 0.0

    def arrived(self) -> bool:
        """
        Count one more item while a round is held; True when the budget is spent and
        the round should run now (the pacer then stops holding).
        """
        if not self.holding:
            return False
        self._held += 1
        if self._held >= self.budget:
            self.holding = False
            return True
        return False

    def started(self) -> None:
        """A round starts (held or not)."""
        self.holding = False

    def finished(self, start: float, end: float) -> None:
        """A round that started at ``start`` ended at ``end``."""
        self._end = end
        self._cost = max(0.0, end - start)
