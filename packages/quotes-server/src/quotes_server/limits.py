"""
The transport-level limits our uvicorn protocols enforce, and how they report.

The app hands one :class:`ProtocolLimits` to the protocols through the lifespan
state (key :data:`LIMITS_STATE_KEY`): uvicorn creates a protocol object per
connection with that state, before any ASGI code runs for it. Every limit that
trips is reported through :attr:`ProtocolLimits.on_limit` with one of the names
in :data:`LIMIT_EVENTS`, which the server counts in ``quotes_limit_hits``; a
handshake whose ``X-Forwarded-For`` is ignored (its peer is not a trusted proxy)
through :attr:`ProtocolLimits.on_untrusted_forward`, which the server turns into
a rate-limited hint.

One piece of it is shared mutable state: :class:`HttpConnectionCount`, the
process's count of open plain-HTTP connections, which every protocol object of the
process updates (one event loop per process, so no lock is needed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

from quotes_core import DEFAULT_MAX_URL_LENGTH

__all__ = [
    "INBOUND_EXTENSION",
    "LIMITS_STATE_KEY",
    "LIMIT_EVENTS",
    "STREAM_EXTENSION",
    "HttpConnectionCount",
    "InboundExtension",
    "ProtocolLimits",
    "StreamExtension",
]

LIMITS_STATE_KEY = "quotes_limits"
"""Key of the :class:`ProtocolLimits` in the lifespan state."""

LIMIT_EVENTS = (
    "handshake_timeout",
    "url_too_long",
    "headers_too_large",
    "invalid_request",
    "inbound_rate",
    "request_timeout",
    "body_too_large",
    "http_connections",
)
"""Names reported to :attr:`ProtocolLimits.on_limit`."""


def _ignore(_event: str) -> None:
    return None


class HttpConnectionCount:
    """
    Open plain-HTTP connections of one process.

    A connection counts from its TCP accept until it closes or upgrades to a
    WebSocket (WebSockets have their own caps, in the app).
    """

    __slots__ = ("open", "refusing")

    def __init__(self) -> None:
        self.open = 0
        self.refusing = False
        """Set by whoever refuses a connection; cleared when one is admitted again."""

    def acquire(self, cap: int) -> bool:
        """Count one more connection unless ``cap`` (0: none) is reached; tell whether it was."""
        if cap and self.open >= cap:
            return False
        self.open += 1
        self.refusing = False
        return True

    def release(self) -> None:
        """Stop counting a connection :meth:`acquire` counted."""
        self.open -= 1


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    """
    Limits applied below the ASGI app, per connection.

    The defaults are the server's documented defaults (see the *Security and
    limits* page); the app builds this from its settings.
    """

    close_timeout: float = 10.0
    """Seconds a peer has to answer our close frame before the socket is dropped."""
    handshake_timeout: float = 10.0
    """Seconds from TCP accept (or the first byte of a request) to a complete request head."""
    max_url_length: int = DEFAULT_MAX_URL_LENGTH
    """Longest request target (path and query), in bytes; longer gets 414."""
    max_header_size: int = 8 * 1024
    """Longest single header (name and value), in bytes; longer gets 431."""
    max_headers: int = 100
    """Most header fields in a request; more gets 431."""
    max_head_size: int = 64 * 1024
    """Most bytes of request line plus headers; more gets 431."""
    request_timeout: float = 30.0
    """Seconds from TCP accept (or the first byte of a request) to a complete request,
    body included; later gets 408 (or a close, when a response already started)."""
    max_body_size: int = 16 * 1024
    """Largest request body in bytes (0: no cap); larger gets 413."""
    max_http_connections: int = 1000
    """Most open plain-HTTP connections per process (0: no cap); past it 503 at once."""
    retry_after: int = 5
    """``Retry-After`` seconds sent with the 503 of :attr:`max_http_connections`."""
    inbound_rate: float = 50.0
    """Client frames (messages, pings and pongs) allowed per second, on average."""
    inbound_burst: int = 200
    """Client frames allowed in a burst above the average rate."""
    http_connections: HttpConnectionCount = field(
        default_factory=HttpConnectionCount, compare=False
    )
    """The process's open plain-HTTP connections, shared by every connection handed this."""
    on_limit: Callable[[str], None] = field(default=_ignore, compare=False)
    """Called with the name of each limit that trips (see :data:`LIMIT_EVENTS`)."""
    on_untrusted_forward: Callable[[str], None] = field(default=_ignore, compare=False)
    """Called with the peer's address when a WebSocket handshake carries
    ``X-Forwarded-For`` from a peer not trusted with it (the header is then ignored)."""


INBOUND_EXTENSION = "quotes.inbound"
"""Key of the :class:`InboundExtension` in an accepted WebSocket's ``scope["extensions"]``."""


class InboundExtension(TypedDict):
    """What the protocol offers the app about the client's inbound rate."""

    charge: Callable[[int], bool]
    """Take that many more tokens for a message already counted as one frame (an
    expensive one); False when that passes the rate: the connection is then closing
    with 1008, and the message must be dropped."""


STREAM_EXTENSION = "quotes.stream"
"""Key of the :class:`StreamExtension` in an HTTP request's ``scope["extensions"]``."""


class StreamExtension(TypedDict):
    """What our HTTP protocol offers a response that streams (an SSE stream)."""

    abort: Callable[[], None]
    """Reset the connection now: a peer that stopped reading leaves no socket behind."""
    on_shutdown: Callable[[], None] | None
    """Set by the app: called when the server starts shutting down while the response
    is still streaming (uvicorn would otherwise wait for it to end by itself)."""
