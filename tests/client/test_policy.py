"""The retry-or-give-up table, checked without any network."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHeaderValue,
    InvalidMessage,
    InvalidStatus,
)
from websockets.frames import Close
from websockets.http11 import Response

from quotes_client import FatalClose, HandshakeFailed, HandshakeRejected
from quotes_client.policy import classify_close, classify_connect_error, parse_retry_after

NOW = 1_770_000_000.0


def closed_by_server(code: int, reason: str = "") -> ConnectionClosed:
    frame = Close(code, reason)
    return ConnectionClosed(frame, frame, rcvd_then_sent=True)


def rejected(status: int, body: bytes = b"", **headers: str) -> InvalidStatus:
    hdrs = Headers({k.replace("_", "-"): v for k, v in headers.items()})
    return InvalidStatus(Response(status, "Phrase", hdrs, body))


@pytest.mark.parametrize("code", [1000, 1001, 1006, 1011, 1012, 1013, 1014, 3000, 4000])
def test_retryable_close_codes(code: int) -> None:
    """Shutdown, restart, upstream-down, slow-consumer and unknown codes are retried."""
    outcome = classify_close(closed_by_server(code, "bye"))
    assert not outcome.fatal
    assert outcome.code == code
    assert outcome.by_server


@pytest.mark.parametrize("code", [1002, 1003, 1007, 1008, 1009, 1010])
def test_fatal_close_codes(code: int) -> None:
    """Policy violation, message too big and protocol mismatches end the stream."""
    outcome = classify_close(closed_by_server(code, "policy"))
    assert isinstance(outcome.error, FatalClose)
    assert (outcome.error.code, outcome.error.reason) == (code, "policy")


def test_an_expired_token_is_renewed_at_once_only_with_a_provider() -> None:
    expired = closed_by_server(1008, "Token expired")
    assert classify_close(expired).fatal  # a static token cannot be renewed
    renewed = classify_close(expired, renews_token=True)
    assert not renewed.fatal
    assert renewed.at_once
    flood = classify_close(closed_by_server(1008, "Policy violation: too many messages"), True)
    assert flood.fatal  # only the expiry is fixed by a new token
    assert not flood.at_once


def test_close_started_by_the_client_is_retried() -> None:
    """A close this client sent first (ping timeout, oversized frame) is retried."""
    sent = Close(1009, "frame too big")
    outcome = classify_close(ConnectionClosed(None, sent))
    assert not outcome.fatal
    assert not outcome.by_server
    assert outcome.code == 1009


def test_connection_lost_without_close_frame_is_1006() -> None:
    """No close frame at all counts as abnormal closure (1006) and is retried."""
    outcome = classify_close(ConnectionClosed(None, None))
    assert (outcome.code, outcome.fatal) == (1006, False)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_client_error_statuses_are_fatal(status: int) -> None:
    """4xx answers to the handshake raise HandshakeRejected with the status and body."""
    outcome = classify_connect_error(rejected(status, b"invalid ticker 'X;'\n"), NOW)
    assert isinstance(outcome.error, HandshakeRejected)
    assert outcome.error.status == status
    assert outcome.error.reason == "invalid ticker 'X;'"
    assert f"HTTP {status}" in str(outcome.error)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
def test_server_error_statuses_are_retried(status: int) -> None:
    """5xx (and 408/429) answers are retried."""
    outcome = classify_connect_error(rejected(status), NOW)
    assert not outcome.fatal
    assert outcome.status == status


def test_retry_after_is_read_from_a_503() -> None:
    """A 503's Retry-After header becomes the outcome's ``retry_after``."""
    outcome = classify_connect_error(rejected(503, b"redis down", Retry_After="7"), NOW)
    assert outcome.retry_after == 7.0
    assert not outcome.fatal


def test_other_statuses_are_fatal() -> None:
    """A 200 answer means the URL is not a WebSocket endpoint: fatal."""
    outcome = classify_connect_error(rejected(200, b"<html>"), NOW)
    assert isinstance(outcome.error, HandshakeRejected)


@pytest.mark.parametrize(
    "exc",
    [ConnectionRefusedError(111, "refused"), ConnectionResetError(), TimeoutError("handshake")],
)
def test_network_errors_are_retried(exc: Exception) -> None:
    """Refused, reset and timed-out connections are retried."""
    assert not classify_connect_error(exc, NOW).fatal


def test_hang_up_during_handshake_is_retried() -> None:
    """A server that hangs up mid-handshake (EOF) is a network failure: retried."""
    exc = InvalidMessage("did not receive a valid HTTP response")
    exc.__cause__ = EOFError("connection closed")
    assert not classify_connect_error(exc, NOW).fatal


def test_broken_handshake_is_fatal() -> None:
    """A handshake the client cannot accept (bad headers) raises HandshakeFailed."""
    outcome = classify_connect_error(InvalidHeaderValue("Upgrade", "h2c"), NOW)
    assert isinstance(outcome.error, HandshakeFailed)
    assert "Upgrade" in outcome.error.reason


def test_parse_retry_after_forms() -> None:
    """Retry-After is read as seconds or as an HTTP date; garbage is ignored."""
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after(" 12 ", NOW) == 12.0
    assert parse_retry_after("soon", NOW) is None
    date = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
    assert parse_retry_after(date, NOW) == pytest.approx(30.0)
    past = format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True)
    assert parse_retry_after(past, NOW) == 0.0
