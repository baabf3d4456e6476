"""
A loopback HTTP proxy that breaks WebSockets, as some corporate proxies do.

Plain requests pass through to the target port (each on its own connection: the
proxy adds ``Connection: close`` so every request is inspected); a request asking for
``Upgrade: websocket`` is answered ``502 Bad Gateway`` and never reaches the server.
It runs its own event loop on a thread, for synchronous (Playwright) tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

__all__ = ["UpgradeBlockingProxy"]

_REFUSAL = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class UpgradeBlockingProxy:
    """``with UpgradeBlockingProxy(port) as proxy:`` serves on ``proxy.port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.refused = 0
        """WebSocket upgrades refused."""
        self.passed = 0
        """Plain requests passed to the target."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> UpgradeBlockingProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in asyncio.all_tasks():
            if task is not asyncio.current_task():
                task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.split(b"\r\n")
        if any(line.lower().replace(b" ", b"") == b"upgrade:websocket" for line in lines):
            self.refused += 1
            writer.write(_REFUSAL)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        self.passed += 1
        kept = [line for line in lines[1:] if not line.lower().startswith(b"connection:")]
        head = b"\r\n".join([lines[0], b"Connection: close", *kept])
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        up_writer.write(head)
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
