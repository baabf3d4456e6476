"""A raw-socket WebSocket peer that can misbehave: never read, abort, send junk."""

from __future__ import annotations

import base64
import os
import socket
import struct


def raw_handshake(
    port: int, path: str = "/ws/quotes", *, rcvbuf: int | None = None, timeout: float = 10.0
) -> socket.socket:
    """Open a WebSocket by hand and return the socket right after the 101 response."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # before connect, so the advertised TCP window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: leave any frame after the head unread
        if not chunk:
            raise ConnectionError("closed during handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake rejected: {head[:100]!r}")
    return sock


def abort(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed peer would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def read_until_closed(sock: socket.socket, timeout: float = 30.0) -> int:
    """Drain the socket until EOF or reset; return the bytes read. Raises on timeout."""
    sock.settimeout(timeout)
    total = 0
    try:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return total
            total += len(data)
    except ConnectionResetError:
        return total
