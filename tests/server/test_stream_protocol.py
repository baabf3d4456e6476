"""The stream protocol against the real server: options, actions, bad values, resume."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, ServerProcess, wait_until
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import handshake_rejection, open_ws, recv_json

pytestmark = pytest.mark.anyio

CONTRACT_KEYS = ["ticker", "timestamp", "open", "high", "low", "close", "volume", "bid", "ask"]


async def recv_any(ws: ClientConnection, timeout: float = 10.0) -> Any:
    """The next text frame, parsed (a quote, a control frame or a batch array)."""
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str)
    return json.loads(raw)


def publish_and_wait(redis: RedisServer, server: ServerProcess, messages: list[bytes]) -> None:
    """Publish, then wait until the server has read every message (so they are in its state)."""
    before = server.metric("quotes_upstream_messages_total")
    redis.publish_many(CHANNEL, messages)
    wait_until(
        lambda: server.metric("quotes_upstream_messages_total") >= before + len(messages),
        what="server read the published quotes",
    )


def vols(frames: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(f["ticker"], f["volume"]) for f in frames]


async def test_snapshot_first_then_live_and_plain_clients_get_no_snapshot(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """snapshot=1: the latest quote per matching ticker in publication order, then live."""
    server = start_server(redis_server)
    publish_and_wait(
        redis_server,
        server,
        [
            upstream_message("AAPL", 1),
            upstream_message("MSFT", 2),
            upstream_message("AAPL", 3),
            upstream_message("X", 4),
        ],
    )
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL,MSFT"
    async with open_ws(url + "&snapshot=1") as snap, open_ws(url) as plain:
        first = [await recv_json(snap), await recv_json(snap)]
        assert vols(first) == [("MSFT", 2), ("AAPL", 3)]
        assert list(first[0]) == CONTRACT_KEYS
        redis_server.publish(CHANNEL, upstream_message("MSFT", 5))
        assert vols([await recv_json(snap)]) == [("MSFT", 5)]
        assert vols([await recv_json(plain)]) == [("MSFT", 5)]


async def test_seq_adds_position_fields_after_the_contract_fields(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """seq=1: the same bytes as the plain frame plus seq and epoch; seq strictly increases."""
    server = start_server(redis_server)
    async with (
        open_ws(f"{server.ws_url}/ws/quotes?seq=1") as seq_ws,
        open_ws(f"{server.ws_url}/ws/quotes") as plain,
    ):
        redis_server.publish_many(CHANNEL, [upstream_message(t, n) for n, t in enumerate("ABAB")])
        for _ in range(4):
            raw_plain = await asyncio.wait_for(plain.recv(), 10)
            raw_seq = await asyncio.wait_for(seq_ws.recv(), 10)
            assert isinstance(raw_plain, str)
            assert isinstance(raw_seq, str)
            assert raw_seq.startswith(raw_plain[:-1] + ',"seq":')
            assert "seq" not in json.loads(raw_plain)
        # one more pair to check order and the epoch
        redis_server.publish_many(CHANNEL, [upstream_message("A", 10), upstream_message("B", 11)])
        a, b = await recv_json(seq_ws), await recv_json(seq_ws)
    assert list(a)[-2:] == ["seq", "epoch"]
    assert b["seq"] == a["seq"] + 1
    assert a["epoch"] == b["epoch"]
    assert a["epoch"]


async def test_bad_values_are_400_with_the_reason(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Every invalid option value is refused at the handshake with a reason."""
    server = start_server(redis_server)
    cases = {
        "snapshot=yes": "invalid snapshot 'yes'",
        "seq=2": "invalid seq '2'",
        "batch=1&batch=1": "give batch once",
        "max_hz=0": "invalid max_hz '0': expected a number from 0.1 to 100",
        "max_hz=1000": "invalid max_hz '1000'",
        "since=abc": "invalid since 'abc': expected <epoch>:<seq>",
        "since=e1:x": "invalid since 'e1:x'",
    }
    for query, reason in cases.items():
        status, _, body = await handshake_rejection(f"{server.ws_url}/ws/quotes?{query}")
        assert (status, body.strip()[: len(reason)]) == (400, reason), query


