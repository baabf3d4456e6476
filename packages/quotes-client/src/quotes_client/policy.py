"""
Retry or give up: a pure decision about each failure, as tables.

The reconnect loop asks :func:`classify_connect_error` when an attempt to open a
connection fails and :func:`classify_close` when an open connection ends. Both
return an :class:`Outcome`; ``outcome.error`` is set only when the failure is
fatal. No I/O happens here, so the tables are tested on their own.

| failure | verdict | note |
|---|---|---|
| connection refused / reset, other ``OSError`` | retry | |
| handshake or connect timeout | retry | ``open_timeout`` |
| HTTP 5xx (500, 502, 503, 504 ...) | retry | ``Retry-After`` honoured |
| HTTP 408, 425, 429 | retry | ``Retry-After`` honoured |
| HTTP 400, 401, 403, 404, other 4xx | fatal | :class:`HandshakeRejected` |
| other HTTP status (1xx, 2xx, 3xx) | fatal | not a WebSocket endpoint |
| malformed handshake response | fatal | :class:`HandshakeFailed` |
| close 1000 from the server | retry | the caller did not ask to stop |
| close 1001, 1005, 1006, 1011-1014 | retry | shutdown, Redis down, slow consumer |
| close 1008 "Token expired", with a token provider | retry at once | a new token |
| close 1008, 1009 | fatal | :class:`FatalClose` |
| close 1002, 1003, 1007, 1010 | fatal | protocol mismatch |
| any other close code (3000-4999 ...) | retry | |
| close started by this client | retry | ping timeout, stale stream |

Over Server-Sent Events (an ``http(s)://`` URL) the same tables apply: the request's
HTTP status is the handshake's (:func:`classify_rejection`), and the stream's closing
``error`` event carries the close code a WebSocket client would have got
(:func:`classify_server_close`); a response that ends without it is a 1006.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
)

from quotes_client.errors import FatalClose, FatalError, HandshakeFailed, HandshakeRejected
from quotes_core import TOKEN_EXPIRED_REASON

__all__ = [
    "FATAL_CLOSE_CODES",
    "RETRYABLE_HTTP_4XX",
    "HttpRejected",
    "Outcome",
    "classify_close",
    "classify_connect_error",
    "classify_rejection",
    "classify_server_close",
    "close_is_fatal",
    "parse_retry_after",
    "status_is_fatal",
]

FATAL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})
"""Close codes from the server after which the client does not reconnect."""

RETRYABLE_HTTP_4XX = frozenset({408, 425, 429})
"""4xx statuses that mean "try again later" rather than "your request is wrong"."""

_MAX_REASON = 300


class HttpRejected(Exception):
    """An SSE request answered with an HTTP status other than 200 (a refused handshake)."""

    def __init__(
        self, status: int, body: bytes, reason_phrase: str, headers: Mapping[str, str]
    ) -> None:
        super().__init__(f"HTTP {status} {reason_phrase}")
        self.status = status
        self.body = body
        self.reason_phrase = reason_phrase
        self.headers = dict(headers)
        """Names in lower case."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """
    What ended a connection (or an attempt at one) and whether to retry.

    Attributes:
        reason: human-readable description.
        code: WebSocket close code, when an open connection ended.
        status: HTTP status, when the handshake was answered with one.
        retry_after: seconds the server asked us to wait (``Retry-After``).
        by_server: the server (or the network) ended it, not this client.
        error: the exception to raise when the failure is fatal, else ``None``.
    """

    reason: str
    code: int | None = None
    status: int | None = None
    retry_after: float | None = None
    by_server: bool = True
    error: FatalError | None = None
    at_once: bool = False
    """Reconnect without a backoff delay (a new token fixes what ended it)."""

    @property
    def fatal(self) -> bool:
        """True when the client must stop instead of reconnecting."""
        return self.error is not None


def close_is_fatal(code: int) -> bool:
    """Tell whether a close code received from the server ends the stream."""
    return code in FATAL_CLOSE_CODES


def status_is_fatal(status: int) -> bool:
    """Tell whether an HTTP status answering the handshake ends the stream."""
    return status < 500 and status not in RETRYABLE_HTTP_4XX


def parse_retry_after(value: str | None, now: float) -> float | None:
    """
    Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date).

    Args:
        value: the raw header value, or ``None`` when absent.
        now: the current POSIX time, to turn a date into a delay.

    Returns:
        A non-negative delay, or ``None`` when the header is absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def _trim(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."


def _rejected(exc: InvalidStatus, now: float) -> Outcome:
    response = exc.response
    headers = {name.lower(): value for name, value in response.headers.raw_items()}
    return classify_rejection(
        response.status_code, bytes(response.body or b""), response.reason_phrase, headers, now
    )


def classify_rejection(
    status: int, body: bytes, reason_phrase: str, headers: Mapping[str, str], now: float
) -> Outcome:
    """
    Decide about a connection refused with an HTTP status (WebSocket handshake or SSE request).

    Args:
        status: the HTTP status.
        body: the response's body (the server's reason, as text/plain).
        reason_phrase: the status line's phrase, when the body is empty.
        headers: the response's headers, names in lower case.
        now: the current POSIX time (for ``Retry-After`` dates).
    """
    reason = _trim(body.decode("utf-8", "replace")) or reason_phrase
    headers = dict(headers)
    if status_is_fatal(status):
        error = HandshakeRejected(status, reason, headers)
        return Outcome(str(error), status=status, error=error)
    retry_after = parse_retry_after(headers.get("retry-after"), now)
    return Outcome(f"HTTP {status}: {reason}", status=status, retry_after=retry_after)


def classify_connect_error(exc: Exception, now: float) -> Outcome:
    """
    Decide about a failed attempt to open a connection.

    Args:
        exc: what ``websockets.asyncio.client.connect`` (or the SSE request) raised.
        now: the current POSIX time (for ``Retry-After`` dates).
    """
    if isinstance(exc, InvalidStatus):
        return _rejected(exc, now)
    if isinstance(exc, HttpRejected):
        return classify_rejection(exc.status, exc.body, exc.reason_phrase, exc.headers, now)
    if isinstance(exc, TimeoutError):
        return Outcome(f"timed out: {exc}")
    if isinstance(exc, OSError):
        return Outcome(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, InvalidMessage) and isinstance(exc.__cause__, EOFError):
        # the server hung up in the middle of the handshake: a network failure
        return Outcome(f"connection lost during the handshake: {exc}")
    if isinstance(exc, InvalidHandshake):
        error = HandshakeFailed(_trim(f"invalid handshake: {exc}"))
        return Outcome(str(error), error=error)
    error = HandshakeFailed(_trim(f"cannot connect: {type(exc).__name__}: {exc}"))
    return Outcome(str(error), error=error)


def classify_close(exc: ConnectionClosed, renews_token: bool = False) -> Outcome:
    """
    Decide about an open connection that ended.

    ``renews_token``: the client gets a fresh token for each connection (a token
    provider), so the server's ``1008 "Token expired"`` is a reason to reconnect at
    once rather than to stop.

    The close frame that matters is the one that started the closing handshake:
    when the server sent it, its code decides; when this client sent it first
    (keepalive ping timeout, an oversized or undecodable frame, the staleness
    watchdog) the client reconnects. No close frame at all is 1006 (abnormal).
    """
    rcvd, sent = exc.rcvd, exc.sent
    if rcvd is not None and (sent is None or exc.rcvd_then_sent):
        return classify_server_close(rcvd.code, rcvd.reason, renews_token)
    if sent is not None:
        return Outcome(
            f"closed by the client: {sent.code} {sent.reason!r}", code=sent.code, by_server=False
        )
    return Outcome("connection lost without a close frame", code=1006)


def classify_server_close(code: int, reason: str, renews_token: bool = False) -> Outcome:
    """
    Decide about a stream the server ended with ``code`` and ``reason`` (a WebSocket close
    frame, or the closing ``error`` event of an SSE stream); see :func:`classify_close`.
    """
    if renews_token and code == 1008 and reason == TOKEN_EXPIRED_REASON:
        return Outcome(f"closed by the server: {code} {reason!r}", code=code, at_once=True)
    if close_is_fatal(code):
        error = FatalClose(code, reason)
        return Outcome(str(error), code=code, error=error)
    return Outcome(f"closed by the server: {code} {reason!r}", code=code)
