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


UPGRADE_HEADERS = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def upgrade_request(target: str, extra_headers: str = "") -> bytes:
    """The bytes of a complete WebSocket upgrade request for ``target``."""
    return (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{UPGRADE_HEADERS}{extra_headers}\r\n"
    ).encode()


def exchange(port: int, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_all(sock, timeout)


def read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the peer sends until EOF (or reset); raises ``TimeoutError`` on silence."""
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP response."""
    return int(response.split(b" ", 2)[1])


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked, unfragmented client frame (text by default)."""
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def read_frames_until_close(
    sock: socket.socket, timeout: float = 30.0
) -> tuple[list[bytes], int | None, str]:
    """
    Read server frames until a close frame (or EOF): the text/binary payloads before
    it, and the close code and reason (``None`` and ``""`` when the stream ended
    without a close frame).
    """
    sock.settimeout(timeout)
    buf = bytearray()
    pos = 0
    payloads: list[bytes] = []
    while True:
        while len(buf) - pos >= 2:  # parse every complete frame in buf
            opcode, n, offset = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, pos + 2
            if n == 126:
                if len(buf) - pos < 4:
                    break
                (n,), offset = struct.unpack_from("!H", buf, pos + 2), pos + 4
            elif n == 127:
                if len(buf) - pos < 10:
                    break
                (n,), offset = struct.unpack_from("!Q", buf, pos + 2), pos + 10
            if len(buf) < offset + n:
                break
            payload = bytes(buf[offset : offset + n])
            pos = offset + n
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return payloads, code, payload[2:].decode()
            if opcode in (0x1, 0x2):
                payloads.append(payload)
        del buf[:pos]
        pos = 0
        try:
            data = sock.recv(1 << 20)
        except ConnectionResetError:
            data = b""
        if not data:
            return payloads, None, ""
        buf += data


def answer_close(sock: socket.socket, code: int | None, timeout: float = 30.0) -> bool:
    """
    Answer the server's close frame as RFC 6455 5.5.1 asks of a client, then read to
    the end: True when the server ended the TCP connection with a FIN (EOF), False
    when it reset it.
    """
    sock.settimeout(timeout)
    try:
        sock.sendall(client_frame(b"" if code is None else struct.pack("!H", code), opcode=0x8))
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return False
    return True
