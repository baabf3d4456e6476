"""
uvicorn's sans-I/O WebSocket protocol with two changes for a streaming server.

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
3. **Pre-built frames.** Connections that did not negotiate an extension get the
   ``quotes.frames`` extension in their scope (:class:`~quotes_server.frames.FramesExtension`):
   a non-blocking ``write(frames)`` of complete, pre-built server frames with one
   transport write, and the ``writable`` event of the connection's write
   backpressure, so the app writes only when the socket can take data.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.http11 import Request

from quotes_server.frames import FRAMES_EXTENSION, FramesExtension

__all__ = ["CLOSE_TIMEOUT_STATE_KEY", "QuotesWebSocketProtocol"]

CLOSE_TIMEOUT_STATE_KEY = "quotes_close_timeout"
SHUTDOWN_CODE = 1001
SHUTDOWN_REASON = "Server shutting down"


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
        self.close_timeout = float(app_state.get(CLOSE_TIMEOUT_STATE_KEY, self.close_timeout))

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent and not self.disconnected:
            self.stop_keepalive()
            self.queue.put_nowait(
                {"type": "websocket.disconnect", "code": SHUTDOWN_CODE, "reason": SHUTDOWN_REASON}
            )
            self.conn.send_close(SHUTDOWN_CODE, SHUTDOWN_REASON)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.close_sent = True
            self.transport.close()
            self._abort_later()
            return
        super().shutdown()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if (
            scope is not None
            and self.response.status_code == 101
            and "Sec-WebSocket-Extensions" not in self.response.headers
        ):
            # no extension may transform frames on this connection: raw frames are safe
            ext: FramesExtension = {"write": self._write_frames, "writable": self.writable}
            scope["extensions"][FRAMES_EXTENSION] = ext

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
        super().keepalive_timeout()
        self._abort_later()

    def _abort_later(self) -> None:
        transport = self.transport
        self.close_timer = self.loop.call_later(self.close_timeout, transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        super().connection_lost(exc)
