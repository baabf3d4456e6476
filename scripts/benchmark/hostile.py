"""
Hostile connections for the soak: raw sockets that misbehave the documented ways.

Four kinds, each with the answer docs/security.md promises:

==================  ================================================================
``flood``           frames past the inbound rate (``{"action":"ping"}`` as fast as the
                    socket takes them): close ``1008``
``half_handshake``  a request head that never ends: ``408`` after the handshake timeout
``oversize``        one text frame over 64 KiB: close ``1009``
``stalled``         a reader of every ticker that never reads: close ``1011``
                    "keepalive ping timeout" (it answers no ping either: 40 s by
                    default) or ``1013`` once it has made no progress for the
                    slow-client timeout, whichever comes first; the close frame
                    waits behind the data it never read, so it is read here at the
                    end
==================  ================================================================

The stalled reader keeps the system's receive buffer. With a 4 KiB one (set to
reach the server's backpressure sooner) the kernel sometimes dropped segments it had
advertised room for (small segments cost more memory than their bytes), the
server's TCP took them for losses and backed its retransmissions off to seconds
(``ss -ti``: ``backoff:5``, ``rto:6784``), and the close frame came after the reader
stopped looking: about one stalled reader in 300, a soak smoke run in ten.

A :class:`HostileWave` runs ``n`` of them (the kinds in turn), each on its own
thread with blocking sockets and a deadline (its *lifetime*): a connection the
server has not ended by then is closed here, and its outcome says so
(``open at deadline``). Nothing here is timed; outcomes are what the client saw:
a close code, an HTTP status, or how the connection ended without either.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

__all__ = ["EXPECTED", "KINDS", "HostileTarget", "HostileWave"]

KINDS = ("flood", "half_handshake", "oversize", "stalled")
EXPECTED = {
    "flood": frozenset({"1008"}),
    "half_handshake": frozenset({"408"}),
    "oversize": frozenset({"1009"}),
    "stalled": frozenset({"1011", "1013"}),
}
"""The outcomes each kind should get (close codes, or an HTTP status)."""

OPEN_AT_DEADLINE = "open at deadline"
_FLOOD_FRAMES = 20_000
_FLOOD_BATCH = 200
_OVERSIZE = 70 * 1024
_TCP_ESTABLISHED = 1
_NO_TICKER = "ZZZZ"
"""A valid ticker nobody publishes: the flood and oversize connections get no quotes."""


@dataclass(frozen=True)
class HostileTarget:
    """Where the hostile connections go."""

    host: str
    port: int
    path: str = "/ws/quotes"


def _frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame (a zero mask: masking is required, its value is not)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


class _Frames:
    """Server frames read from a socket, up to the first close frame."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.code: int | None = None
        self.ended = False
        """Whether the stream ended (EOF or reset)."""

    def _parse(self) -> None:
        buf = self.buf
        at = 0  # frames before this are parsed; cut once at the end (megabytes of them)
        while self.code is None and len(buf) - at >= 2:
            opcode, n, offset = buf[at] & 0x0F, buf[at + 1] & 0x7F, at + 2
            if n == 126:
                if len(buf) - at < 4:
                    break
                (n,), offset = struct.unpack_from("!H", buf, at + 2), at + 4
            elif n == 127:
                if len(buf) - at < 10:
                    break
                (n,), offset = struct.unpack_from("!Q", buf, at + 2), at + 10
            if len(buf) < offset + n:
                break
            if opcode == 0x8:
                payload = bytes(buf[offset : offset + n])
                self.code = struct.unpack("!H", payload[:2])[0] if n >= 2 else 1005
            at = offset + n
        del buf[:at]

    def read(self, timeout: float) -> None:
        """Read until a close frame, the end of the stream, or ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while self.code is None and not self.ended:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                return
            except OSError:  # reset
                data = b""
            if not data:
                self.ended = True
                return
            self.buf += data
            self._parse()

    def outcome(self) -> str:
        """The close code, or how the connection ended without one."""
        if self.code is not None:
            return str(self.code)
        return "ended without close frame" if self.ended else OPEN_AT_DEADLINE


def _connect(target: HostileTarget) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect((target.host, target.port))
    return sock


def _handshake(target: HostileTarget, query: str) -> socket.socket:
    """A WebSocket opened by hand; raises ``ConnectionError`` with the status if refused."""
    sock = _connect(target)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {target.path}?{query} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: leave any frame after the head unread
        if not chunk:
            sock.close()
            raise ConnectionError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise ConnectionError(f"handshake refused: {head.split(b' ', 2)[1].decode()}")
    return sock


def _finish(sock: socket.socket, frames: _Frames, deadline: float) -> str:
    """Answer a close frame, read to the end within the deadline, close; the outcome."""
    if frames.code is not None:
        try:
            sock.sendall(_frame(struct.pack("!H", frames.code), opcode=0x8))
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            while sock.recv(1 << 16):
                pass
        except OSError:
            pass
    sock.close()
    return frames.outcome()


def flood(target: HostileTarget, lifetime: float) -> str:
    """Send pings as fast as the socket takes them; stop at the close frame."""
    deadline = time.monotonic() + lifetime
    sock = _handshake(target, f"tickers={_NO_TICKER}")
    frames = _Frames(sock)
    batch = _frame(b'{"action":"ping"}') * _FLOOD_BATCH
    for _ in range(_FLOOD_FRAMES // _FLOOD_BATCH):
        try:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.sendall(batch)
        except OSError:
            break  # the server is done with us; what it sent says how
        frames.read(0.0)
        if frames.code is not None or frames.ended:
            break
    frames.read(deadline - time.monotonic())
    return _finish(sock, frames, deadline)


def oversize(target: HostileTarget, lifetime: float) -> str:
    """Send one text frame over the 64 KiB limit."""
    deadline = time.monotonic() + lifetime
    sock = _handshake(target, f"tickers={_NO_TICKER}")
    frames = _Frames(sock)
    with contextlib.suppress(OSError):  # the server may close before taking it all
        sock.sendall(_frame(b"x" * _OVERSIZE))
    frames.read(deadline - time.monotonic())
    return _finish(sock, frames, deadline)


def half_handshake(target: HostileTarget, lifetime: float) -> str:
    """Send a request head without its last line; the HTTP status of the answer."""
    deadline = time.monotonic() + lifetime
    sock = _connect(target)
    sock.sendall(
        f"GET {target.path} HTTP/1.1\r\nHost: {target.host}\r\nUpgrade: websocket\r\n".encode()
    )
    answer = b""
    sock.settimeout(max(0.01, lifetime))
    try:
        while chunk := sock.recv(4096):
            answer += chunk
            sock.settimeout(max(0.01, deadline - time.monotonic()))
    except TimeoutError:
        sock.close()
        return OPEN_AT_DEADLINE if not answer else "answered, left open"
    except OSError:
        pass
    sock.close()
    if answer.startswith(b"HTTP/1.1 "):
        return answer.split(b" ", 2)[1].decode()
    return "ended without answer"


def _established(sock: socket.socket) -> bool:
    """Whether the TCP connection is still open both ways (Linux ``TCP_INFO``; else True)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except (OSError, AttributeError):
        return True
    return info[0] == _TCP_ESTABLISHED