async def test_actions_change_the_filter_live_and_bad_ones_get_error_frames(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """subscribe/unsubscribe/set/ping answered in order; bad messages keep the socket open."""
    server = start_server(redis_server)
    publish_and_wait(redis_server, server, [upstream_message("MSFT", 1)])
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL&snapshot=1") as ws:
        await ws.send('{"action":"subscribe","tickers":["msft","GOOGL"]}')
        assert await recv_json(ws) == {"event": "subscribed", "tickers": ["AAPL", "GOOGL", "MSFT"]}
        assert vols([await recv_json(ws)]) == [("MSFT", 1)]  # the newly added ticker's snapshot
        await ws.send('{"action":"unsubscribe","tickers":["AAPL"]}')
        assert await recv_json(ws) == {"event": "subscribed", "tickers": ["GOOGL", "MSFT"]}
        redis_server.publish_many(
            CHANNEL, [upstream_message("AAPL", 2), upstream_message("GOOGL", 3)]
        )
        assert vols([await recv_json(ws)]) == [("GOOGL", 3)]
        bad = {
            "{nope": "invalid_json",
            '{"action":"dance"}': "unknown_action",
            '{"action":"set","tickers":["AAPL;"]}': "invalid_ticker",
            json.dumps({"action": "set", "tickers": [f"T{i}" for i in range(1001)]}): (
                "too_many_tickers"
            ),
            '{"action":"subscribe","tickers":"AAPL"}': "invalid_message",
        }
        for text, code in bad.items():
            await ws.send(text)
            frame = await recv_json(ws)
            assert (frame["event"], frame["code"]) == ("error", code), text
            assert frame["message"]
            assert "ticker" not in frame
        await ws.send('{"action":"ping","id":"abc"}')
        pong = await recv_json(ws)
        assert (pong["event"], pong["id"]) == ("pong", "abc")
        assert pong["server_time"].endswith("Z")
        assert len(pong["server_time"]) == 27
        await ws.send('{"action":"set","tickers":["*"]}')
        assert await recv_json(ws) == {"event": "subscribed", "tickers": "*"}
        # AAPL is new again: its snapshot is the quote published while unsubscribed
        assert vols([await recv_json(ws)]) == [("AAPL", 2)]
        redis_server.publish(CHANNEL, upstream_message("ZZZ", 4))
        assert vols([await recv_json(ws)]) == [("ZZZ", 4)]


async def test_max_hz_conflates_to_the_newest_quote(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """max_hz: a burst of one ticker arrives as fewer frames that end on the newest quote."""
    server = start_server(redis_server)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL,MSFT&max_hz=2") as ws:
        redis_server.publish_many(
            CHANNEL,
            [upstream_message("AAPL", n) for n in range(1, 41)] + [upstream_message("MSFT", 99)],
        )
        got: list[tuple[str, int]] = []
        while ("AAPL", 40) not in got or ("MSFT", 99) not in got:
            got += vols([await recv_json(ws)])
    aapl = [v for t, v in got if t == "AAPL"]
    assert aapl == sorted(aapl)
    assert aapl[-1] == 40
    assert len(aapl) < 40  # the burst was conflated, not queued
    assert server.metric("quotes_conflated_total") == 0  # hub conflation is a different thing


async def test_batch_sends_arrays_per_flush_with_nothing_lost(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """batch=1: every quote frame is a JSON array; all quotes arrive once, in order."""
    server = start_server(redis_server)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL&batch=1") as ws:
        redis_server.publish_many(CHANNEL, [upstream_message("AAPL", n) for n in range(200)])
        seen: list[int] = []
        frames = 0
        while len(seen) < 200:
            batch = await recv_any(ws)
            assert isinstance(batch, list)
            assert batch
            frames += 1
            seen += [q["volume"] for q in batch]
    assert seen == list(range(200))
    assert frames <= 200


async def test_all_options_combined(redis_server: RedisServer, start_server: StartServer) -> None:
    """snapshot+seq+max_hz+batch+mode=latest+actions together keep every promise."""
    server = start_server(redis_server)
    publish_and_wait(
        redis_server, server, [upstream_message("AAPL", 1), upstream_message("MSFT", 2)]
    )
    query = "tickers=AAPL&snapshot=1&seq=1&max_hz=50&batch=1&mode=latest"
    async with open_ws(f"{server.ws_url}/ws/quotes?{query}") as ws:
        snapshot = await recv_any(ws)
        assert [(q["ticker"], q["volume"]) for q in snapshot] == [("AAPL", 1)]
        assert {"seq", "epoch"} <= set(snapshot[0])
        await ws.send('{"action":"subscribe","tickers":["MSFT"]}')
        assert await recv_any(ws) == {"event": "subscribed", "tickers": ["AAPL", "MSFT"]}
        msft = await recv_any(ws)
        assert [(q["ticker"], q["volume"]) for q in msft] == [("MSFT", 2)]
        assert msft[0]["seq"] > snapshot[0]["seq"]
        redis_server.publish_many(CHANNEL, [upstream_message("MSFT", n) for n in range(3, 30)])
        last: list[int] = []
        while 29 not in last:
            frame = await recv_any(ws)
            assert isinstance(frame, list)
            last += [q["volume"] for q in frame]
        assert last == sorted(last)
        await ws.send('{"action":"ping","id":1}')
        while (frame := await recv_any(ws)) and isinstance(frame, list):
            pass  # quotes still in flight
        assert frame["event"] == "pong"


async def test_resume_after_a_dropped_tcp_connection_gets_exactly_the_missed_quotes(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A client cut off comes back with since= and gets the missed matching quotes, in order."""
    server = start_server(redis_server)
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL,MSFT"
    async with open_ws(url + "&seq=1") as ws:
        redis_server.publish_many(
            CHANNEL, [upstream_message("AAPL", 1), upstream_message("MSFT", 2)]
        )
        seen = [await recv_json(ws), await recv_json(ws)]
        ws.transport.abort()  # the TCP connection is dropped, no close handshake
    wait_until(lambda: server.metric("quotes_ws_connections") == 0, what="server saw the drop")
    missed = [
        upstream_message("AAPL", 3),
        upstream_message("GOOGL", 4),
        upstream_message("MSFT", 5),
    ]
    publish_and_wait(redis_server, server, missed)
    last = seen[-1]
    async with open_ws(f"{url}&since={last['epoch']}:{last['seq']}") as ws:
        recovered = await recv_json(ws)
        assert recovered == {
            "event": "recovered",
            "recovered": True,
            "epoch": last["epoch"],
            "seq": last["seq"] + 3,
        }
        replay = [await recv_json(ws), await recv_json(ws)]
        assert vols(replay) == [("AAPL", 3), ("MSFT", 5)]
        assert [q["seq"] for q in replay] == [last["seq"] + 1, last["seq"] + 3]
        redis_server.publish(CHANNEL, upstream_message("AAPL", 6))
        live = await recv_json(ws)
        assert (live["volume"], live["seq"]) == (6, last["seq"] + 4)


async def test_resume_after_a_server_restart_falls_back_to_the_snapshot(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Another process (new epoch): recovered:false, then the snapshot when asked for."""
    first = start_server(redis_server)
    async with open_ws(f"{first.ws_url}/ws/quotes?seq=1&tickers=AAPL") as ws:
        redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
        old = await recv_json(ws)
    port = first.port
    first.stop()
    second = start_server(redis_server, port=port)
    publish_and_wait(
        redis_server, second, [upstream_message("AAPL", 2), upstream_message("MSFT", 3)]
    )
    since = f"{old['epoch']}:{old['seq']}"
    url = f"{second.ws_url}/ws/quotes?tickers=AAPL&since={since}"
    async with open_ws(url + "&snapshot=1") as ws:
        recovered = await recv_json(ws)
        assert recovered["recovered"] is False
        assert recovered["epoch"] != old["epoch"]
        snap = await recv_json(ws)
        assert (snap["volume"], snap["epoch"], snap["seq"]) == (2, recovered["epoch"], 1)
        assert recovered["seq"] == 2
    async with open_ws(url) as ws:  # without snapshot=1: just the live stream
        assert (await recv_json(ws))["recovered"] is False
        redis_server.publish(CHANNEL, upstream_message("AAPL", 4))
        assert (await recv_json(ws))["volume"] == 4


async def test_history_window_bound_and_upstream_outage_end_resumability(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Past the window's count, or across an upstream outage (new epoch), resume fails."""
    server = start_server(redis_server, history_size=3, grace_period=60)
    async with open_ws(f"{server.ws_url}/ws/quotes?seq=1") as ws:
        redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
        first = await recv_json(ws)
        redis_server.publish_many(CHANNEL, [upstream_message("AAPL", n) for n in range(2, 6)])
        for _ in range(4):
            await recv_json(ws)
        base = f"{server.ws_url}/ws/quotes?since={first['epoch']}"
        async with open_ws(f"{base}:{first['seq']}") as late:  # 4 missed, window holds 3
            assert (await recv_json(late))["recovered"] is False
        async with open_ws(f"{base}:{first['seq'] + 1}") as ok:  # 3 missed: still held
            assert (await recv_json(ok))["recovered"] is True
            assert [(await recv_json(ok))["volume"] for _ in range(3)] == [3, 4, 5]
        # the upstream goes away and comes back: the connection stays (grace), epoch changes
        redis_server.restart()
        wait_until(
            lambda: server.metric("quotes_upstream_reconnects_total") >= 1, timeout=30,
            what="upstream re-subscribed",
        )  # fmt: skip
        redis_server.publish(CHANNEL, upstream_message("AAPL", 6))
        after = await recv_json(ws)
        assert after["volume"] == 6
        assert after["epoch"] != first["epoch"]
        assert after["seq"] == first["seq"] + 5  # seq goes on across epochs
    async with open_ws(f"{base}:{after['seq'] - 1}") as old:
        assert (await recv_json(old))["recovered"] is False
    async with open_ws(f"{server.ws_url}/ws/quotes?since={after['epoch']}:{after['seq']}") as now:
        assert await recv_json(now) == {
            "event": "recovered",
            "recovered": True,
            "epoch": after["epoch"],
            "seq": after["seq"],
        }


async def test_token_grant_limits_actions(
    redis_server: RedisServer, start_server: StartServer, tmp_path: Path
) -> None:
    """Tickers outside the token's grant, or "*", are forbidden; the filter stays."""
    tokens = tmp_path / "tokens"
    tokens.write_text("limited-token AAPL,MSFT\n")
    server = start_server(redis_server, auth_tokens_file=tokens)
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL&access_token=limited-token"
    async with open_ws(url) as ws:
        for tickers in (["GOOGL"], ["*"]):
            await ws.send(json.dumps({"action": "subscribe", "tickers": tickers}))
            frame = await recv_json(ws)
            assert (frame["event"], frame["code"]) == ("error", "forbidden")
        await ws.send('{"action":"set","tickers":["MSFT"]}')
        assert await recv_json(ws) == {"event": "subscribed", "tickers": ["MSFT"]}
        redis_server.publish_many(
            CHANNEL, [upstream_message("AAPL", 1), upstream_message("MSFT", 2)]
        )
        assert vols([await recv_json(ws)]) == [("MSFT", 2)]
