"""
Every path a client can make the server work or hold memory has a bound: resumes,
the queue of an opted-in client, and the cost of actions.
"""

from __future__ import annotations

import asyncio
import json
import socket

import psutil
import pytest

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, wait_until
from tests.helpers.rawws import client_frame, raw_handshake, read_frames_until_close
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import open_ws, recv_json, wait_closed

pytestmark = pytest.mark.anyio

TICKERS = [f"T{i:03d}" for i in range(300)]


def _publish(redis: RedisServer, start: int, count: int) -> None:
    redis.publish_many(
        CHANNEL,
        [upstream_message(TICKERS[i % len(TICKERS)], i) for i in range(start, start + count)],
    )


async def _position(url: str, redis: RedisServer) -> tuple[str, int]:
    """The epoch and seq of the next quote published (read by a seq=1 client)."""
    async with open_ws(f"{url}/ws/quotes?seq=1") as ws:
        redis.publish(CHANNEL, upstream_message("FIRST", 0))
        first = await recv_json(ws)
    return first["epoch"], first["seq"]


def _rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def test_never_reading_resumes_cannot_exhaust_memory(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    The outside scenario: a 100,000-quote window and 20 never-reading connections
    asking to replay all of it, plus 20 replaying the last 2,000 quotes, grow the
    server by under 1 MiB each (it was 41 MiB each): a resume past the replay limit
    answers recovered:false, and a replay goes out in chunks as the socket drains.
    """
    server = start_server(redis_server)
    assert server.proc is not None
    epoch, first = await _position(server.ws_url, redis_server)
    for start in range(0, 100_000, 10_000):
        await asyncio.to_thread(_publish, redis_server, start, 10_000)
    wait_until(
        lambda: server.metric("quotes_upstream_messages_total") == 100_001,
        timeout=60,
        what="the window to fill",
    )
    before = _rss(server.proc.pid)
    hostile: list[socket.socket] = []
    try:
        # 20 ask for the whole window, 20 for the last 2,000 quotes (a replay they may have)
        last = first + 100_000
        for since in [first] * 20 + [last - 2000] * 20:
            hostile.append(
                raw_handshake(server.port, f"/ws/quotes?since={epoch}:{since}", rcvbuf=4096)
            )
        # a client that reads gets the answers the hostile ones got, after their replays
        # were prepared: everything runs on one event loop, in order
        for since, recovered in ((first, False), (last - 2000, True)):
            async with open_ws(f"{server.ws_url}/ws/quotes?since={epoch}:{since}") as ws:
                answer = await recv_json(ws)
            assert (answer["event"], answer["recovered"]) == ("recovered", recovered)
        wait_until(lambda: server.metric("quotes_ws_connections") == 40, what="40 connections")
        grown = _rss(server.proc.pid) - before
        assert grown < 40 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB for 40 clients"
    finally:
        for sock in hostile:
            sock.close()


async def test_replay_up_to_the_limit_then_recovered_false(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """replay_limit=100: 100 missed quotes are replayed exactly; 101 are not (the snapshot)."""
    server = start_server(redis_server, replay_limit=100)
    epoch, first = await _position(server.ws_url, redis_server)
    await asyncio.to_thread(_publish, redis_server, 0, 201)  # seqs first+1 .. first+201
    wait_until(lambda: server.metric("quotes_upstream_messages_total") == 202, what="published")
    last = first + 201
    async with open_ws(f"{server.ws_url}/ws/quotes?since={epoch}:{last - 100}") as ws:
        head = await recv_json(ws)
        assert (head["recovered"], head["seq"]) == (True, last)
        replay = [await recv_json(ws) for _ in range(100)]
        assert [q["seq"] for q in replay] == list(range(last - 99, last + 1))
    async with open_ws(f"{server.ws_url}/ws/quotes?snapshot=1&since={epoch}:{last - 101}") as ws:
        head = await recv_json(ws)
        assert (head["recovered"], head["seq"]) == (False, last)
        snapshot = [await recv_json(ws) for _ in range(202)]  # FIRST, T000 .. T200
        assert [q["ticker"] for q in snapshot] == ["FIRST", *TICKERS[:201]]
    # the limit counts the quotes a filter lets through, not the window's
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=T000,T001&since={epoch}:{first}") as ws:
        head = await recv_json(ws)
        assert head["recovered"] is True
        assert [(await recv_json(ws))["ticker"] for _ in range(2)] == ["T000", "T001"]


async def test_a_long_replay_is_written_in_chunks_then_the_live_stream(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A 20,000-quote replay (~5 MB) arrives whole and in order, then live quotes, no gap."""
    server = start_server(redis_server, replay_limit=20_000, client_queue_limit=16 * 1024 * 1024)
    epoch, first = await _position(server.ws_url, redis_server)
    await asyncio.to_thread(_publish, redis_server, 0, 20_000)
    wait_until(lambda: server.metric("quotes_upstream_messages_total") == 20_001, what="published")
    async with open_ws(f"{server.ws_url}/ws/quotes?since={epoch}:{first}", max_queue=None) as ws:
        head = await recv_json(ws)
        assert head == {
            "event": "recovered",
            "recovered": True,
            "epoch": epoch,
            "seq": first + 20_000,
        }
        live = asyncio.create_task(asyncio.to_thread(_publish, redis_server, 20_000, 100))
        got = [await recv_json(ws) for _ in range(20_100)]
        await live
    assert [q["volume"] for q in got] == list(range(20_100))
    assert [q["seq"] for q in got] == list(range(first + 1, first + 20_101))


async def test_a_client_that_sends_but_never_reads_is_closed_at_its_budget(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    Pings from a client that does not read used to move its pending quotes out of the
    hub's bound into an unbounded list; now past the queue budget it gets 1013.
    """
    server = start_server(
        redis_server, client_queue_limit=64 * 1024, close_timeout=30, slow_client_timeout=600
    )
    sock = raw_handshake(server.port, "/ws/quotes?mode=latest", rcvbuf=4096)
    try:
        start = 0

        def closed() -> bool:
            return server.metric("quotes_limit_hits_total", 'limit="client_queue"') == 1

        while not closed():
            assert start < 400_000, "the client was never closed"
            await asyncio.to_thread(_publish, redis_server, start, 5_000)
            start += 5_000
            sock.sendall(client_frame(b'{"action":"ping","id":1}'))
        _frames, code, reason = await asyncio.to_thread(read_frames_until_close, sock)
        assert (code, reason) == (1013, "Slow consumer: too much queued")
    finally:
        sock.close()
    assert server.metric("quotes_slow_consumer_closes_total") == 1
    assert "queued over 65536 bytes without reading" in server.log()


async def test_actions_weigh_by_size_against_the_inbound_rate(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    Burst 200: 20 pings pass, but 1,000-ticker sets weigh 21 frames each, so the
    tenth in a row closes the connection with 1008 and is not applied.
    """
    server = start_server(redis_server, ws_inbound_rate=1, ws_inbound_burst=200)
    big = json.dumps({"action": "set", "tickers": [f"S{i}" for i in range(1000)]})
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        for i in range(20):
            await ws.send(json.dumps({"action": "ping", "id": i}))
        assert [(await recv_json(ws))["id"] for _ in range(20)] == list(range(20))
        for _ in range(9):
            await ws.send(big)
        replies = [await recv_json(ws) for _ in range(8)]  # 20 + 8 * 21 = 188 tokens
        assert [r["event"] for r in replies] == ["subscribed"] * 8
        closed = await wait_closed(ws)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1008, "Policy violation: too many messages")
    assert server.metric("quotes_limit_hits_total", 'limit="inbound_rate"') == 1


async def test_hostile_actions_get_errors_and_no_traceback(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Nesting, 2,000 tickers and a long ping id are refused with an error; the stream goes on."""
    server = start_server(redis_server)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        await ws.send('{"action":"subscribe","tickers":' + "[" * 1000 + "]" * 1000 + "}")
        assert await recv_json(ws) == {
            "event": "error",
            "code": "invalid_message",
            "message": "the message is nested too deeply",
        }
        await ws.send(json.dumps({"action": "set", "tickers": [f"S{i}" for i in range(2000)]}))
        reply = await recv_json(ws)
        assert (reply["event"], reply["code"]) == ("error", "too_many_tickers")
        await ws.send(json.dumps({"action": "ping", "id": "x" * 65_000}))
        reply = await recv_json(ws)
        assert (reply["event"], reply["code"]) == ("error", "invalid_message")
        assert len(json.dumps(reply)) < 200
        redis_server.publish(CHANNEL, upstream_message("AAPL", 7))
        assert (await recv_json(ws))["volume"] == 7
    assert "Traceback" not in server.log()
