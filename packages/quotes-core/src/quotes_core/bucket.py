"""
A token bucket: how many events a peer may cause per second, with a burst.

Pure: the caller passes the current time (any monotonic clock, in seconds), so the
bucket is deterministic under test. The server uses one per connection to cap the
frames a client may send.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """
    ``rate`` tokens per second refill a bucket of ``burst`` tokens; each event
    takes one, or its weight.

    Args:
        rate: average events allowed per second (> 0).
        burst: most events allowed at once (>= 1); the bucket starts full.
        now: the current time, in seconds.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float, n: int = 1) -> bool:
        """
        Take ``n`` tokens at time ``now`` (an event that weighs ``n``); False, taking
        nothing, when fewer are left (over the rate). An event heavier than the
        whole burst is never allowed.
        """
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._last = now
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False

    @property
    def tokens(self) -> float:
        """Tokens left as of the last :meth:`take`."""
        return self._tokens