def stalled(target: HostileTarget, lifetime: float) -> str:
    """Subscribe to every ticker and read nothing until the server ends it, or the deadline."""
    deadline = time.monotonic() + lifetime
    sock = _handshake(target, "seq=1")
    # The misbehaviour itself: not reading. The kernel still tells when the server has
    # ended the connection (FIN or reset), without a byte read.
    while time.monotonic() < deadline and _established(sock):
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    frames = _Frames(sock)
    # What the server sent meanwhile waits in the buffers, the close frame (if any) last.
    frames.read(2.0)
    return _finish(sock, frames, time.monotonic() + 1.0)


_RUNNERS = {
    "flood": flood,
    "half_handshake": half_handshake,
    "oversize": oversize,
    "stalled": stalled,
}


def _run(kind: str, target: HostileTarget, lifetime: float) -> str:
    try:
        return _RUNNERS[kind](target, lifetime)
    except ConnectionError as exc:
        return str(exc)
    except OSError as exc:
        return f"error: {type(exc).__name__}"


class HostileWave:
    """``n`` hostile connections at once (kinds in turn), each for at most ``lifetime``."""

    def __init__(self, target: HostileTarget, n: int, lifetime: float) -> None:
        self.kinds = [KINDS[i % len(KINDS)] for i in range(n)]
        self.pool = ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="hostile")
        self.futures: list[Future[str]] = [
            self.pool.submit(_run, kind, target, lifetime) for kind in self.kinds
        ]

    def result(self) -> dict[str, dict[str, int]]:
        """Kind -> outcome -> count, once every connection has ended."""
        out: dict[str, Counter[str]] = {kind: Counter() for kind in dict.fromkeys(self.kinds)}
        for kind, future in zip(self.kinds, self.futures, strict=True):
            out[kind][future.result()] += 1
        self.pool.shutdown()
        return {kind: dict(c) for kind, c in out.items()}
