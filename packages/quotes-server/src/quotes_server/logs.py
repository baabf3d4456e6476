"""
Logging helpers: client text made safe for one log line, and a rate limit for
messages that can arrive in floods.

Anything a client controls (a message, a ticker list, a header, a close reason,
the request path uvicorn logs) may hold newlines, terminal escapes or megabytes.
:func:`safe` renders such a string as one bounded, escaped line, and
:class:`SafeLogFilter` applies it to every string argument of every record on the
server's handlers, so uvicorn's own lines are covered too; it also blanks the
value of an ``access_token`` query parameter wherever it appears.
:func:`install_safe_logging` puts that filter in place; ``create_app`` calls it,
so the redaction holds however the app is started (``quotes-server``, a plain
``uvicorn ... --factory``, or an embedding program).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

__all__ = [
    "SAFE_LOGGERS",
    "RateLimitedLog",
    "SafeLogFilter",
    "install_safe_logging",
    "redact",
    "safe",
    "truncate",
]

SAFE_LIMIT = 200
"""Characters of a client-supplied string kept in a log line."""

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidi
# controls (marks, embeddings, overrides, isolates) that make a terminal or a log viewer
# show text in another order than it was written (CVE-2021-42574, "Trojan Source")
_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
# A credential's value runs to the next delimiter or to one of our own escapes, so a
# line already made safe (``access_token=[redacted]\x0aFAKE``) redacts to itself.
_NOT_ESCAPE = r"(?!\\x[0-9a-f]{2})"
_TOKEN = re.compile(rf"(access_token=)(?:{_NOT_ESCAPE}[^&\s\"'])*", re.IGNORECASE)
_BEARER = re.compile(rf"(bearer\s+)(?:{_NOT_ESCAPE}\S)+", re.IGNORECASE)


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


_PIECE = re.compile(r"\[redacted\]|\\x[0-9a-f]{2,4}|.", re.DOTALL)
"""What a cut keeps or drops whole: a redaction marker, an escape, or one character."""
_DANGLING = re.compile(r"(access_token=|bearer\s*)\Z", re.IGNORECASE)


def redact(text: str) -> str:
    """Blank the values of ``access_token`` parameters and bearer credentials."""
    if "access_token" in text.lower():
        text = _TOKEN.sub(r"\1[redacted]", text)
    if "bearer" in text.lower():
        text = _BEARER.sub(r"\1[redacted]", text)
    return text


def safe(text: str, limit: int = SAFE_LIMIT) -> str:
    """
    One log-safe line for a client-supplied string: tokens redacted, control
    characters (newlines included) escaped as ``\\xNN``, at most ``limit``
    characters long, escapes and the `` ... (N chars)`` marker of a cut included
    (an escape is never split). Idempotent, so a string made safe at the call
    site passes the log filter, whose limit is larger, unchanged.
    """
    head = text[:limit]
    # Redacting before escaping catches a credential after any whitespace.
    out = _UNSAFE.sub(_escape, redact(head))
    if len(text) <= limit and len(out) <= limit:
        return out
    # The marker starts with a space, so a kept ``[redacted]`` still ends at a delimiter.
    suffix = f" ... ({len(text)} chars)"
    budget = limit - len(suffix)
    kept: list[str] = []
    used = 0
    for piece in _PIECE.findall(out):
        if used + len(piece) > budget:
            break
        kept.append(piece)
        used += len(piece)
    # A cut right after ``access_token=`` or ``bearer`` would make the marker look
    # like a credential to the next redaction: drop the dangling prefix.
    return _DANGLING.sub("", "".join(kept)) + suffix


def truncate(raw: bytes | str, limit: int = SAFE_LIMIT) -> str:
    """A printable, bounded rendering of a payload for logs (its ``repr``, cut)."""
    text = repr(raw[:limit])
    return text + f"... ({len(raw)} bytes)" if len(raw) > limit else text


class SafeLogFilter(logging.Filter):
    """
    Make every string argument of a record log-safe (see :func:`safe`).

    Installed on the server's log handlers, so it covers uvicorn's records (which
    carry the request path with its query string) as well as ours. The format
    string itself is ours and left alone; a record without arguments has its
    message redacted only.
    """

    def __init__(self, name: str = "", limit: int = 1000) -> None:
        super().__init__(name)
        self.limit = limit

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(safe(a, self.limit) if isinstance(a, str) else a for a in args)
        elif not args and isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


SAFE_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "quotes_server")
"""Loggers whose handlers get :class:`SafeLogFilter` (``""`` is the root logger)."""


def install_safe_logging(level: str = "info") -> None:
    """
    Put a :class:`SafeLogFilter` on every handler of :data:`SAFE_LOGGERS` and on
    logging's last-resort handler, once per handler (idempotent).

    A filter on a logger would miss records propagated from its children, so the
    filters go on handlers. uvicorn configures its loggers before it calls the app
    factory, so their handlers exist by then; a handler added later is not covered.
    When no handler would print the ``quotes_server`` logger's records (a plain
    ``uvicorn`` run configures only its own loggers), that logger writes through
    uvicorn's handlers at ``level``, as it does under ``quotes-server``.

    Args:
        level: the ``quotes_server`` logger's level when this adopts handlers for it
            (a :class:`~quotes_server.settings.Settings` ``log_level``).
    """
    server_log = logging.getLogger("quotes_server")
    uvicorn_handlers = logging.getLogger("uvicorn").handlers
    if not server_log.hasHandlers() and uvicorn_handlers:
        for handler in uvicorn_handlers:
            server_log.addHandler(handler)
        server_log.propagate = False
        if server_log.level == logging.NOTSET:
            server_log.setLevel("DEBUG" if level == "trace" else level.upper())
    handlers = [h for name in SAFE_LOGGERS for h in logging.getLogger(name).handlers]
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, SafeLogFilter) for f in handler.filters):
            handler.addFilter(SafeLogFilter())


class RateLimitedLog:
    """
    Log at most ``burst`` records per ``period`` seconds; count the rest and say
    how many were suppressed when the next period starts.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        period: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self.clock = clock
        self._window = clock()
        self._count = 0
        self.suppressed = 0

    def __call__(self, level: int, msg: str, *args: object, exc_info: bool = False) -> None:
        now = self.clock()
        if now - self._window >= self.period:
            if self.suppressed:
                self.logger.log(level, "(%d similar messages suppressed)", self.suppressed)
            self._window = now
            self._count = 0
            self.suppressed = 0
        if self._count < self.burst:
            self._count += 1
            self.logger.log(level, msg, *args, exc_info=exc_info)
        else:
            self.suppressed += 1
