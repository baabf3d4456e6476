"""
RFC 6455 conformance from a raw socket: what the server answers to each framing case.

The Autobahn testsuite needs Python 2, so the cases a push server must get right are
written here, each as one conversation with the real server: the client's frames,
the pongs and control frames the server must answer before closing, and the close
code it must send. Every conversation must then end with a clean EOF: the server
closes the TCP connection (RFC 6455 7.1.1), and a reset could lose the close frame
on a real network. The client of the cases never answers a close the server starts;
one more test answers every such close, as RFC 6455 5.5.1 asks of a client.

The answers are those of the ``websockets`` sans-I/O parser inside uvicorn that the
server runs (``websockets.protocol.Protocol.parse``/``recv_frame``,
``websockets.frames.Frame.parse``/``check``/``Close.parse``): a protocol error is
1002, an oversized frame 1009 (decided on the header alone), invalid UTF-8 in a close
reason 1007; a text message is decoded by uvicorn once complete, invalid UTF-8 there
is 1007 too.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, ServerProcess, TestSetupError, wait_until
from tests.helpers.rawws import raw_handshake
from tests.helpers.server import CHANNEL, server_factory

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 0x4, 0x2, 0x1
MAX_SIZE = 64 * 1024  # ws_max_size of the server under test (the default)
QUIET = "/ws/quotes?tickers=RFC6455"  # a ticker nobody publishes: only answers arrive

# an Autobahn 6.x sample: valid UTF-8 up to an encoded surrogate (U+D800)
BAD_UTF8 = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"


@dataclass(frozen=True)
class Answer:
    """What the server sent on one connection, up to and after its close frame."""

    pongs: list[bytes]
    events: list[dict[str, Any]]
    close: tuple[int | None, str]
    after_close: bytes
    eof: bool


@dataclass(frozen=True)
class Case:
    """
    One conversation: what the client sends and what the server must answer.

    ``send`` goes first; ``then`` is sent once every expected pong and event has
    arrived (so an accepted message is proven answered before the client closes).
    """

    send: bytes
    code: int | None  # in the server's close frame; None: a close frame without a code
    reason: str | None = None  # checked when given
    pongs: tuple[bytes, ...] = ()
    events: tuple[dict[str, Any], ...] = ()
    then: bytes = b""
    client_closes: bool = False  # the client sent a close frame: it must not echo one


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = True,
    length: int | None = None,
) -> bytes:
    """A client frame; ``length`` overrides the header's payload length (payload unsent)."""
    size = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    mask = (key * (len(payload) // 4 + 1))[: len(payload)]
    masked_payload = (int.from_bytes(payload) ^ int.from_bytes(mask)).to_bytes(len(payload))
    return head + key + masked_payload


def close_frame(code: int | None = None, reason: bytes = b"") -> bytes:
    """A masked close frame with ``code`` and the raw ``reason`` bytes."""
    return frame(CLOSE, b"" if code is None else struct.pack("!H", code) + reason)


def text(payload: str | bytes, *, fin: bool = True, opcode: int = TEXT) -> bytes:
    """A masked text (or continuation) frame."""
    data = payload.encode() if isinstance(payload, str) else payload
    return frame(opcode, data, fin=fin)


def ping_action(ping_id: object) -> str:
    """The stream protocol's ping action; the server answers a ``pong`` event."""
    return json.dumps({"action": "ping", "id": ping_id}, ensure_ascii=False)


def pong_event(ping_id: object) -> dict[str, Any]:
    """The part of the server's ``pong`` event a test can predict."""
    return {"event": "pong", "id": ping_id}


class ServerFrames:
    """Reads the server's frames from a raw socket and checks each is well formed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"EOF inside a server frame (had {self.buf!r})")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def next(self) -> tuple[int, bytes]:
        """The next frame's opcode and payload."""
        b0, b1 = self._exact(2)
        assert b0 & 0x70 == 0, f"server frame with RSV bits set: {b0:#04x}"
        assert not b1 & 0x80, "server frames must not be masked"
        opcode, size = b0 & 0x0F, b1 & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._exact(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._exact(8))
        if opcode >= CLOSE:
            assert b0 & 0x80, f"fragmented server control frame {b0:#04x}"
            assert size <= 125, f"server control frame of {size} bytes"
        return opcode, self._exact(size)

    def rest(self) -> tuple[bytes, bool]:
        """Everything after the close frame until the TCP connection ends; True on EOF."""
        out, self.buf = self.buf, b""
        try:
            while chunk := self.sock.recv(65536):
                out += chunk
        except ConnectionResetError:
            return out, False
        return out, True


def converse(port: int, case: Case, *, answer_close: bool = False, timeout: float = 10.0) -> Answer:
    """
    Run ``case`` on a new connection; return what the server answered.

    With ``answer_close`` the client replies to a close the server started with its
    own close frame, as RFC 6455 5.5.1 says it must; without, it only reads on.
    """
    sock = raw_handshake(port, QUIET, timeout=timeout)
    try:
        frames = ServerFrames(sock)
        pongs: list[bytes] = []
        events: list[dict[str, Any]] = []
        sock.sendall(case.send)
        then = case.then
        while True:
            if then and len(pongs) >= len(case.pongs) and len(events) >= len(case.events):
                sock.sendall(then)
                then = b""
            opcode, payload = frames.next()
            if opcode == PONG:
                pongs.append(payload)
            elif opcode == TEXT:
                events.append(json.loads(payload))
            elif opcode == CLOSE:
                break
            # keepalive pings (every 20 s) may come and need no answer here
        code = struct.unpack("!H", payload[:2])[0] if payload else None
        reason = payload[2:].decode()  # a close reason must be UTF-8 (7.1.6)
        if answer_close and not case.client_closes:
            # the server may already be gone: the EOF check below tells the outcomes apart
            with contextlib.suppress(OSError):
                sock.sendall(close_frame(code, reason.encode()) if payload else close_frame())
        after, eof = frames.rest()
        return Answer(pongs, events, (code, reason), after, eof)
    finally:
        sock.close()


def _cases() -> Iterator[tuple[str, Case]]:
    bye = close_frame(1000, b"bye")

    def accepted(send: bytes, *, pongs: tuple[bytes, ...] = (), ping_id: object = None) -> Case:
        # the message is answered (a ping action carrying ``ping_id``) or ignored and a
        # probe action after it answered; then the closing handshake completes normally
        if ping_id is None:
            send, ping_id = send + text(ping_action("probe")), "probe"
        return Case(
            send,
            1000,
            "bye",
            pongs=pongs,
            events=(pong_event(ping_id),),
            then=bye,
            client_closes=True,
        )

    def failed(send: bytes, code: int = 1002, **kw: Any) -> Case:
        return Case(send, code, **kw)

    # framing
    yield "unmasked-text", failed(frame(TEXT, b"hello", masked=False))
    yield "unmasked-ping", failed(frame(PING, b"hello", masked=False))
    yield "unmasked-close", failed(frame(CLOSE, struct.pack("!H", 1000), masked=False))
    for name, bits in [("rsv1", RSV1), ("rsv2", RSV2), ("rsv3", RSV3), ("rsv123", 7)]:
        yield f"{name}-text", failed(frame(TEXT, b"hello", rsv=bits))
    yield "rsv1-ping", failed(frame(PING, b"hello", rsv=RSV1))
    yield "rsv2-binary", failed(frame(BINARY, b"\x00", rsv=RSV2))
    for opcode in [*range(0x3, 0x8), *range(0xB, 0x10)]:
        yield f"opcode-{opcode:#x}", failed(frame(opcode, b"x" if opcode < 8 else b""))

    # control frames
    for name, opcode in [("ping", PING), ("pong", PONG)]:
        yield f"{name}-126-bytes", failed(frame(opcode, b"x" * 126))
        yield f"{name}-fragmented", failed(frame(opcode, b"x", fin=False))
    yield "close-126-bytes", failed(close_frame(1000, b"x" * 124), client_closes=True)
    yield (
        "close-fragmented",
        failed(frame(CLOSE, struct.pack("!H", 1000), fin=False), client_closes=True),
    )

    # fragmentation
    yield "continuation-without-start", failed(text("hello", opcode=CONT))
    yield "continuation-without-start-nofin", failed(text("hello", fin=False, opcode=CONT))
    yield "text-inside-fragmented-text", failed(text("hel", fin=False) + text("lo"))
    yield "binary-inside-fragmented-text", failed(text("hel", fin=False) + frame(BINARY, b"lo"))
    yield "text-inside-fragmented-binary", failed(frame(BINARY, b"he", fin=False) + text("lo"))
    # RFC 6455 lets a close frame interrupt a fragmented message; websockets answers
    # it with 1002 ("incomplete fragmented message"), which 5.5.1 allows (a close in
    # response, "typically" echoing the code)
    yield (
        "close-inside-fragmented-text",
        failed(text("hel", fin=False) + close_frame(1000), client_closes=True),
    )
    action = ping_action(1).encode()
    yield (
        "fragmented-text",
        accepted(
            text(action[:5], fin=False)
            + text(action[5:12], fin=False, opcode=CONT)
            + text(action[12:], opcode=CONT),
            ping_id=1,
        ),
    )
    yield (
        "fragmented-text-empty-fragments",
        accepted(
            text(b"", fin=False) + text(action, fin=False, opcode=CONT) + text(b"", opcode=CONT),
            ping_id=1,
        ),
    )
    yield (
        "pings-inside-fragmented-text",
        accepted(
            text(action[:7], fin=False)
            + frame(PING, b"first")
            + text(action[7:14], fin=False, opcode=CONT)
            + frame(PING, b"second")
            + text(action[14:], opcode=CONT),
            pongs=(b"first", b"second"),
            ping_id=1,
        ),
    )
    yield (
        "ping-inside-fragmented-binary",
        accepted(
            frame(BINARY, b"\x00\x01", fin=False)
            + frame(PING, b"bin")
            + frame(CONT, b"\x02", fin=True),
            pongs=(b"bin",),
        ),
    )

    # UTF-8
    multi = ping_action("κόσμε €𝄞").encode()
    cut = multi.index("ό".encode()) + 1  # inside a 2-byte sequence
    cut4 = multi.index("𝄞".encode()) + 2  # inside a 4-byte sequence
    yield (
        "utf8-split-inside-code-points",
        accepted(
            text(multi[:cut], fin=False)
            + text(multi[cut:cut4], fin=False, opcode=CONT)
            + text(multi[cut4:], opcode=CONT),
            ping_id="κόσμε €𝄞",
        ),
    )
    yield "utf8-invalid-text", failed(text(BAD_UTF8), 1007)
    yield "utf8-overlong", failed(text(b"\xc0\xaf"), 1007)
    yield "utf8-above-u10ffff", failed(text(b"\xf4\x90\x80\x80"), 1007)
    yield (
        "utf8-invalid-in-fragment",
        failed(
            text(b"valid ", fin=False)
            + text(BAD_UTF8, fin=False, opcode=CONT)
            + text("", opcode=CONT),
            1007,
        ),
    )
    yield (
        "utf8-truncated-at-end",
        failed(text(b"ends inside \xe2\x82", fin=False) + text(b"", opcode=CONT), 1007),
    )
    yield "utf8-invalid-binary-is-fine", accepted(frame(BINARY, BAD_UTF8))
    yield (
        "utf8-invalid-close-reason",
        failed(close_frame(1000, b"\xff\xfe"), 1007, client_closes=True),
    )

    # close codes
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]:
        yield f"close-code-{code}", failed(close_frame(code), client_closes=True)
    for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]:
        yield f"close-code-{code}-echoed", Case(close_frame(code), code, "", client_closes=True)
    yield "close-1-byte", failed(frame(CLOSE, b"\x03"), client_closes=True)
    yield "close-empty-echoed", Case(close_frame(), None, "", client_closes=True)
    yield "close-handshake", Case(bye, 1000, "bye", client_closes=True)
    reason = ("é" * 61).encode()  # 2 + 122 bytes: the largest close payload there is
    yield (
        "close-123-byte-reason-echoed",
        Case(close_frame(1000, reason + b"x"), 1000, reason.decode() + "x", client_closes=True),
    )
    yield (
        "close-after-message",
        Case(
            text(ping_action(1)), 1000, "bye", events=(pong_event(1),), then=bye, client_closes=True
        ),
    )

    # sizes: answered on the header, before any payload arrives
    for name, size in [
        ("2^63", 1 << 63),
        ("2^63-1", (1 << 63) - 1),
        ("2^64-1", (1 << 64) - 1),
        ("max-size+1", MAX_SIZE + 1),
    ]:
        yield f"length-{name}", failed(frame(TEXT, length=size), 1009)
    half = 40 * 1024
    yield (
        "fragments-over-max-size",
        failed(frame(BINARY, b"x" * half, fin=False) + frame(CONT, length=half), 1009),
    )
    yield "max-size-accepted", accepted(frame(BINARY, b"y" * MAX_SIZE))

    # pings and pongs
    yield "ping-echoed", accepted(frame(PING, b"payload"), pongs=(b"payload",))
    yield "ping-empty", accepted(frame(PING), pongs=(b"",))
    yield "ping-125-bytes", accepted(frame(PING, bytes(range(125))), pongs=(bytes(range(125)),))
    yield "ping-binary-payload", accepted(frame(PING, b"\xff\x00\xfe"), pongs=(b"\xff\x00\xfe",))
    yield "unsolicited-pong-ignored", accepted(frame(PONG, b"unasked"))


