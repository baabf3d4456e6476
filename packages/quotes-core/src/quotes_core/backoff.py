"""
Reconnect delays: exponential, capped, with jitter that only shortens.

The base schedule is ``initial * factor**n`` capped at ``max_delay`` (1, 2, 4, 8,
... 60 seconds by default), monotone and never above the cap. Jitter draws each
delay uniformly from ``[d * (1 - jitter), d]``, so a thousand clients dropped at
once do not reconnect in lock-step and the cap still holds. The random source is
injectable so tests are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

__all__ = ["INITIAL_DELAY", "Backoff", "backoff"]

INITIAL_DELAY = 1.0
"""The first reconnect delay of the default schedule, in seconds (an SSE stream's
``retry:`` field says the same to an ``EventSource``)."""


def _check(initial: float, factor: float, max_delay: float, jitter: float) -> None:
    if initial <= 0:
        raise ValueError("initial must be positive")
    if factor < 1:
        raise ValueError("factor must be at least 1")
    if max_delay < initial:
        raise ValueError("max_delay must be at least initial")
    if not 0 <= jitter <= 1:
        raise ValueError("jitter must be between 0 and 1")


def backoff(
    initial: float = INITIAL_DELAY,
    factor: float = 2.0,
    max_delay: float = 60.0,
    *,
    jitter: float = 0.0,
    random_source: Callable[[], float] = random.random,
) -> Iterator[float]:
    """
    Yield reconnect delays in seconds, forever.

    Args:
        initial: first delay of the base schedule.
        factor: growth per attempt.
        max_delay: cap of the base schedule (and so of every delay).
        jitter: fraction of each delay that may be taken off at random
            (0 keeps the exact schedule; 0.5 draws from ``[d/2, d]``).
        random_source: returns floats in ``[0, 1)``; inject one to make tests deterministic.
    """
    _check(initial, factor, max_delay, jitter)
    delay = initial
    while True:
        yield delay - delay * jitter * random_source() if jitter else delay
        delay = min(delay * factor, max_delay)


class Backoff:
    """
    A resettable :func:`backoff` schedule for a reconnect loop.

    Call :meth:`next_delay` after each failure and :meth:`reset` after a
    connection that stayed healthy. ``attempts`` counts delays handed out since
    the last reset.
    """

    def __init__(
        self,
        initial: float = INITIAL_DELAY,
        factor: float = 2.0,
        max_delay: float = 60.0,
        *,
        jitter: float = 0.5,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        _check(initial, factor, max_delay, jitter)
        self._args = (initial, factor, max_delay)
        self._jitter = jitter
        self._random = random_source
        self._schedule = self._new()
        self.attempts = 0

    def _new(self) -> Iterator[float]:
        return backoff(*self._args, jitter=self._jitter, random_source=self._random)

    def next_delay(self) -> float:
        """The delay to wait before the next attempt."""
        self.attempts += 1
        return next(self._schedule)

    def reset(self) -> None:
        """Start again from the initial delay."""
        self._schedule = self._new()
        self.attempts = 0
