"""
The wire's constants and small rules, defined once for every server and test double.

The contract's endpoints, the close codes and reasons a server sends, the default
limits a client meets, the ``Origin`` rule of the handshake and stream epochs.
``quotes-server`` and the testing kit's ``ScriptedServer`` both read them from here,
so they cannot drift apart.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection
from enum import IntEnum

from quotes_core.query import EPOCH_PATTERN

__all__ = [
    "DEFAULT_MAX_CLIENT_FRAME",
    "DEFAULT_MAX_URL_LENGTH",
    "INBOUND_RATE_REASON",
    "INTERNAL_ERROR_REASON",
    "QUEUE_FULL_REASON",
    "SHUTDOWN_REASON",
    "SLOW_CONSUMER_REASON",
    "TOKEN_EXPIRED_REASON",
    "WS_PATHS",
    "CloseCode",
    "checked_epoch",
    "new_epoch",
    "origin_allowed",
]

WS_PATHS = ("/ws/quotes", "/ws", "/v1/ws/quotes", "/v1/ws")
"""The contract's four WebSocket endpoints."""

DEFAULT_MAX_CLIENT_FRAME = 64 * 1024
"""Largest client frame accepted by default (larger: close 1009)."""

DEFAULT_MAX_URL_LENGTH = 32 * 1024
"""Longest request target (path and query) accepted by default (longer: 414 or 400)."""


class CloseCode(IntEnum):
    """WebSocket close codes a server sends (see the docs' close-code table)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


SHUTDOWN_REASON = "Server shutting down"
"""Close reason with 1001 when the server stops."""
INTERNAL_ERROR_REASON = "Internal server error"
"""Close reason with 1011 (upstream lost past the grace period, or a server bug)."""
INBOUND_RATE_REASON = "Policy violation: too many messages"
"""Close reason with 1008 when a client sends faster than the inbound rate."""
SLOW_CONSUMER_REASON = "Slow consumer"
"""Close reason with 1013 when a client made no progress for the slow-client timeout."""
QUEUE_FULL_REASON = "Slow consumer: too much queued"
"""Close reason with 1013 when a client's queue passed its byte budget."""
TOKEN_EXPIRED_REASON = "Token expired"
"""Close reason with 1008 when the client's token expires while it is connected."""

_EPOCH_RE = re.compile(EPOCH_PATTERN)


def new_epoch() -> str:
    """A fresh stream epoch: random, so two processes (or two starts) never share one."""
    return secrets.token_hex(6)


def checked_epoch(epoch: str | None) -> str:
    """
    ``epoch`` when it is a valid epoch, a fresh one when it is ``None``.

    Raises:
        ValueError: ``epoch`` is not 1-64 characters ``A-Z a-z 0-9 _ -``.
    """
    if epoch is None:
        return new_epoch()
    if not _EPOCH_RE.fullmatch(epoch):
        raise ValueError(f"invalid epoch {epoch!r}: expected {EPOCH_PATTERN}")
    return epoch


def origin_allowed(origin: str | None, allowed: Collection[str]) -> bool:
    """
    Whether a handshake's ``Origin`` header passes the ``allowed`` origins.

    No header (a non-browser client) is allowed; otherwise an exact
    ``scheme://host[:port]`` match (a trailing ``/`` ignored), or ``*`` in the list.
    ``Origin: null`` (sandboxed frames, ``file://`` pages, redirects) is allowed only
    when ``null`` itself is listed: it is not an origin ``*`` should cover.
    """
    if origin is None:
        return True
    if origin == "null":
        return "null" in allowed
    return "*" in allowed or origin.rstrip("/") in allowed
