"""Client text is made log-safe: one line, bounded, tokens blanked."""

from __future__ import annotations

import logging

from hypothesis import given
from hypothesis import strategies as st

from quotes_server.logs import SafeLogFilter, redact, safe


@given(st.text())
def test_safe_text_is_one_bounded_line(text: str) -> None:
    """Whatever a client sends, the result has no line break and a bounded length."""
    out = safe(text, 50)
    assert len(out.splitlines()) <= 1
    assert "\n" not in out
    assert "\r" not in out
    assert len(out) <= 50 * 4 + 30


@given(st.text(max_size=100))
def test_safe_is_idempotent(text: str) -> None:
    """A string made safe at the call site passes the log filter unchanged."""
    assert safe(safe(text)) == safe(text)


def test_escapes_and_redaction() -> None:
    """Newlines become ``\\x0a``; token values in query strings and headers are blanked."""
    assert safe("a\nb\rc\u2028d") == "a\\x0ab\\x0dc\\x2028d"
    assert redact("/ws?tickers=A&access_token=s3cr3t&x=1") == (
        "/ws?tickers=A&access_token=[redacted]&x=1"
    )
    assert redact("Authorization: Bearer abc.def") == "Authorization: Bearer [redacted]"


def test_filter_rewrites_string_arguments() -> None:
    """The handler filter escapes every string argument of a record, other types untouched."""
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" %d',
        ("1.2.3.4", "/ws?access_token=t\nFAKE", 403),
        None,
    )
    assert SafeLogFilter().filter(record)
    assert record.getMessage() == '1.2.3.4 - "WebSocket /ws?access_token=[redacted]\\x0aFAKE" 403'


BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_bidi_controls_are_escaped() -> None:
    """A right-to-left override cannot reorder a log line: it becomes ``\\x202e``."""
    assert safe("user\u202eexe.txt") == "user\\x202eexe.txt"
    assert safe("a\u2066b\u2069c\u200fd\u061ce") == "a\\x2066b\\x2069c\\x200fd\\x61ce"


@given(st.text(alphabet=st.sampled_from(BIDI_CONTROLS + "ab\u05d0"), max_size=50))
def test_no_bidi_control_survives(text: str) -> None:
    """Whatever mix of bidi controls a client sends, none is left in the log line."""
    out = safe(text)
    assert not set(out) & set(BIDI_CONTROLS)
    assert safe(out) == out
