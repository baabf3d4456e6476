"""
What the runtime and the write rounds call on a client, whatever its transport.

A WebSocket :class:`~quotes_server.connection.Connection` and a Server-Sent Events
:class:`~quotes_server.sse.SseStream` are both registered in
:attr:`Runtime.connections <quotes_server.runtime.Runtime.connections>`, count
against the same caps and get the same rounds, watchdog, grace period and
shutdown: they meet this protocol, and nothing asks which one it has.
"""

from __future__ import annotations

from typing import Protocol

from quotes_core import Subscriber, Subscription
from quotes_server.session import Session

__all__ = ["Client"]


class Client(Protocol):
    """One streaming client, as its owner (the runtime) sees it."""

    kind: str
    """``"ws"`` or ``"sse"``: which metrics count it (``Metrics.open``)."""
    client_id: str
    host: str
    """The key it counts under for the per-address cap."""
    subscriber: Subscriber[bytes]
    sub: Subscription[bytes]
    session: Session | None
    """Its rendering outbox, when it has one (its ``max_hz`` timer is stopped at removal)."""
    close_code: int | None
    """The code the server closed it with, once it did."""
    close_reason: str
    sent: int
    """Writes handed to its socket (frames, or event chunks)."""

    @property
    def detail(self) -> str:
        """What its connect log line says about its transport (``raw_frames=True``)."""
        ...

    def on_ready(self) -> None:
        """The engine has something for it: write it (now, or when the socket can take it)."""
        ...

    def close(self, code: int, reason: str) -> None:
        """End it from the server side with a WebSocket close code and reason (idempotent)."""
        ...

    def stalled(self, now: float, timeout: float) -> bool:
        """True when it had data to write and wrote nothing for ``timeout`` seconds."""
        ...
