"""The RESP helpers both Redis sources share, alone."""

from __future__ import annotations

import asyncio
import gc

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import MovedError, ResponseError

from quotes_server.sources.resp import (
    PING,
    CommandConnection,
    RespProtocol,
    command_bytes,
    response_error,
)


@given(st.lists(st.binary(max_size=64), min_size=1, max_size=8))
def test_a_command_parses_back_to_its_arguments(args: list[bytes]) -> None:
    reader = hiredis.Reader()
    reader.feed(command_bytes(args))
    assert reader.gets() == args
    assert reader.gets() is False  # exactly one command, nothing left over


def test_ping_is_the_ping_command() -> None:
    assert PING == b"*1\r\n$4\r\nPING\r\n"


def test_a_moved_error_names_the_new_owner() -> None:
    exc = response_error(hiredis.ReplyError("MOVED 3999 10.0.0.2:7001"))
    assert isinstance(exc, MovedError)
    assert (exc.slot_id, exc.host, exc.port) == (3999, "10.0.0.2", 7001)


def test_other_errors_keep_their_text() -> None:
    exc = response_error(hiredis.ReplyError("NOPERM this user has no permissions"))
    assert type(exc) is ResponseError
    assert str(exc) == "NOPERM this user has no permissions"


class _Transport:
    """What a :class:`CommandConnection` writes, and whether it was aborted."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


@pytest.mark.anyio
async def test_a_command_connection_answers_each_call_and_breaks_on_a_stray_reply() -> None:
    conn = CommandConnection()
    transport = _Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    call = asyncio.ensure_future(conn.call([b"EVALSHA", b"abc", b"0"]))
    await asyncio.sleep(0)  # the command is written
    assert transport.written == [command_bytes([b"EVALSHA", b"abc", b"0"])]
    conn.data_received(b":4")
    conn.data_received(b"2\r\n")  # a reply split across reads
    assert await call == 42
    error = asyncio.ensure_future(conn.call([b"EVALSHA", b"abc", b"0"]))
    await asyncio.sleep(0)
    conn.data_received(b"-NOSCRIPT No matching script\r\n")
    with pytest.raises(ResponseError, match=r"^NOSCRIPT"):
        await error
    assert not conn.lost
    assert not transport.aborted
    # a reply nothing waits for (its call timed out): never read as the next call's
    conn.data_received(b":7\r\n")
    assert conn.lost
    assert transport.aborted


class _Answering(RespProtocol):
    """The smallest subclass: every reply answers the pending call."""

    def _hand_over(self) -> None:
        while (reply := self.parser.gets()) is not False:
            self._answer(reply)


@pytest.mark.anyio
async def test_a_connection_lost_during_a_call_leaves_no_unretrieved_failure() -> None:
    """
    Redis resets the connection while a call waits (a TLS server refusing a client
    without a certificate does so right after the handshake): the call raises, the
    source closes the connection, and nothing is left for the loop to report as
    "exception was never retrieved" when the connection is collected.
    """
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        conn = _Answering()
        conn.connection_made(_Transport())  # type: ignore[arg-type]
        call = asyncio.ensure_future(conn.call([b"SUBSCRIBE", b"quotes.realtime"]))
        await asyncio.sleep(0)  # the command is written
        conn.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
        with pytest.raises(ConnectionResetError):
            await call
        conn.close()
        del conn, call
        await asyncio.sleep(0)  # the loop lets go of the finished call
        gc.collect()  # the connection, its failure and their cycle go
    finally:
        loop.set_exception_handler(previous)
    assert reported == []


@pytest.mark.anyio
async def test_a_lost_connection_still_raises_its_failure_to_the_watch() -> None:
    conn = _Answering()
    conn.connection_made(_Transport())  # type: ignore[arg-type]
    conn.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
    with pytest.raises(ConnectionResetError):
        await conn.wait_lost(0)
