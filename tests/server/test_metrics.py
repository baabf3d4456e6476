"""The delivery counters add up: frames forwarded, and the socket writes that carried them."""

from __future__ import annotations

import gc
import json

import pytest

from quotes_core.testing import upstream_message
from quotes_server.metrics import DISCONNECT_CODES, Metrics, disconnect_label
from tests.helpers.processes import RedisServer, wait_until
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import collect_until, open_ws

pytestmark = pytest.mark.anyio


async def test_forwarded_frames_and_socket_writes(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    Every delivered frame is counted once; writes are at least one and at most one
    per frame; write rounds are at least one and never more than the writes (each
    round writes to at least one client).
    """
    server = start_server(redis_server)
    messages = [upstream_message("AAPL", i) for i in range(500)]
    async with open_ws(f"{server.ws_url}/ws/quotes") as a, open_ws(f"{server.ws_url}/ws") as b:
        redis_server.publish_many(CHANNEL, messages)
        for ws in (a, b):
            got = await collect_until(ws, lambda q: q["volume"] == 499)
            assert len(got) == 500
    wait_until(lambda: server.metric("quotes_forwarded_total") == 1000, what="1000 forwarded")
    writes = server.metric("quotes_socket_writes_total")
    assert 2 <= writes <= 1000
    flushes = server.metric("quotes_flushes_total")
    assert 1 <= flushes <= writes


def test_the_server_runs_on_uvloop(redis_server: RedisServer, start_server: StartServer) -> None:
    """uvicorn's default loop picks uvloop (locked with uvicorn[standard]); /ready says so."""
    server = start_server(redis_server)
    status, body = server.get("/ready")
    assert status == 200
    assert json.loads(body)["loop"] == "uvloop"


async def test_client_chosen_close_codes_count_as_other(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A client closing with 4321 is counted under code="other"; no "4321" series appears."""
    server = start_server(redis_server)
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    async with open_ws(url) as ws:
        await ws.close(code=4321, reason="mine")
    async with open_ws(url) as ws:
        await ws.close(code=1000)
    # the series appears with the first close counted under it: until then, no line
    wait_until(
        lambda: 'quotes_ws_disconnects_total{code="1000"} 1.0' in server.get("/metrics")[1],
        what="the 1000 close counted",
    )
    assert server.metric("quotes_ws_disconnects_total", 'code="other"') == 1
    assert "4321" not in server.get("/metrics")[1]


def test_disconnect_label_is_bounded() -> None:
    """Standard codes keep their label, every other code is "other", no code is "none"."""
    assert disconnect_label(1000) == "1000"
    assert disconnect_label(1013) == "1013"
    assert disconnect_label(1015) == "1015"
    assert disconnect_label(None) == "none"
    labels = {disconnect_label(code) for code in range(65536)}
    assert labels == {str(c) for c in DISCONNECT_CODES} | {"other"}


def test_metrics_say_whether_the_prices_are_synthetic(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """quotes_demo_feed is 1 on a --demo server and 0 on one streaming from Redis."""
    demo = start_server(None)
    real = start_server(redis_server)
    assert demo.metric("quotes_demo_feed") == 1.0
    assert real.metric("quotes_demo_feed") == 0.0
    assert "serving the built-in DEMO feed" in demo.log()
    assert "DEMO" not in real.log()


def test_each_garbage_collection_is_timed_while_installed() -> None:
    """The GC timer observes every collection by generation, and nothing once removed."""
    metrics = Metrics()

    def count(generation: int) -> float:
        value = metrics.registry.get_sample_value(
            "quotes_gc_pause_seconds_count", {"generation": str(generation)}
        )
        assert value is not None
        return value

    assert [count(g) for g in range(3)] == [0.0, 0.0, 0.0]
    gc.disable()  # only the collections asked for below: none set off by allocations
    try:
        metrics.gc_timer.install()
        try:
            gc.collect(2)
            gc.collect(0)
        finally:
            metrics.gc_timer.remove()
        assert [count(g) for g in range(3)] == [1.0, 0.0, 1.0]
        gc.collect(2)
        assert count(2) == 1.0
    finally:
        gc.enable()


def test_metrics_show_the_servers_garbage_collections(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """/metrics has a pause histogram per generation; collections that ran are counted."""
    server = start_server(redis_server)
    for generation in ("0", "1", "2"):
        assert server.metric("quotes_gc_pause_seconds_count", f'generation="{generation}"') >= 0
    # an idle server may never need a young collection (the runtime raises the first
    # threshold to 5,000): 10,000 quotes kept in the resume window set one off
    redis_server.publish_many(CHANNEL, [upstream_message("AAPL", i) for i in range(10_000)])
    wait_until(
        lambda: server.metric("quotes_gc_pause_seconds_count", 'generation="0"') > 0,
        what="a young collection timed",
    )
