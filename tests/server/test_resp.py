"""The RESP helpers both Redis sources share, alone."""

from __future__ import annotations

import hiredis
from hypothesis import given
from hypothesis import strategies as st
from redis.exceptions import MovedError, ResponseError

from quotes_server.sources.resp import PING, command_bytes, response_error


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
