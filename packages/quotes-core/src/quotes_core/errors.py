"""
Typed errors of the quote stream, split by whose fault they are.

Every error carries the hint a caller needs to act on it: an HTTP status for a
handshake rejection or a WebSocket close code for an established connection::

    QuotesError                      base of everything raised on purpose
    ├── UpstreamError                the upstream streamer's fault (data in Redis)
    │   └── InvalidQuote             a published message is not a valid quote (.reason)
    └── ClientError                  the WebSocket client's fault (HTTP 400 at the handshake)
        ├── InvalidTickers           the ``tickers`` query value cannot be parsed
        └── ActionError              a client action is invalid (.code; an error frame, not a close)

Upstream errors never close a client connection: the server drops the message,
logs it and counts it by ``reason``. Client errors reject the handshake with
``http_status`` and a human-readable message.
"""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = [
    "ActionError",
    "ActionErrorCode",
    "ClientError",
    "InvalidQuote",
    "InvalidQuoteReason",
    "InvalidTickers",
    "QuotesError",
    "UpstreamError",
]

InvalidQuoteReason = Literal["json", "encoding", "schema", "ticker", "non_finite", "too_large"]
"""Why an upstream message was rejected; used as the ``reason`` label in metrics."""

ActionErrorCode = Literal[
    "invalid_json",
    "invalid_message",
    "unknown_action",
    "invalid_ticker",
    "too_many_tickers",
    "forbidden",
]
"""The ``code`` of an ``error`` control frame."""


class QuotesError(Exception):
    """
    Base class of every error the quotes packages raise on purpose.
    """

    http_status: ClassVar[int | None] = None
    """HTTP status to answer a handshake with, when the error happens there."""

    close_code: ClassVar[int | None] = None
    """WebSocket close code to use, when the error ends an open connection."""


class UpstreamError(QuotesError):
    """
    The upstream streamer published something we cannot use.
    """


class InvalidQuote(UpstreamError):
    """
    A raw upstream message is not a valid quote.

    Attributes:
        reason: short machine-readable cause, one of :data:`InvalidQuoteReason`.
        detail: human-readable explanation (safe to log; never contains the whole payload).
    """

    def __init__(self, reason: InvalidQuoteReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: InvalidQuoteReason = reason
        self.detail = detail


class ClientError(QuotesError):
    """
    The WebSocket client asked for something invalid.
    """

    http_status: ClassVar[int | None] = 400


class InvalidTickers(ClientError):
    """
    The ``tickers`` query parameter cannot be parsed; ``str(error)`` says why.
    """


class ActionError(ClientError):
    """
    A client's text message cannot be acted on; answered with an ``error`` frame
    (the connection stays open).

    Attributes:
        code: machine-readable cause, one of :data:`ActionErrorCode`.
    """

    def __init__(self, code: ActionErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ActionErrorCode = code
