"""
uvicorn's sans-I/O WebSocket protocol with these changes for a streaming server.

1. **Shutdown says 1001.** On SIGTERM uvicorn closes every WebSocket with 1012
   (service restart) before the app's lifespan shutdown runs; we send 1001
   ("going away", reason "Server shutting down"), which the contract's clients
   read as "reconnect elsewhere".
2. **A close never waits for a stalled peer.** uvicorn's ``send`` waits until the
   transport is writable, so closing a client that stopped reading would wait
   forever and the socket would stay open as long as the peer does. Here a close
   frame is queued even when the write buffer is full, and a close the peer does
   not answer within ``close_timeout`` (from the app's lifespan state, key
   ``quotes_close_timeout``) aborts the socket instead of waiting for a flush that
   never comes. The same applies after a keepalive ping timeout.
   **Every close frame reaches the peer.** uvicorn closed the socket right after
   a close frame of its own on a protocol error (1002, 1007, 1009) or at
   shutdown; with the peer's data still unread, the kernel answers with a reset,
   which can destroy the close frame before the peer reads it (it sees 1006).
   After every close frame we send, the socket keeps reading and discarding until
   the peer's close reply or EOF (then a FIN), and is reset only when the peer
   answers nothing within ``close_timeout`` (a reset, not a plain close: a peer
   that does not read would otherwise leave its unsent backlog in an orphaned
   kernel socket for minutes). A keepalive ping timeout (1011) goes the same way.
   Invalid UTF-8 is answered 1007 like any protocol error, without uvicorn's
   ERROR line and traceback.
3. **Answers every handshake.** When the ``websockets`` parser itself rejects a
   request (a request line or header over its limits, or no valid HTTP at all) it
   queues a ``414``/``431`` response or an EOF that uvicorn never writes, so the
   client waited for its own timeout; here that answer is written and the socket
   closed. A denial response sent by the app (``400``/``401``/``403``/``429``/``503``)
   also counts as a completed handshake, so uvicorn no longer logs "ASGI callable
   returned without completing handshake" for each one.
4. **Inbound rate.** Every client frame (text, binary, ping, pong) takes a token
   from the connection's :class:`~quotes_core.bucket.TokenBucket`; a client past
   the configured rate and burst is closed with 1008 "Policy violation". The app
   weighs an expensive message more through the ``quotes.inbound`` scope
   extension (:class:`~quotes_server.limits.InboundExtension`): its ``charge(n)``
   takes ``n`` more tokens from the same bucket.
5. **Pre-built frames.** Connections that did not negotiate an extension get the
   ``quotes.frames`` extension in their scope (:class:`~quotes_server.frames.FramesExtension`):
   a non-blocking ``write(frames)`` of complete, pre-built server frames with one
   transport write, and the ``writable`` event of the connection's write
   backpressure, so the app writes only when the socket can take data.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

import websockets.http11
from uvicorn._types import ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request

from quotes_core import INBOUND_RATE_REASON, SHUTDOWN_REASON, CloseCode
from quotes_core.bucket import TokenBucket
from quotes_server.frames import FRAMES_EXTENSION, FramesExtension
from quotes_server.limits import (
    INBOUND_EXTENSION,
    LIMITS_STATE_KEY,
    InboundExtension,
    ProtocolLimits,
)

__all__ = ["POLICY_VIOLATION", "QuotesWebSocketProtocol"]

SHUTDOWN_CODE = int(CloseCode.GOING_AWAY)
POLICY_VIOLATION = int(CloseCode.POLICY_VIOLATION)
INVALID_DATA = 1007
INVALID_UTF8_REASON = "Invalid UTF-8 in a text message"
INTERNAL_ERROR = 1011
KEEPALIVE_REASON = "keepalive ping timeout"
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset

# uvicorn hands the upgrade request, already parsed and bounded by
# QuotesHttpProtocol, to the websockets parser again; let that parser accept every
# request line the HTTP layer let through (its default is 8 KiB, the documented
# knob is the WEBSOCKETS_MAX_LINE_LENGTH variable, read only at import).
_URL_ROOM = 64  # "GET " + " HTTP/1.1" and some slack


def _allow_request_lines(max_url_length: int) -> None:
    limit = websockets.http11.MAX_LINE_LENGTH
    websockets.http11.MAX_LINE_LENGTH = max(limit, max_url_length + _URL_ROOM)


_allow_request_lines(ProtocolLimits().max_url_length)


class QuotesWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol, closing with 1001 and never hanging on close."""

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
        self.close_timeout = self.limits.close_timeout
        _allow_request_lines(self.limits.max_url_length)
        self._bucket = TokenBucket(
            self.limits.inbound_rate, self.limits.inbound_burst, self.loop.time()
        )

    def shutdown(self) -> None:
        if self.handshake_complete and not self.disconnected:
            if not self.close_sent:
                self.queue.put_nowait(
                    {
                        "type": "websocket.disconnect",
                        "code": SHUTDOWN_CODE,
                        "reason": SHUTDOWN_REASON,
                    }
                )
                self.conn.send_close(SHUTDOWN_CODE, SHUTDOWN_REASON)
                self._closing()
            # else a close is under way: its reply or its timer ends the connection
            return
        super().shutdown()

    # --- closing: every close frame we send reaches the peer ---------------------------------
    #
    # Closing the socket while the peer's data is still unread makes the kernel answer
    # with a reset, and a reset can destroy our close frame before the peer reads it
    # (the peer then sees 1006). So after sending a close frame we keep reading (and
    # discarding) until the peer's close reply, its EOF or close_timeout; the TCP
    # connection then ends with a FIN, and is aborted only for a peer that answers
    # nothing in time.

    def _write_output(self) -> None:
        """Write what the websockets protocol has queued; its EOF marker half-closes."""
        for data in self.conn.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def _closing(self) -> None:
        """A close frame is queued: send it, keep reading, and wait for the peer."""
        self.stop_keepalive()
        self._write_output()
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.close_timer is None:
            self._abort_later()

    def handle_parser_exception(self) -> None:
        # the peer broke the protocol (1002, 1007, 1009): websockets queued a close
        # frame and an EOF, and discards what the peer sends until its EOF
        if self.close_sent:
            return  # called again for every later read; the close is under way
        close = self.conn.close_sent
        code, reason = (close.code, close.reason) if close is not None else (1006, "")
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self._closing()

    def send_receive_event_to_app(self) -> None:
        # uvicorn's, with invalid UTF-8 answered 1007 like any protocol error (uvicorn
        # logs it at ERROR with a traceback: a client could fill the log with them)
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if self.close_sent:
            return  # past our close frame: only the peer's reply still matters
        if self.curr_msg_data_type == "text":
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self.conn.fail(INVALID_DATA, INVALID_UTF8_REASON)
                self.handle_parser_exception()
                return
            self.queue.put_nowait({"type": "websocket.receive", "text": text})
        else:
            self.queue.put_nowait({"type": "websocket.receive", "bytes": data})
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None:
            # the websockets parser rejected the request itself: write its answer
            # (414/431, or just the EOF for a request it could not read) and close
            out = self.conn.data_to_send()
            if any(out):
                self.transport.write(b"".join(out))
            self.limits.on_limit("invalid_request")
            self.handshake_initiated = self.handshake_complete = self.close_sent = True
            self.transport.close()

    def handle_events(self) -> None:
        # a flood of frames is refused before any of them is handled
        for event in self.conn.events_received():
            if isinstance(event, Request):
                self.handle_connect(event)
            elif isinstance(event, Frame):
                if event.opcode is Opcode.CLOSE:
                    self.handle_close(event)
                elif self.close_sent or self.disconnected:
                    continue  # closing: only the peer's close frame still matters
                elif self._bucket.take(self.loop.time()):
                    self._handle_frame(event)
                else:
                    self._close_for_flood()
                    return

    def _handle_frame(self, event: Frame) -> None:
        opcode = event.opcode
        if opcode is Opcode.TEXT:
            self.handle_text(event)
        elif opcode is Opcode.BINARY:
            self.handle_bytes(event)
        elif opcode is Opcode.CONT:
            self.handle_cont(event)
        elif opcode is Opcode.PING:
            self.handle_ping()
        else:
            self.handle_pong(event)

    def _close_for_flood(self) -> None:
        self.limits.on_limit("inbound_rate")
        self.stop_keepalive()
        self.queue.put_nowait(
            {
                "type": "websocket.disconnect",
                "code": POLICY_VIOLATION,
                "reason": INBOUND_RATE_REASON,
            }
        )
        self.conn.send_close(POLICY_VIOLATION, INBOUND_RATE_REASON)
        self._closing()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is None or self.response.status_code != 101:
            return
        inbound: InboundExtension = {"charge": self._charge}
        scope["extensions"][INBOUND_EXTENSION] = inbound
        if "Sec-WebSocket-Extensions" not in self.response.headers:
            # no extension may transform frames on this connection: raw frames are safe
            ext: FramesExtension = {"write": self._write_frames, "writable": self.writable}
            scope["extensions"][FRAMES_EXTENSION] = ext

    def _charge(self, weight: int) -> bool:
        if self.close_sent or self.disconnected:
            return False
        if self._bucket.take(self.loop.time(), weight):
            return True
        self._close_for_flood()
        return False

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "websocket.close" and self.handshake_complete:
            # queue the close frame even if the peer stopped reading
            self.writable.set()
            await super().send(message)
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
                self._abort_later()
            return
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body"):
            # a denial response is a finished handshake: nothing more will be sent
            self.handshake_complete = True

    def _write_frames(self, data: bytes) -> bool:
        if (
            self.disconnected
            or self.close_sent
            or not self.handshake_complete
            or self.initial_response is not None
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(data)
        return True

    def keepalive_timeout(self) -> None:
        # no pong in time: the close frame still goes out and the socket waits
        # close_timeout for the peer, like every close of ours (uvicorn closed the
        # socket at once, and the app saw 1005 instead of 1011)
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": INTERNAL_ERROR, "reason": KEEPALIVE_REASON}
        )
        self.conn.fail(INTERNAL_ERROR, KEEPALIVE_REASON)
        self._closing()

    def _abort_later(self) -> None:
        self.close_timer = self.loop.call_later(self.close_timeout, self._abort)

    def _abort(self) -> None:
        """
        The peer answered nothing within close_timeout: reset the connection. A plain
        close would leave what the kernel still holds for a peer that does not read
        (megabytes, for a stalled reader) in an orphaned FIN-WAIT-1 socket for
        minutes; a reset frees it at once.
        """
        self.close_timer = None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        super().connection_lost(exc)
        # The scope's extensions hold bound methods of this protocol, and the protocol
        # holds the scope: a cycle that left every closed connection (protocol, parser,
        # buffers) to the cyclic collector. Both answer False from here on anyway. The
        # same for the parser's error (1002, 1007, 1009): its traceback holds the parser.
        self.conn.parser_exc = None
        extensions = getattr(self, "scope", {}).get("extensions", {})
        inbound: InboundExtension | None = extensions.get(INBOUND_EXTENSION)
        if inbound is not None:
            inbound["charge"] = _closed_charge
        frames: FramesExtension | None = extensions.get(FRAMES_EXTENSION)
        if frames is not None:
            frames["write"] = _closed_write


def _closed_charge(_weight: int) -> bool:
    return False


def _closed_write(_data: bytes) -> bool:
    return False
