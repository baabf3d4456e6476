"""Client text is made log-safe: one line, bounded, tokens blanked."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quotes_server.logs import SAFE_LOGGERS, SafeLogFilter, install_safe_logging, redact, safe


@given(st.text())
def test_safe_text_is_one_bounded_line(text: str) -> None:
    """Whatever a client sends, the result has no line break and a bounded length."""
    out = safe(text, 50)
    assert len(out.splitlines()) <= 1
    assert "\n" not in out
    assert "\r" not in out
    assert len(out) <= 50


SAFE_ALPHABET = st.sampled_from(
    ["a", " ", "=", "\n", "\u202e", "\x85", "access_token=", "Bearer ", "[redacted]", "&"]
)


@given(st.text() | st.lists(SAFE_ALPHABET, max_size=120).map("".join), st.integers(30, 300))
def test_safe_is_idempotent(text: str, limit: int) -> None:
    """
    Made safe once, a string is unchanged by another pass at the same limit or by
    the log filter's larger one, even when escapes made it longer than the limit.
    """
    out = safe(text, limit)
    assert len(out) <= limit
    assert safe(out, limit) == out
    record = logging.LogRecord("quotes_server", logging.INFO, __file__, 1, "%s", (out,), None)
    assert SafeLogFilter(limit=1000).filter(record)
    assert record.args == (out,)


def test_a_cut_keeps_escapes_and_redactions_whole() -> None:
    """The cut never leaves half an escape, half a marker or a bare token prefix."""
    assert safe("\u202e" * 40, 40) == "\\x202e" * 4 + " ... (40 chars)"
    assert safe("x" * 10 + "access_token=abcdef" + "y" * 40, 40) == "x" * 10 + " ... (69 chars)"
    cut = safe("x" * 20 + "access_token=abc" + "y" * 40, 60)
    assert "access_token=[redacted]" in cut
    assert cut.endswith(" ... (76 chars)")


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


@pytest.fixture
def saved_logging() -> Iterator[None]:
    """The loggers :func:`install_safe_logging` touches, restored after the test."""
    loggers = [logging.getLogger(name) for name in SAFE_LOGGERS]
    saved = [(lg, lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    last_resort_filters = logging.lastResort.filters[:] if logging.lastResort else []
    yield
    for lg, handlers, level, propagate in saved:
        lg.handlers, lg.level, lg.propagate = handlers, level, propagate
    if logging.lastResort is not None:
        logging.lastResort.filters = last_resort_filters


def _as_uvicorn_leaves_it() -> io.StringIO:
    """
    uvicorn's loggers with a stream handler, nothing on ours or the root (set in the
    test itself: pytest adds its capture handlers to loggers when the test starts).
    """
    out = io.StringIO()
    for name in SAFE_LOGGERS:
        logging.getLogger(name).handlers = []
    for name in ("uvicorn", "uvicorn.access"):
        logging.getLogger(name).addHandler(logging.StreamHandler(out))
        logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger("uvicorn.access").propagate = False
    logging.getLogger("quotes_server").setLevel(logging.NOTSET)
    return out


@pytest.mark.usefixtures("saved_logging")
def test_install_safe_logging_is_idempotent_and_covers_our_logger() -> None:
    """Installed twice, each handler has one filter; our logger prints through uvicorn's."""
    out = _as_uvicorn_leaves_it()
    install_safe_logging("info")
    install_safe_logging("debug")
    access = logging.getLogger("uvicorn.access")
    for handler in [*access.handlers, *logging.getLogger("uvicorn").handlers]:
        assert sum(isinstance(f, SafeLogFilter) for f in handler.filters) == 1
    access.info('%s - "GET %s HTTP/1.1" %d', "1.2.3.4", "/health?access_token=s3cr3t", 200)
    logging.getLogger("quotes_server.app").info("client %s sent %s", "c1", "access_token=t0k")
    assert out.getvalue().splitlines() == [
        '1.2.3.4 - "GET /health?access_token=[redacted] HTTP/1.1" 200',
        "client c1 sent access_token=[redacted]",
    ]
    assert logging.getLogger("quotes_server").level == logging.INFO


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
