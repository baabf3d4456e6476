"""
uvicorn's httptools HTTP protocol with limits on the request head.

uvicorn parses every request (WebSocket upgrades included) with httptools, which
has no limit of its own on the request line or the headers and no deadline for
a request to arrive: a peer that sends half a request, or an endless header, keeps
its connection (and a growing buffer) forever. This protocol adds, per
connection (:class:`~quotes_server.limits.ProtocolLimits`):

- a **handshake timeout**: a request head not complete within
  ``handshake_timeout`` seconds of the TCP accept (or of its first byte, on a
  kept-alive connection) gets ``408`` and the connection is closed; a connection
  that sent nothing at all is just closed;
- a cap on the **request target** (``414``), on each **header** and on the number
  of headers (``431``), and on the **whole head** (``431``), checked before the
  bytes are buffered.

Every rejection is a complete HTTP response followed by a close, so any client
(browser, ``websockets``, curl) sees a real status at once.

Every scope it hands the app, WebSocket upgrades included, carries the
:data:`~quotes_server.guard.SERVED_BY_EXTENSION` mark, so the app can refuse to
serve when uvicorn runs without our protocols or with another proxy rule
(:mod:`quotes_server.guard`).
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from quotes_server.guard import SERVED_BY_EXTENSION, ServedBy
from quotes_server.limits import LIMITS_STATE_KEY, ProtocolLimits

__all__ = ["HeadRejected", "QuotesHttpProtocol"]


class HeadRejected(Exception):
    """Raised inside a parser callback to stop parsing and answer ``status``."""

    def __init__(self, status: HTTPStatus, event: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.event = event
        self.message = message


class QuotesHttpProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol with a handshake timeout and request-head limits."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = app_state.get(LIMITS_STATE_KEY)
        self.limits: ProtocolLimits = limits if limits is not None else ProtocolLimits()
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._header_count = 0
        self._got_bytes = False
        self._rejected = False
        self._served_by: dict[object, object] = {"config": ServedBy.of(config)}

    # --- the head deadline ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()

    def _start_head(self) -> None:
        self._head_bytes = 0
        self._header_count = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.handshake_timeout, self._head_timed_out
            )

    def _end_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        self.limits.on_limit("handshake_timeout")
        if self._got_bytes:
            self._answer(HTTPStatus.REQUEST_TIMEOUT, "request head not complete in time")
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
        super().connection_lost(exc)

    # --- parsing with limits ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        self._got_bytes = True
        self._unset_keepalive_if_required()
        if self._head_timer is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_size:
                # checked before feeding: httptools would buffer an endless header whole
                self._reject(
                    HeadRejected(
                        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "headers_too_large",
                        f"request head over {self.limits.max_head_size} bytes",
                    )
                )
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._end_head()
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadRejected):
                self._reject(exc.__context__)
            else:
                raise
        except httptools.HttpParserError:
            self.limits.on_limit("invalid_request")
            self._answer(HTTPStatus.BAD_REQUEST, "invalid HTTP request")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {SERVED_BY_EXTENSION: self._served_by}
        self._start_head()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_url_length:
            raise HeadRejected(
                HTTPStatus.REQUEST_URI_TOO_LONG,
                "url_too_long",
                f"request target over {self.limits.max_url_length} bytes",
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise HeadRejected(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                f"more than {self.limits.max_headers} header fields",
            )
        if len(name) + len(value) > self.limits.max_header_size:
            raise HeadRejected(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                f"a header field over {self.limits.max_header_size} bytes",
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # the WebSocket protocol built its scope while it read the upgrade request and
        # created the app's task, which has not run yet: mark the scope before it does
        scope: Any = getattr(self.transport.get_protocol(), "scope", None)
        if isinstance(scope, dict):
            scope.setdefault("extensions", {})[SERVED_BY_EXTENSION] = self._served_by

    # --- answers -----------------------------------------------------------------------------

    def _reject(self, exc: HeadRejected) -> None:
        self.limits.on_limit(exc.event)
        self._answer(exc.status, exc.message)

    def _answer(self, status: HTTPStatus, message: str) -> None:
        self._rejected = True
        self._end_head()
        body = f"{status.value} {status.phrase}: {message}\n".encode()
        head = (
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            "content-type: text/plain; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        ).encode()
        self.logger.info("HTTP request rejected with %d: %s", status.value, message)
        self.transport.write(head + body)
        self.transport.close()
