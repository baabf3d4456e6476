"""
A log line that repeats at most once per interval, with a count of what it hid.

A server that suddenly sends garbage at 10,000 messages per second must not turn
the client's log into the bottleneck: the first occurrence is logged at once,
later ones are counted and summarised at most once per ``interval``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """
    Log a warning at most once per ``interval`` seconds.

    Args:
        logger: where to log.
        interval: seconds between two log lines.
        clock: monotonic clock (injectable for tests).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._next = float("-inf")
        self.suppressed = 0
        """Occurrences not logged since the last line."""

    def warning(self, message: str, *args: object) -> bool:
        """Log ``message % args`` unless one was logged recently; tell whether it was."""
        now = self._clock()
        if now < self._next:
            self.suppressed += 1
            return False
        if self.suppressed:
            message += " (%d similar messages suppressed)"
            args = (*args, self.suppressed)
        self._logger.warning(message, *args)
        self.suppressed = 0
        self._next = now + self._interval
        return True
