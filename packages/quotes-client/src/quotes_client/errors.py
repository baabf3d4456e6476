"""
Errors that end a client's stream, split by whether retrying could help.

Everything here derives from :class:`quotes_core.QuotesError`, so one
``except QuotesError`` catches every error the quotes packages raise on purpose::

    QuotesError (quotes_core)
    └── StreamError                  the stream ended for good; raised from iteration
        ├── FatalError               retrying would fail the same way
        │   ├── HandshakeFailed      the opening handshake failed (.reason)
        │   │   └── HandshakeRejected  the server answered with an HTTP status (.status)
        │   └── FatalClose           the server closed with a fatal code (.code, .reason)
        └── RetriesExhausted         ``max_retries`` consecutive failures (.attempts)
    ActionRejected                   the server refused subscribe/unsubscribe/set (.code)

Retryable failures (connection refused, timeouts, HTTP 5xx, close codes 1001,
1011, 1012, 1013 ...) never surface as exceptions: the client reconnects and
reports them as :mod:`quotes_client.events` instead.
"""

from __future__ import annotations

from http import HTTPStatus

from quotes_core import QuotesError

__all__ = [
    "ActionRejected",
    "FatalClose",
    "FatalError",
    "HandshakeFailed",
    "HandshakeRejected",
    "RetriesExhausted",
    "StreamError",
]


class StreamError(QuotesError):
    """
    The client stopped streaming because of an error; ``str(error)`` says why.
    """


class FatalError(StreamError):
    """
    A failure that reconnecting would only repeat (the request itself is wrong).
    """


class HandshakeFailed(FatalError):
    """
    The WebSocket opening handshake failed for a reason retrying cannot fix.

    Attributes:
        reason: human-readable cause.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HandshakeRejected(HandshakeFailed):
    """
    The server refused the upgrade with an HTTP status (400, 401, 403, 404 ...).

    Attributes:
        status: the HTTP status code.
        reason: the response body (trimmed), or the status phrase when empty.
        headers: the response headers, names lower-cased.
    """

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers or {}
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        super().__init__(reason or phrase)
        self.args = (f"server rejected the connection: HTTP {status} {phrase}: {self.reason}",)


class FatalClose(FatalError):
    """
    The server closed an open connection with a code that means "do not come back".

    Attributes:
        code: the WebSocket close code (1008 policy violation, 1009 message too big ...).
        reason: the close reason the server sent (may be empty).
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"server closed the connection: code {code} {reason!r}")
        self.code = code
        self.reason = reason


class RetriesExhausted(StreamError):
    """
    The client gave up after ``max_retries`` consecutive failed reconnects.

    The last failure is chained as ``__cause__`` when it was an exception.

    Attributes:
        attempts: connection attempts made since the last healthy connection.
        last_error: description of the last failure.
    """

    def __init__(self, attempts: int, last_error: str) -> None:
        plural = "" if attempts == 1 else "s"
        super().__init__(f"gave up after {attempts} failed attempt{plural}; last: {last_error}")
        self.attempts = attempts
        self.last_error = last_error


class ActionRejected(QuotesError):
    """
    The server answered a filter change with an error frame; the stream goes on
    with the filter it had.

    Attributes:
        code: the server's machine-readable code (``invalid_ticker``,
            ``too_many_tickers``, ``forbidden``, ``unknown_action`` ...).
        message: the server's explanation.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"server refused the change: {code}: {message}")
        self.code = code
        self.message = message