NAMED_CASES = list(_cases())
CASES = [pytest.param(case, id=name) for name, case in NAMED_CASES]


@pytest.fixture(scope="module")
def conformance_server() -> Iterator[tuple[RedisServer, ServerProcess]]:
    """One server (and its private Redis) for every conversation of this module."""
    try:
        redis = RedisServer().start()
    except TestSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        with server_factory() as start:
            # a short close_timeout: a server that waits for the client's close reply
            # (the cases never send one) must still end each conversation quickly
            yield redis, start(redis, ws_max_size=MAX_SIZE, close_timeout=2)
    finally:
        redis.stop()


@pytest.mark.parametrize("case", CASES)
def test_rfc6455_case(conformance_server: tuple[RedisServer, ServerProcess], case: Case) -> None:
    """The server answers the case as RFC 6455 requires, then closes the TCP connection."""
    _redis, server = conformance_server
    answer = converse(server.port, case)
    assert answer.pongs == list(case.pongs)
    assert len(answer.events) == len(case.events)
    for got, want in zip(answer.events, case.events, strict=True):
        assert got | want == got, f"{got} lacks {want}"
    assert answer.close[0] == case.code
    if case.reason is not None:
        assert answer.close[1] == case.reason
    assert answer.after_close == b"", "data after the close frame"
    assert answer.eof, "the TCP connection was reset, not closed"


