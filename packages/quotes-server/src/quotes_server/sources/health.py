"""
Upstream health as a table-driven state machine: one state per part of the upstream.

A part is one shard channel of the sharded source, or the one channel of the plain
Redis source. Each part is in one :class:`PartState`; what its link reports
(healthy or not) and the grace period's expiry move it along :data:`TRANSITIONS`,
and the source's :class:`~quotes_server.sources.SourceState` is a function of the
whole table (:meth:`HealthTable.source_state`)::

    NEW --healthy--> UP --unhealthy--> LOST --grace over--> DOWN
                      ^                  |                    |
                      +----healthy-------+--------------------+

``NEW`` (never up yet) and ``DOWN`` both count as down: their clients are refused
(503) or closed (1011). Pure: the caller passes the time and runs the grace timer
(:meth:`HealthTable.next_deadline`).
"""

from __future__ import annotations

from enum import Enum

from quotes_server.sources import SourceState

__all__ = ["TRANSITIONS", "Event", "HealthTable", "PartState"]


class PartState(Enum):
    """Where one part of the upstream is."""

    NEW = "new"
    """Never up yet (start-up): down."""
    UP = "up"
    """Its link is up and owns it."""
    LOST = "lost"
    """Was up, lost, within the grace period: its clients stay connected."""
    DOWN = "down"
    """Lost past the grace period: its clients are closed with 1011."""


class Event(Enum):
    """What can happen to one part."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    GRACE_OVER = "grace over"


TRANSITIONS: dict[tuple[PartState, Event], PartState] = {
    (PartState.NEW, Event.HEALTHY): PartState.UP,
    (PartState.NEW, Event.UNHEALTHY): PartState.NEW,
    (PartState.NEW, Event.GRACE_OVER): PartState.NEW,
    (PartState.UP, Event.HEALTHY): PartState.UP,
    (PartState.UP, Event.UNHEALTHY): PartState.LOST,
    (PartState.UP, Event.GRACE_OVER): PartState.UP,
    (PartState.LOST, Event.HEALTHY): PartState.UP,
    (PartState.LOST, Event.UNHEALTHY): PartState.LOST,
    (PartState.LOST, Event.GRACE_OVER): PartState.DOWN,
    (PartState.DOWN, Event.HEALTHY): PartState.UP,
    (PartState.DOWN, Event.UNHEALTHY): PartState.DOWN,
    (PartState.DOWN, Event.GRACE_OVER): PartState.DOWN,
}
"""Every (state, event) pair and the state it leads to."""

_DOWN = (PartState.NEW, PartState.DOWN)


class HealthTable:
    """
    The state of ``parts`` parts of the upstream, and when their grace runs out.

    Args:
        parts: how many parts (shards; 1 for a single channel).
        grace_period: seconds a lost part stays lost before it is down.
    """

    __slots__ = ("_lost_since", "_states", "ever_up", "failed", "grace_period")

    def __init__(self, parts: int, grace_period: float) -> None:
        if parts < 1:
            raise ValueError("parts must be at least 1")
        self.grace_period = grace_period
        self._states = [PartState.NEW] * parts
        self._lost_since: dict[int, float] = {}
        self.failed = False
        """Set when the upstream failed before it was ever up (start-up failure)."""
        self.ever_up = False
        """Set once any link of the upstream has been up."""

    def __getitem__(self, part: int) -> PartState:
        return self._states[part]

    @property
    def down(self) -> frozenset[int]:
        """Parts that are down: never up, or lost past the grace period."""
        return frozenset(p for p, s in enumerate(self._states) if s in _DOWN)

    @property
    def lost(self) -> dict[int, float]:
        """Parts lost within the grace period, and since when."""
        return dict(self._lost_since)

    @property
    def settled(self) -> bool:
        """True when every part is up (nothing lost, nothing down)."""
        return all(s is PartState.UP for s in self._states)

    def observe(self, healthy: frozenset[int] | set[int], now: float) -> None:
        """Every part in ``healthy`` is up now; every other part is not."""
        for part, state in enumerate(self._states):
            self._move(part, state, Event.HEALTHY if part in healthy else Event.UNHEALTHY, now)

    def expire(self, now: float) -> frozenset[int]:
        """Move the parts lost for the whole grace period to down; returns them."""
        grace = self.grace_period
        expired = frozenset(p for p, t in self._lost_since.items() if now - t >= grace)
        for part in expired:
            self._move(part, self._states[part], Event.GRACE_OVER, now)
        return expired

    def next_deadline(self) -> float | None:
        """When the earliest lost part's grace runs out, or ``None`` when none is lost."""
        if not self._lost_since:
            return None
        return min(self._lost_since.values()) + self.grace_period

    def source_state(self) -> SourceState:
        """
        The source's state: connecting until every part was up once (or the start
        failed), down when every part is down, reconnecting while any is lost or
        down, else up.
        """
        states = self._states
        if PartState.NEW in states and not self.failed:
            return SourceState.CONNECTING
        if all(s in _DOWN for s in states):
            return SourceState.DOWN if self.failed or self.ever_up else SourceState.CONNECTING
        if all(s is PartState.UP for s in states):
            return SourceState.UP
        return SourceState.RECONNECTING

    def _move(self, part: int, state: PartState, event: Event, now: float) -> None:
        new = TRANSITIONS[state, event]
        if new is state:
            return
        self._states[part] = new
        if new is PartState.LOST:
            self._lost_since[part] = now
        else:
            self._lost_since.pop(part, None)
