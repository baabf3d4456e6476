"""The bulk Redis reader: whole bursts, AUTH from the URL, garbage on the wire."""

from __future__ import annotations

import json

import pytest
from redis import Redis

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, wait_until
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import open_ws, recv_json

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("flush_window", [None, "0", "0.1"])
async def test_a_burst_many_turns_long_arrives_whole_and_in_order(
    redis_server: RedisServer, start_server: StartServer, flush_window: str | None
) -> None:
    """
    5,000 pipelined quotes (about 20 reader turns) reach a reading client, all, in
    order: with the default write pacing, with none, and with a long hold (each held
    write round is released by the quote budget, well under the client's buffer).
    """
    options = {} if flush_window is None else {"flush_window": flush_window}
    server = start_server(redis_server, **options)
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL,MSFT") as ws:
        burst = [upstream_message("AAPL" if i % 2 else "MSFT", i) for i in range(5_000)]
        redis_server.publish_many(CHANNEL, burst)
        volumes = [(await recv_json(ws))["volume"] for _ in range(5_000)]
    assert volumes == list(range(5_000))
    assert server.metric("quotes_conflated_total") == 0


async def test_password_in_the_url_is_used_and_a_wrong_one_is_reported(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """AUTH runs before SUBSCRIBE; a wrong password keeps the server at 503 and says why."""
    redis_server.command("CONFIG", "SET", "requirepass", "s3cr3t")
    base = f"127.0.0.1:{redis_server.port}/0"
    good = start_server(None, redis_url=f"redis://:s3cr3t@{base}")
    bad = start_server(None, redis_url=f"redis://:wrong@{base}", wait_ready=False)
    publisher = Redis.from_url(f"redis://:s3cr3t@{base}")
    try:
        async with open_ws(f"{good.ws_url}/ws/quotes?tickers=AAPL") as ws:
            publisher.publish(CHANNEL, upstream_message("AAPL", 7))
            assert (await recv_json(ws))["volume"] == 7
    finally:
        publisher.close()
    wait_until(lambda: "WRONGPASS" in bad.log(), timeout=20, what="the AUTH error in the log")
    assert json.loads(bad.get("/ready")[1])["upstream"] != "up"
    assert "s3cr3t" not in good.log()
    assert ":wrong@" not in bad.log()


def pings_answered(redis: RedisServer) -> int:
    stats = redis.command("INFO", "commandstats").decode()
    for line in stats.splitlines():
        if line.startswith("cmdstat_ping:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


async def test_a_quiet_channel_is_kept_alive_by_pongs(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Silence makes the reader PING; each PONG keeps the subscription (no reconnect)."""
    server = start_server(redis_server, redis_ping_interval=0.2, redis_pong_timeout=2)
    async with open_ws(f"{server.ws_url}/ws/quotes") as ws:
        wait_until(lambda: pings_answered(redis_server) >= 3, timeout=20, what="three PINGs")
        redis_server.command("PUBLISH", CHANNEL, "not json")  # counted, never sent
        wait_until(
            lambda: server.metric("quotes_upstream_invalid_total", 'reason="json"') == 1,
            timeout=10,
            what="the invalid message counted",
        )
        redis_server.publish(CHANNEL, upstream_message("AAPL", 2))
        assert (await recv_json(ws))["volume"] == 2
    assert server.metric("quotes_upstream_messages_total") == 2
    assert server.metric("quotes_upstream_reconnects_total") == 0