def test_a_client_answering_the_close_gets_eof_not_a_reset(
    conformance_server: tuple[RedisServer, ServerProcess],
) -> None:
    """A client that answers every close the server starts (RFC 5.5.1) always gets EOF."""
    _redis, server = conformance_server
    resets = []
    # the reset is a race: several rounds make a server with the flaw fail every run
    for _round in range(3):
        for name, case in NAMED_CASES:
            if case.client_closes:
                continue
            answer = converse(server.port, case, answer_close=True)
            assert answer.close[0] == case.code
            if not answer.eof:
                resets.append(name)
    assert resets == []


def test_server_still_streams_after_the_cases(
    conformance_server: tuple[RedisServer, ServerProcess],
) -> None:
    """After every hostile conversation, a fresh client still gets its quotes."""
    redis, server = conformance_server
    sock = raw_handshake(server.port, "/ws/quotes?tickers=AAPL")
    try:
        frames = ServerFrames(sock)
        # the pong proves the connection is registered before the quote is published
        sock.sendall(text(ping_action("ready")))
        opcode, payload = frames.next()
        assert (opcode, json.loads(payload)["event"]) == (TEXT, "pong")
        redis.publish(CHANNEL, upstream_message("AAPL", 42))
        opcode, payload = frames.next()
        assert opcode == TEXT
        assert json.loads(payload)["volume"] == 42
    finally:
        sock.close()


def test_protocol_errors_leave_no_traceback_in_the_log(
    conformance_server: tuple[RedisServer, ServerProcess],
) -> None:
    """Client-caused protocol errors (here invalid UTF-8) are answered, never logged as ERROR."""
    _redis, server = conformance_server
    assert converse(server.port, Case(text(BAD_UTF8), 1007)).close[0] == 1007
    wait_until(lambda: "disconnected code=1007" in server.log(), what="the disconnect logged")
    log = server.log()
    assert "Traceback" not in log
    assert "ERROR" not in log
