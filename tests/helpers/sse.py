"""A raw Server-Sent Events reader for tests: an asyncio socket, HTTP/1.1 by hand."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

__all__ = ["SseReader", "parse_events"]


def parse_events(text: str) -> list[dict[str, str]]:
    """Complete events of ``text`` as an EventSource reads them (data lines joined)."""
    out = []
    for block in text.split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                fields["comment"] = line[1:].strip()
                continue
            name, _, value = line.partition(": ")
            fields[name] = fields[name] + "\n" + value if name in fields else value
        out.append(fields)
    return out


class SseReader:
    """
    One ``GET`` of an SSE endpoint: its status, headers and raw body, and the body's
    events one by one as they arrive (chunked transfer decoded by hand, so the test
    sees exactly the bytes the server wrote).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.raw = b""
        """The body as received so far (chunk framing removed)."""
        self.ended = False
        """True once the last chunk (the end of the response) arrived."""
        self._text = ""

    @classmethod
    async def open(
        cls,
        port: int,
        target: str,
        headers: dict[str, str] | None = None,
        *,
        rcvbuf: int | None = None,
        timeout: float = 10.0,
    ) -> SseReader:
        sock = None
        if rcvbuf is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # before connect, so the advertised TCP window stays small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}\r\n".encode())
        self = cls(reader, writer)
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
        return self

    async def body(self, timeout: float = 10.0) -> str:
        """The whole body of a response with a ``content-length`` (a refusal)."""
        length = int(self.headers["content-length"])
        async with asyncio.timeout(timeout):
            return (await self._reader.readexactly(length)).decode()

    async def _chunk(self) -> bool:
        size_line = await self._reader.readuntil(b"\r\n")
        size = int(size_line.strip(), 16)
        data = await self._reader.readexactly(size + 2)
        if size == 0:
            self.ended = True
            return False
        self.raw += data[:-2]
        self._text += data[:-2].decode()
        return True

    async def event(self, timeout: float = 10.0) -> dict[str, str]:
        """The next event (or comment, as ``{"comment": ...}``); fails if the stream ends."""
        async with asyncio.timeout(timeout):
            while "\n\n" not in self._text:
                if not await self._chunk():
                    raise AssertionError(f"the stream ended; unread: {self._text!r}")
        block, _, self._text = self._text.partition("\n\n")
        return parse_events(block + "\n\n")[0]

    async def events_until_end(self, timeout: float = 15.0) -> list[dict[str, str]]:
        """Every event left until the response ends (its last chunk)."""
        async with asyncio.timeout(timeout):
            while await self._chunk():
                pass
        rest, self._text = self._text, ""
        return parse_events(rest)

    def close(self) -> None:
        self.writer.close()

    async def __aenter__(self) -> SseReader:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()
