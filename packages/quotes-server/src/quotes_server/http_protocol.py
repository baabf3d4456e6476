"""
uvicorn's httptools HTTP protocol with limits on each request and on connections.

uvicorn parses every request (WebSocket upgrades included) with httptools, which
has no limit of its own on the request line, the headers or the body, and no
deadline for a request to arrive: a peer that sends half a request, an endless
header or a body one byte at a time keeps its connection (and a growing buffer)
forever, and uvicorn counts no connection that has not reached the app. This
protocol adds (:class:`~quotes_server.limits.ProtocolLimits`):

- a **handshake timeout**: a request head not complete within
  ``handshake_timeout`` seconds of the TCP accept (or of its first byte, on a
  kept-alive connection) gets ``408`` and the connection is closed; a connection
  that sent nothing at all is just closed;
- a **request timeout**: the same for the whole request, body included, within
  ``request_timeout`` seconds. It bounds receiving the request only: once the
  request is complete, its response may stream for as long as the app likes;
- a cap on the **request target** (``414``), on each **header** and on the number
  of headers (``431``), on the **whole head** (``431``) and on the **body**
  (``413``), checked before the bytes are buffered;
- a cap on **open plain-HTTP connections** per process: past it a new connection
  gets ``503`` with ``Retry-After`` at once. A connection counts from its accept
  until it closes or upgrades to a WebSocket (WebSockets have their own caps).

The app sees a request only once its body has arrived (nginx's request buffering),
so the app never answers half a request and a request that times out can still be
answered. Every rejection is a complete HTTP response followed by a close, so any
client (browser, ``websockets``, curl) sees a real status at once; where a
response is already on the wire, the connection is just closed.

A WebSocket handshake that carries ``X-Forwarded-For`` from a peer uvicorn does not
trust with it (not in ``--trusted-proxies``) is reported to
:attr:`~quotes_server.limits.ProtocolLimits.on_untrusted_forward`: here the peer's
own address is still known, where the app sees it only after uvicorn's rewrite.

Every scope it hands the app, WebSocket upgrades included, carries the
:data:`~quotes_server.guard.SERVED_BY_EXTENSION` mark, so the app can refuse to
serve when uvicorn runs without our protocols or with another proxy rule
(:mod:`quotes_server.guard`).

An HTTP request's scope also carries the ``quotes.stream`` extension
(:class:`~quotes_server.limits.StreamExtension`) for a response that streams
(the SSE endpoint): at shutdown uvicorn only waits for such a response to end,
so the protocol calls the app's ``on_shutdown`` hook and the app ends it; and
``abort()`` resets a connection whose peer stopped reading, where a plain close
would wait for a flush that never comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from quotes_server.addresses import trusted_peer
from quotes_server.guard import SERVED_BY_EXTENSION, ServedBy
from quotes_server.limits import (
    LIMITS_STATE_KEY,
    STREAM_EXTENSION,
    ProtocolLimits,
    StreamExtension,
)

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application

__all__ = ["QuotesHttpProtocol", "RequestRejected"]

# without a lifespan (no limits in the app state) every connection still shares one count
_DEFAULT_LIMITS = ProtocolLimits()
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


class RequestRejected(Exception):
    """Raised inside a parser callback to stop parsing and answer ``status``."""

    def __init__(self, status: HTTPStatus, event: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.event = event
        self.message = message


class _Phase(enum.Enum):
    """Where the connection is in receiving a request."""

    IDLE = "idle"  # between requests (a response may still be streaming)
    HEAD = "head"  # request line and headers
    BODY = "body"  # the head is complete, the body is not


class QuotesHttpProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol with request deadlines, size limits and a connection cap."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = app_state.get(LIMITS_STATE_KEY)
        self.limits: ProtocolLimits = limits if limits is not None else _DEFAULT_LIMITS
        self._phase = _Phase.IDLE
        self._deadline: asyncio.TimerHandle | None = None
        self._request_start = 0.0
        self._head_bytes = 0
        self._header_count = 0
        self._body_bytes = 0
        self._held: tuple[RequestResponseCycle, ASGI3Application] | None = None
        self._got_bytes = False
        self._counted = False
        self._rejected = False
        self._served = ServedBy.of(config)
        self._served_by: dict[object, object] = {"config": self._served}

    # --- the connection cap --------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        count, cap = self.limits.http_connections, self.limits.max_http_connections
        if not count.acquire(cap):
            self.limits.on_limit("http_connections")
            if not count.refusing:  # one line per episode, not one per refused connection
                count.refusing = True
                self.logger.warning(
                    "%d HTTP connections open: new ones get 503 until one closes", cap
                )
            # at once: waiting for a request would hold the very socket the cap protects
            self._answer(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"more than {cap} open HTTP connections",
                retry_after=self.limits.retry_after,
                log=False,
            )
            return
        self._counted = True
        self._begin_request()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.limits.http_connections.release()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self._uncount()
        super().connection_lost(exc)
        # the extension holds a bound method of this protocol, which holds the scope
        cycle = self.cycle
        stream = _stream_extension(cycle.scope if cycle is not None else None)
        if stream is not None:
            stream["abort"] = _nothing
            stream["on_shutdown"] = None

    def handle_websocket_upgrade(self) -> None:
        self._uncount()  # from here on it is a WebSocket, counted by the app
        self._check_forwarded()
        super().handle_websocket_upgrade()
        # the WebSocket protocol built its scope while it read the upgrade request and
        # created the app's task, which has not run yet: mark the scope before it does
        scope: Any = getattr(self.transport.get_protocol(), "scope", None)
        if isinstance(scope, dict):
            scope.setdefault("extensions", {})[SERVED_BY_EXTENSION] = self._served_by
        # this protocol is done: the WebSocket protocol owns the transport now. Its
        # parser holds it (as the callbacks' target) and it holds the parser, a cycle
        # uvicorn breaks only in connection_lost, which now goes to the WebSocket.
        self.parser = None  # type: ignore[assignment]
        # likewise the upgrade request's scope: its quotes.stream extension holds a
        # bound method of this protocol, which holds the scope
        stream = _stream_extension(self.scope)
        if stream is not None:
            stream["abort"] = _nothing
            stream["on_shutdown"] = None

    def _check_forwarded(self) -> None:
        """Report an ``X-Forwarded-For`` that uvicorn ignores (its peer is not trusted)."""
        if self.client is None or all(name != b"x-forwarded-for" for name, _ in self.headers):
            return
        served = self._served
        trusted = served.forwarded_allow_ips if served.proxy_headers else ()
        if not trusted_peer(self.client[0], trusted):
            self.limits.on_untrusted_forward(self.client[0])

    def shutdown(self) -> None:
        if self._held is not None:
            self.transport.close()  # a request the app never saw has nothing to finish
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            stream = _stream_extension(cycle.scope)
            hook = stream["on_shutdown"] if stream is not None else None
            if hook is not None:
                hook()  # a streaming response: the app ends it (uvicorn would wait)
        super().shutdown()

    def _abort_stream(self) -> None:
        """Reset the connection (``quotes.stream``'s ``abort``): its peer stopped reading."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.transport.abort()

    # --- the deadlines -------------------------------------------------------------------

    def _begin_request(self) -> None:
        self._phase = _Phase.HEAD
        self._head_bytes = 0
        self._header_count = 0
        self._body_bytes = 0
        self._request_start = self.loop.time()
        self._arm(self._request_start + self.limits.handshake_timeout)

    def _arm(self, when: float) -> None:
        self._cancel_deadline()
        self._deadline = self.loop.call_at(when, self._timed_out)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._phase is _Phase.HEAD:
            self.limits.on_limit("handshake_timeout")
            if not self._got_bytes:
                self.transport.close()
                return
            self._answer(HTTPStatus.REQUEST_TIMEOUT, "request head not complete in time")
        else:
            self.limits.on_limit("request_timeout")
            self._answer(HTTPStatus.REQUEST_TIMEOUT, "request body not complete in time")

    # --- parsing with limits ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        self._got_bytes = True
        # unlike uvicorn, bytes alone do not cancel the keep-alive timer (on_message_begin
        # does): blank lines between requests start no request and so no deadline
        if self._phase is _Phase.HEAD:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_size:
                # checked before feeding: httptools would buffer an endless header whole
                self._reject(
                    RequestRejected(
                        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                        "headers_too_large",
                        f"request head over {self.limits.max_head_size} bytes",
                    )
                )
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._cancel_deadline()
            self._phase = _Phase.IDLE
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, RequestRejected):
                self._reject(exc.__context__)
            else:
                raise
        except httptools.HttpParserError:
            self.limits.on_limit("invalid_request")
            self._answer(HTTPStatus.BAD_REQUEST, "invalid HTTP request")

    def on_message_begin(self) -> None:
        self._unset_keepalive_if_required()
        super().on_message_begin()
        stream: StreamExtension = {"abort": self._abort_stream, "on_shutdown": None}
        extensions: dict[str, Any] = {
            SERVED_BY_EXTENSION: self._served_by,
            STREAM_EXTENSION: stream,
        }
        self.scope["extensions"] = extensions
        if self._phase is not _Phase.HEAD:  # a later request: its deadline runs from here
            self._begin_request()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_url_length:
            raise RequestRejected(
                HTTPStatus.REQUEST_URI_TOO_LONG,
                "url_too_long",
                f"request target over {self.limits.max_url_length} bytes",
            )

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise RequestRejected(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                f"more than {self.limits.max_headers} header fields",
            )
        if len(name) + len(value) > self.limits.max_header_size:
            raise RequestRejected(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                f"a header field over {self.limits.max_header_size} bytes",
            )
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        cap = self.limits.max_body_size
        if cap:
            # refused before a byte of it is read; httptools has already refused a
            # malformed, overflowing or repeated Content-Length
            length = next((int(v) for n, v in self.headers if n == b"content-length"), 0)
            if length > cap:
                raise self._body_too_large()
        self._phase = _Phase.BODY
        self._arm(self._request_start + self.limits.request_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self.limits.max_body_size and self._body_bytes > self.limits.max_body_size:
            raise self._body_too_large()  # a chunked body, which declares no length
        super().on_body(body)
        if self._held is not None and self.flow.read_paused:
            # uvicorn stopped reading at its buffer mark: let the app stream the rest
            self._release_held()

    def on_message_complete(self) -> None:
        self._cancel_deadline()
        self._phase = _Phase.IDLE
        super().on_message_complete()
        self._release_held()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._phase is not _Phase.IDLE:
            # the next request is already arriving: its deadline, not keep-alive, applies
            self._unset_keepalive_if_required()

    def _body_too_large(self) -> RequestRejected:
        return RequestRejected(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "body_too_large",
            f"request body over {self.limits.max_body_size} bytes",
        )

    # --- handing requests to the app -------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        # hold a request until its body has arrived: the app then never answers half a
        # request, and a timed-out one still gets its 408. A client that waits for
        # "100 Continue" is handed over at once (uvicorn sends it when the app reads).
        if cycle.more_body and not cycle.waiting_for_100_continue:
            self._held = (cycle, app)
            return
        super()._start_asgi_task(cycle, app)

    def _release_held(self) -> None:
        if self._held is not None:
            cycle, app = self._held
            self._held = None
            super()._start_asgi_task(cycle, app)

    # --- answers -----------------------------------------------------------------------------

    def _reject(self, exc: RequestRejected) -> None:
        self.limits.on_limit(exc.event)
        self._answer(exc.status, exc.message)

    def _can_answer(self) -> bool:
        """Tell whether a response written now would read as the answer to this request."""
        if self.pipeline:
            return False  # queued behind a response that is still being written
        cycle = self.cycle
        if cycle is None:
            return True
        if self._phase is _Phase.BODY:
            return not cycle.response_started  # the cycle is this request's
        return cycle.response_complete  # the cycle is the previous request's

    def _answer(
        self,
        status: HTTPStatus,
        message: str,
        *,
        retry_after: int | None = None,
        log: bool = True,
    ) -> None:
        self._rejected = True
        self._cancel_deadline()
        self._held = None
        answer = self._can_answer()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # the app (if it runs) gets http.disconnect and its writes are dropped
            cycle.disconnected = True
            cycle.message_event.set()
        if log:
            self.logger.info("HTTP request rejected with %d: %s", status.value, message)
        if answer:
            body = f"{status.value} {status.phrase}: {message}\n".encode()
            extra = f"retry-after: {retry_after}\r\n" if retry_after is not None else ""
            head = (
                f"HTTP/1.1 {status.value} {status.phrase}\r\n"
                "content-type: text/plain; charset=utf-8\r\n"
                f"content-length: {len(body)}\r\n"
                f"{extra}connection: close\r\n\r\n"
            ).encode()
            self.transport.write(head + body)
        self.transport.close()


def _stream_extension(scope: Any) -> StreamExtension | None:
    if not isinstance(scope, dict):
        return None
    stream: StreamExtension | None = scope.get("extensions", {}).get(STREAM_EXTENSION)
    return stream


def _nothing() -> None:
    """``abort`` of a connection that is already gone."""
