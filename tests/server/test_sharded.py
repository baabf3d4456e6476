"""The sharded upstream (SSUBSCRIBE to shard channels) on one plain, non-cluster redis-server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from redis import Redis

from quotes_core import ShardMap
from quotes_core.testing import upstream_message
from tests.helpers.processes import ROOT, RedisServer, wait_until
from tests.helpers.server import StartServer
from tests.helpers.ws import handshake_rejection, open_ws, recv_json, wait_closed

pytestmark = pytest.mark.anyio

SHARDS = ShardMap("quotes.realtime", 16)


def spublish(redis: RedisServer, ticker: str, seq: int) -> int:
    """SPUBLISH a quote on its ticker's shard channel; return the receiver count."""
    reply = redis.command("SPUBLISH", SHARDS.channel(ticker), upstream_message(ticker, seq))
    assert reply.startswith(b":"), reply
    return int(reply[1:].split(b"\r\n")[0])


def shard_channels(redis: RedisServer) -> set[str]:
    """The shard channels someone is subscribed to (PUBSUB SHARDCHANNELS)."""
    reply = redis.command("PUBSUB", "SHARDCHANNELS").decode()
    return {line for line in reply.split("\r\n") if line.startswith("quotes.")}


async def test_sharded_mode_subscribes_only_to_the_shards_clients_need(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Named tickers: their shards only; a wildcard client: all; none left: nothing."""
    server = start_server(redis_server, upstream="sharded", shards=16)
    ready = json.loads(server.get("/ready")[1])
    assert ready["source"] == "redis-sharded"
    assert ready["shards"] == {"shards": 16, "healthy": 16, "subscribed": 0, "lost": [], "down": []}
    assert server.metric("quotes_upstream_shards", 'state="healthy"') == 16
    assert shard_channels(redis_server) == set()
    apple, msft = SHARDS.channel("AAPL"), SHARDS.channel("MSFT")
    assert apple != msft
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL,msft") as ws:
        # the handshake waited for the SSUBSCRIBE: a quote published right after it arrives
        assert shard_channels(redis_server) == {apple, msft}
        assert spublish(redis_server, "AAPL", 1) == 1
        assert spublish(redis_server, "MSFT", 2) == 1
        assert [(q["ticker"], q["volume"]) for q in [await recv_json(ws), await recv_json(ws)]] == [
            ("AAPL", 1),
            ("MSFT", 2),
        ]
        assert json.loads(server.get("/ready")[1])["shards"]["subscribed"] == 2
        assert server.metric("quotes_upstream_shards_subscribed") == 2
        async with open_ws(f"{server.ws_url}/ws/quotes") as every:
            assert shard_channels(redis_server) == set(SHARDS.channels)
            assert json.loads(server.get("/ready")[1])["shards"]["subscribed"] == 16
            spublish(redis_server, "ZZZ", 3)
            assert (await recv_json(every))["ticker"] == "ZZZ"
        wait_until(
            lambda: shard_channels(redis_server) == {apple, msft},
            timeout=10,
            what="the wildcard's extra shards unsubscribed",
        )
        spublish(redis_server, "AAPL", 4)
        assert (await recv_json(ws))["volume"] == 4
    wait_until(lambda: shard_channels(redis_server) == set(), timeout=10, what="all unsubscribed")


async def test_sharded_mode_ignores_the_contract_channel(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """In sharded mode a classic PUBLISH on quotes.realtime reaches nobody."""
    server = start_server(redis_server, upstream="sharded")
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        assert redis_server.publish("quotes.realtime", upstream_message("AAPL", 1)) == 0
        spublish(redis_server, "AAPL", 2)
        assert (await recv_json(ws))["volume"] == 2


async def test_quotes_publish_sharded_reaches_sharded_servers(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """quotes-publish --upstream sharded SPUBLISHes each line on its ticker's shard channel."""
    server = start_server(redis_server, upstream="sharded", shards=4)
    lines = b"".join(upstream_message(t, i) + b"\n" for i, t in enumerate(["AAPL", "MSFT", "AAPL"]))
    lines += b"not json\n"
    async with open_ws(f"{server.ws_url}/ws/quotes") as ws:
        done = subprocess.run(  # noqa: ASYNC221 (a short CLI run; the server is another process)
            [
                *[sys.executable, "-m", "quotes_server.publish", "--redis-url", redis_server.url],
                *["--upstream", "sharded", "--shards", "4", "--stdin"],
            ],
            input=lines,
            capture_output=True,
            cwd=ROOT,
            timeout=30,
            check=True,
        )
        assert b"published 4 message(s) to 4 shard channel(s)" in done.stderr
        got = sorted([(await recv_json(ws))["volume"] for _ in range(3)])
        assert got == [0, 1, 2]
    wait_until(
        lambda: server.metric("quotes_upstream_invalid_total", 'reason="json"') == 1,
        timeout=10,
        what="the malformed line (shard 0) counted as invalid",
    )


async def test_single_redis_killed_closes_sharded_clients_then_recovers(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """One node owns every shard: killed past grace, everyone gets 1011 and handshakes 503."""
    server = start_server(redis_server, upstream="sharded", grace_period=0.5)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        spublish(redis_server, "AAPL", 1)
        assert (await recv_json(ws))["volume"] == 1
        redis_server.stop()
        closed = await wait_closed(ws)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1011
    status, _, body = await handshake_rejection(f"{server.ws_url}/ws/quotes?tickers=AAPL")
    assert status == 503
    assert "down" in body
    ready = json.loads(server.get("/ready")[1])
    assert ready["upstream"] == "down"
    assert ready["shards"]["down"] == list(range(16))
    assert ready["shards"]["healthy"] == 0
    assert server.metric("quotes_upstream_shards", 'state="down"') == 16
    redis_server.start()
    server.wait_ready(timeout=30)
    wait_until(
        lambda: json.loads(server.get("/ready")[1])["shards"]["healthy"] == 16,
        timeout=30,
        what="every shard healthy again",
    )
    assert json.loads(server.get("/ready")[1])["shards"]["down"] == []
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        spublish(redis_server, "AAPL", 7)
        assert (await recv_json(ws))["volume"] == 7


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--upstream", "cluster"], "upstream"), (["--shards", "0"], "shards")],
)
def test_bad_sharding_settings_are_refused(args: list[str], message: str) -> None:
    """A wrong --upstream or --shards stops the server with a clear message."""
    done = subprocess.run(
        [sys.executable, "-m", "quotes_server", "--redis-url", "redis://127.0.0.1:1/0", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert "invalid settings" in done.stderr
    assert message in done.stderr


async def test_live_subscribe_and_seq_clients_move_the_shard_interest(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A subscribe action subscribes the new ticker's shard; an opt-in (seq=1) client counts too."""
    server = start_server(redis_server, upstream="sharded", shards=16)
    apple, msft = SHARDS.channel("AAPL"), SHARDS.channel("MSFT")
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL&seq=1") as ws:
        assert shard_channels(redis_server) == {apple}
        await ws.send(json.dumps({"action": "subscribe", "tickers": ["MSFT"]}))
        reply = await recv_json(ws)
        assert reply == {"event": "subscribed", "tickers": ["AAPL", "MSFT"]}
        wait_until(
            lambda: shard_channels(redis_server) == {apple, msft},
            timeout=10,
            what="the new ticker's shard subscribed",
        )
        assert spublish(redis_server, "MSFT", 7) == 1
        quote = await recv_json(ws)
        assert (quote["ticker"], quote["volume"]) == ("MSFT", 7)
        assert "seq" in quote
        await ws.send(json.dumps({"action": "unsubscribe", "tickers": ["AAPL"]}))
        assert (await recv_json(ws))["tickers"] == ["MSFT"]
        wait_until(
            lambda: shard_channels(redis_server) == {msft},
            timeout=10,
            what="the dropped ticker's shard unsubscribed",
        )


async def test_a_sharded_burst_arrives_whole_and_in_order(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """5,000 pipelined SPUBLISHes on two shards (many reader turns) arrive, all, in order."""
    server = start_server(redis_server, upstream="sharded")
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL,MSFT") as ws:
        for ticker in ("AAPL", "MSFT"):
            burst = [upstream_message(ticker, i) for i in range(2_500)]
            redis_server.publish_many(SHARDS.channel(ticker), burst, command="SPUBLISH")
        got = [await recv_json(ws) for _ in range(5_000)]
    for ticker in ("AAPL", "MSFT"):
        assert [q["volume"] for q in got if q["ticker"] == ticker] == list(range(2_500))
    assert server.metric("quotes_conflated_total") == 0


async def test_sharded_links_auth_from_the_url_and_are_kept_alive_by_pongs(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    The password of the URL is sent (AUTH) on every link; a quiet link PINGs and each
    PONG keeps it (no reconnect); a wrong password keeps the server unready and says why.
    """
    redis_server.command("CONFIG", "SET", "requirepass", "s3cr3t")
    base = f"127.0.0.1:{redis_server.port}/0"
    common = {"upstream": "sharded", "redis_ping_interval": 0.2, "redis_pong_timeout": 2}
    good = start_server(None, redis_url=f"redis://:s3cr3t@{base}", **common)
    bad = start_server(None, redis_url=f"redis://:wrong@{base}", wait_ready=False, **common)
    admin = Redis.from_url(f"redis://:s3cr3t@{base}")
    try:
        async with open_ws(f"{good.ws_url}/ws/quotes?tickers=AAPL") as ws:
            wait_until(lambda: _pings(admin) >= 3, timeout=20, what="three PINGs")
            assert admin.spublish(SHARDS.channel("AAPL"), upstream_message("AAPL", 5)) == 1
            assert (await recv_json(ws))["volume"] == 5
    finally:
        admin.close()
    assert good.metric("quotes_upstream_reconnects_total") == 0
    # the wrong password already fails the topology query (CLUSTER SLOTS), which says why
    wait_until(
        lambda: "AuthenticationError" in bad.log(), timeout=20, what="the AUTH error in the log"
    )
    assert json.loads(bad.get("/ready")[1])["upstream"] != "up"
    assert "s3cr3t" not in good.log()
    assert ":wrong@" not in bad.log()


def _pings(redis: Redis) -> int:
    stats = redis.info("commandstats")
    ping = stats.get("cmdstat_ping")
    return int(ping["calls"]) if isinstance(ping, dict) else 0
