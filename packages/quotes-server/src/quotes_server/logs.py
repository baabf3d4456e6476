"""Logging helpers: a rate limit for messages that can arrive in floods."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog", "truncate"]


def truncate(raw: bytes | str, limit: int = 200) -> str:
    """A printable, bounded rendering of a payload for logs."""
    text = repr(raw[:limit])
    return text + f"... ({len(raw)} bytes)" if len(raw) > limit else text


class RateLimitedLog:
    """
    Log at most ``burst`` records per ``period`` seconds; count the rest and say
    how many were suppressed when the next period starts.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        period: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self.clock = clock
        self._window = clock()
        self._count = 0
        self.suppressed = 0

    def __call__(self, level: int, msg: str, *args: object) -> None:
        now = self.clock()
        if now - self._window >= self.period:
            if self.suppressed:
                self.logger.log(level, "(%d similar messages suppressed)", self.suppressed)
            self._window = now
            self._count = 0
            self.suppressed = 0
        if self._count < self.burst:
            self._count += 1
            self.logger.log(level, msg, *args)
        else:
            self.suppressed += 1
