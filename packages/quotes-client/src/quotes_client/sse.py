"""
The stream over Server-Sent Events, client side: for networks that break the WebSocket
upgrade but let plain HTTP streaming through.

An ``http://`` or ``https://`` URL of the server's SSE endpoint (``/sse/quotes``)
makes :class:`~quotes_client.QuotesClient` read it with ``httpx`` instead of opening a
WebSocket. Each event becomes the frame the WebSocket would have sent (the quote's JSON
with its position, a batch's array, a ``recovered`` control frame), so the client's
engine reads both transports alike; the stream's closing ``error`` event carries the
close code a WebSocket client would have got and is decided by the same table
(:func:`~quotes_client.policy.classify_server_close`). A keepalive comment is
liveness without a message (the staleness watchdog sees it). The server's ``retry:``
is not used: the client's own backoff decides when to reconnect.

:class:`EventDecoder` parses the ``text/event-stream`` format line by line, as the
HTML standard says (``httpx-sse`` hides comment lines, which the keepalive is).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from quotes_client.policy import HttpRejected, Outcome, classify_server_close

__all__ = [
    "COMMENT",
    "EventDecoder",
    "NotAnEventStream",
    "SseConnection",
    "SseEnded",
    "SseEvent",
    "open_sse",
]

_REJECTION_BODY_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event: its type (``"message"`` by default), data and last id."""

    event: str
    data: str
    id: str


COMMENT = object()
"""What :meth:`EventDecoder.line` returns for a comment line (``: keepalive``)."""


class EventDecoder:
    """The ``text/event-stream`` parser of the HTML standard, one line at a time."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self.last_id = ""
        """The last event id seen (it carries over to later events, as the standard says)."""
        self.retry: int | None = None
        """The last ``retry:`` field, in milliseconds."""

    def line(self, line: str) -> SseEvent | object | None:
        """
        Feed one line (without its end of line): the event a blank line dispatches,
        :data:`COMMENT` for a comment, else ``None``.
        """
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return COMMENT
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return SseEvent(event or "message", "\n".join(data), self.last_id)


class NotAnEventStream(Exception):
    """The URL answered 200 with something other than ``text/event-stream``."""


class SseEnded(Exception):
    """
    An open SSE stream ended: with the server's closing event (``code`` and ``reason``
    as a WebSocket close), or without one (``code`` ``None``: the network or the server
    dropped it).
    """

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class SseConnection:
    """
    One open SSE response (a :class:`~quotes_client.transport.Connection`): its events
    as the WebSocket's frames.
    """

    one_way = True
    closed_errors: tuple[type[BaseException], ...] = (SseEnded,)

    def __init__(self, client: httpx.AsyncClient, response: httpx.Response) -> None:
        self._client = client
        self._response = response
        self._lines: AsyncIterator[str] = response.aiter_lines()
        self._decoder = EventDecoder()
        self.keepalives = 0
        """Comment lines received (the server's keepalive)."""

    async def recv(self) -> bytes | None:
        """
        The next frame, or ``None`` for a keepalive comment (liveness, no message).

        Raises:
            SseEnded: the stream ended (its closing event, or a lost connection).
        """
        decoder = self._decoder
        while True:
            try:
                line = await anext(self._lines)
            except StopAsyncIteration:
                raise SseEnded("the stream ended without a closing event") from None
            except httpx.HTTPError as exc:
                raise SseEnded(f"connection lost: {type(exc).__name__}: {exc}") from exc
            item = decoder.line(line)
            if item is None:
                continue
            if item is COMMENT:
                self.keepalives += 1
                return None
            assert isinstance(item, SseEvent)
            if item.event == "error":
                _closing(item.data)
            return item.data.encode()

    async def send(self, text: str) -> None:
        raise NotImplementedError("an SSE stream is one-way: change tickers by reconnecting")

    def ended(self, exc: BaseException, renews_token: bool) -> Outcome:
        """How the stream ended, decided like a WebSocket's close."""
        assert isinstance(exc, SseEnded)
        if exc.code is None:
            return Outcome(exc.reason, code=1006)
        return classify_server_close(exc.code, exc.reason, renews_token)

    async def close(self, reason: str) -> None:
        """Stop reading and close the HTTP connection (there is no closing handshake)."""
        try:
            await self._response.aclose()
        finally:
            await self._client.aclose()


def _closing(data: str) -> None:
    """Raise :class:`SseEnded` when ``data`` is the stream's closing ``error`` event."""
    try:
        obj: Any = json.loads(data)
    except ValueError:
        return  # not ours to judge here: the engine reports what it cannot read
    if isinstance(obj, dict) and obj.get("code") == "closed":
        code = obj.get("close_code")
        if isinstance(code, int) and not isinstance(code, bool):
            raise SseEnded(str(obj.get("message", "")), code)


async def open_sse(
    url: str,
    headers: Mapping[str, str],
    *,
    open_timeout: float | None,
    client_options: Mapping[str, Any] | None = None,
) -> SseConnection:
    """
    ``GET`` the SSE endpoint at ``url`` and return the open stream.

    Args:
        url: an ``http://`` or ``https://`` URL (``since=`` already in it when resuming).
        headers: request headers (``Authorization``, ``Origin`` ...).
        open_timeout: seconds allowed until the response's headers; ``None`` waits forever.
        client_options: other keyword arguments for ``httpx.AsyncClient`` (``verify``,
            ``proxy``, ``cert`` ...).

    Raises:
        HttpRejected: an HTTP status other than 200 (the policy decides).
        NotAnEventStream: 200, but not ``text/event-stream``.
        ConnectionError: the connection failed (retried).
        TimeoutError: no response within ``open_timeout``.
    """
    options: dict[str, Any] = {"timeout": httpx.Timeout(open_timeout, read=None)}
    options.update(client_options or {})
    client = httpx.AsyncClient(**options)
    request = client.build_request(
        "GET",
        url,
        headers={"Accept": "text/event-stream", "Cache-Control": "no-cache", **headers},
    )
    try:
        async with asyncio.timeout(open_timeout):
            response = await client.send(request, stream=True)
    except BaseException as exc:
        await client.aclose()
        if isinstance(exc, httpx.TimeoutException):
            raise TimeoutError(f"no response within {open_timeout:g} s") from exc
        if isinstance(exc, httpx.TransportError):
            raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
        raise
    try:
        if response.status_code != 200:
            body = await _start_of(response)
            raise HttpRejected(
                response.status_code,
                body,
                response.reason_phrase,
                {k.lower(): v for k, v in response.headers.items()},
            )
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "text/event-stream":
            raise NotAnEventStream(f"not an event stream: Content-Type {media or 'missing'!r}")
    except BaseException:
        await response.aclose()
        await client.aclose()
        raise
    return SseConnection(client, response)


async def _start_of(response: httpx.Response) -> bytes:
    """The first bytes of a refusal's body (its reason), whatever its length."""
    body = b""
    try:
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= _REJECTION_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass
    return body[:_REJECTION_BODY_LIMIT]
