"""
The stream over Server-Sent Events: its pinned shapes, once, for every server.

``GET /sse/quotes`` (and ``/v1/sse/quotes``) takes the WebSocket endpoints' query
parameters and answers with ``text/event-stream``. Positions are always on: each
quote is one event, ``id: <epoch>:<seq>`` and ``data:`` the quote's JSON exactly as
the WebSocket sends it with ``seq=1``; with ``batch=1`` the quotes between two
control frames are one event whose ``data`` is the JSON array and whose ``id`` is
the last quote's position. Control frames are named events (``event: recovered``,
``event: error``) with the WebSocket's JSON as ``data``. A ``Last-Event-ID`` header
resumes exactly like ``since=`` and wins over it. A comment (``: keepalive``) goes out
whenever the stream was silent for :data:`KEEPALIVE_SECONDS`, and the first bytes
carry a ``retry:`` field (the client's first reconnection delay, :data:`RETRY`).

A stream the server ends (upstream lost past the grace period, shutdown, a slow
reader, an expired token) ends with :func:`closing`: an ``error`` event whose
``data`` carries the close code and reason a WebSocket client would have got, so a
client decides "reconnect or give up" by the same table for both transports.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from quotes_core.actions import with_position
from quotes_core.backoff import INITIAL_DELAY
from quotes_core.errors import ClientError
from quotes_core.history import StreamItem
from quotes_core.query import Position, StreamOptions
from quotes_core.rendering import Codec, Control, Element

__all__ = [
    "HEADERS",
    "KEEPALIVE",
    "KEEPALIVE_SECONDS",
    "MEDIA_TYPE",
    "RETRY",
    "SSE_PATHS",
    "EventCache",
    "closing",
    "events",
    "preface",
    "sse_options",
]

SSE_PATHS = ("/sse/quotes", "/v1/sse/quotes")
"""The two Server-Sent Events endpoints."""

MEDIA_TYPE = "text/event-stream"

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""Sent with every event stream besides its content type: no cache, and no buffering
by a proxy (nginx honours ``X-Accel-Buffering``)."""

KEEPALIVE = ": keepalive\n\n"
"""A comment: keeps proxies and the client's read timeout from closing a quiet stream."""

KEEPALIVE_SECONDS = 10.0
"""Longest silence before a keepalive (under the 15 s the shape promises)."""


RETRY = INITIAL_DELAY
"""Seconds an ``EventSource`` waits before reconnecting: the backoff's first delay."""


def preface(retry_seconds: float = RETRY) -> str:
    """The stream's first bytes: the ``retry:`` field (milliseconds) an ``EventSource``
    waits before reconnecting after the stream ends."""
    return f"retry: {max(0, round(retry_seconds * 1000))}\n\n"


def sse_options(options: StreamOptions, last_event_id: str | None) -> StreamOptions:
    """
    The options of an SSE stream: positions always on, and a ``Last-Event-ID``
    header resumes like ``since=`` (it wins when both are given).

    Raises:
        ClientError: the header is not ``<epoch>:<seq>``.
    """
    since = options.since
    if last_event_id is not None and last_event_id.strip():
        try:
            since = Position.parse(last_event_id.strip())
        except ClientError:
            raise ClientError(
                f"invalid Last-Event-ID {last_event_id[:80]!r}: expected <epoch>:<seq>"
            ) from None
    return dataclasses.replace(options, seq=True, since=since)


def closing(code: int, reason: str) -> str:
    """
    The last event of a stream the server ends: ``event: error`` with
    ``{"event":"error","code":"closed","close_code":<code>,"message":<reason>}``,
    ``code``/``reason`` being the WebSocket close code and reason of the same end
    (1001 shutdown, 1011 upstream lost, 1013 slow consumer, 1008 token expired).
    """
    data = json.dumps(
        {"event": "error", "code": "closed", "close_code": code, "message": reason},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return _event(data, name="error")


def _event(data: str, *, name: str | None = None, event_id: str | None = None) -> str:
    head = ""
    if name is not None:
        head += f"event: {name}\n"
    if event_id is not None:
        head += f"id: {event_id}\n"
    # canonical JSON has no newline; any other text is split as the format requires
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return head + body + "\n"


class EventCache:
    """
    The event text of recent quotes (``id:`` and ``data:``, one quote per event), shared
    by every SSE stream of a process: a quote that reaches a thousand streams is rendered
    once, as the WebSocket's plain frames are. Keyed by position (an epoch's seq is one
    quote); cleared whole when it holds ``limit`` events.
    """

    __slots__ = ("_texts", "limit")

    def __init__(self, limit: int = 8192) -> None:
        self._texts: dict[int, tuple[str, str]] = {}
        self.limit = limit

    def __len__(self) -> int:
        return len(self._texts)

    def event(self, item: StreamItem[Any], codec: Codec[Any, Any]) -> str:
        """The event of ``item`` (built and kept on first use)."""
        hit = self._texts.get(item.seq)
        if hit is not None and hit[0] == item.epoch:
            return hit[1]
        text = _quote_event(item, codec)
        texts = self._texts
        if len(texts) >= self.limit:
            texts.clear()
        texts[item.seq] = (item.epoch, text)
        return text


def _quote_event(item: StreamItem[Any], codec: Codec[Any, Any]) -> str:
    text = with_position(codec.text(item.payload), item.seq, item.epoch)
    return _event(text, event_id=f"{item.epoch}:{item.seq}")


def events(
    elements: Iterable[Element[Any]],
    options: StreamOptions,
    codec: Codec[Any, Any],
    cache: EventCache | None = None,
) -> tuple[list[str], int]:
    """
    The events of ``elements`` for an SSE client with ``options`` (see the module
    docs), and how many quotes they carry; a quote's event comes from ``cache`` when
    one is given (the same text, built once per process).
    """
    out: list[str] = []
    group: list[str] = []
    last_id = ""
    quotes = 0
    batch = options.batch
    for e in elements:
        if isinstance(e, Control):
            if group:
                out.append(_event("[" + ",".join(group) + "]", event_id=last_id))
                group = []
            name = json.loads(e.text).get("event", "message")
            out.append(_event(e.text, name=str(name)))
            continue
        quotes += 1
        if not isinstance(e, StreamItem):
            raise TypeError("an SSE stream's quotes carry their position (open it with seq)")
        if batch:
            group.append(with_position(codec.text(e.payload), e.seq, e.epoch))
            last_id = f"{e.epoch}:{e.seq}"
        elif cache is not None:
            out.append(cache.event(e, codec))
        else:
            out.append(_quote_event(e, codec))
    if group:
        out.append(_event("[" + ",".join(group) + "]", event_id=last_id))
    return out, quotes
