"""The stream over Server-Sent Events: the pinned shapes, answered by the real server."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, eventually, free_port
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.sse import SseReader
from tests.helpers.ws import handshake_rejection, open_ws

pytestmark = pytest.mark.anyio


async def test_headers_preface_and_one_event_per_quote_as_the_websocket_sends_it(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """200, the event-stream headers, retry:, then id <epoch>:<seq> and the seq=1 JSON."""
    server = start_server(redis_server)
    async with (
        open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL,MSFT&seq=1") as ws,
        await SseReader.open(server.port, "/sse/quotes?tickers=AAPL,MSFT") as sse,
    ):
        assert sse.status == 200
        assert sse.headers["content-type"] == "text/event-stream"
        assert sse.headers["cache-control"] == "no-cache"
        assert sse.headers["x-accel-buffering"] == "no"
        assert "access-control-allow-origin" not in sse.headers  # no Origin, no CORS
        await eventually(lambda: server.metric("quotes_sse_streams") == 1, what="registered")
        redis_server.publish_many(
            CHANNEL, [upstream_message("AAPL", 1), upstream_message("TSLA", 2)]
        )
        redis_server.publish(CHANNEL, upstream_message("MSFT", 3))
        assert await sse.event() == {"retry": "1000"}
        first, second = await sse.event(), await sse.event()
        sent = [await asyncio.wait_for(ws.recv(), 10) for _ in range(2)]
    assert [first["data"], second["data"]] == sent  # the very text of the WebSocket frames
    positions = [json.loads(text) for text in sent]
    assert [first["id"], second["id"]] == [f"{q['epoch']}:{q['seq']}" for q in positions]
    assert [q["ticker"] for q in positions] == ["AAPL", "MSFT"]
    assert "event" not in first  # an EventSource's "message"
    assert sse.raw.startswith(b"retry: 1000\n\nid: ")
    assert server.metric("quotes_sse_handshakes_total", 'outcome="accepted"') == 1
    assert server.metric("quotes_ws_handshakes_total", 'outcome="accepted"') == 1


async def test_batch_snapshot_and_the_v1_path(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """snapshot=1 sends the latest quote first; batch=1 sends arrays with the last id."""
    server = start_server(redis_server)
    redis_server.publish(CHANNEL, upstream_message("AAPL", 7))
    await eventually(lambda: server.metric("quotes_upstream_messages_total") == 1, what="published")
    async with await SseReader.open(
        server.port, "/v1/sse/quotes?tickers=AAPL&snapshot=1&batch=1"
    ) as sse:
        assert sse.status == 200
        assert await sse.event() == {"retry": "1000"}
        snap = await sse.event()
        assert [q["volume"] for q in json.loads(snap["data"])] == [7]
        redis_server.publish_many(CHANNEL, [upstream_message("AAPL", n) for n in (8, 9, 10)])
        got: list[dict[str, object]] = []
        while len(got) < 3:
            event = await sse.event()
            batch = json.loads(event["data"])
            assert isinstance(batch, list)
            assert event["id"] == f"{batch[-1]['epoch']}:{batch[-1]['seq']}"
            got += batch
    assert [q["volume"] for q in got] == [8, 9, 10]


async def test_an_allowed_origin_may_read_the_stream_cross_origin(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """An EventSource is a CORS request: an allowed Origin is echoed (and Vary: Origin)."""
    server = start_server(redis_server, cors_origins="https://app.example")
    headers = {"Origin": "https://app.example"}
    async with await SseReader.open(server.port, "/sse/quotes", headers) as sse:
        assert sse.status == 200
        assert sse.headers["access-control-allow-origin"] == "https://app.example"
        assert sse.headers["vary"] == "Origin"


async def test_since_and_last_event_id_resume_and_the_header_wins(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A resume: event: recovered, then exactly the missed quotes; Last-Event-ID beats since=."""
    server = start_server(redis_server)
    async with await SseReader.open(server.port, "/sse/quotes?tickers=AAPL") as sse:
        await sse.event()  # retry
        await eventually(lambda: server.metric("quotes_sse_streams") == 1, what="registered")
        redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
        last_id = (await sse.event())["id"]
    epoch = last_id.split(":")[0]
    redis_server.publish_many(CHANNEL, [upstream_message("AAPL", n) for n in (2, 3)])
    await eventually(lambda: server.metric("quotes_upstream_messages_total") == 3, what="published")

    async def resume(target: str, headers: dict[str, str] | None = None) -> list[int]:
        async with await SseReader.open(server.port, target, headers) as again:
            await again.event()  # retry
            recovered = await again.event()
            assert recovered["event"] == "recovered"
            assert json.loads(recovered["data"])["recovered"] is True
            return [json.loads((await again.event())["data"])["volume"] for _ in range(2)]

    assert await resume(f"/sse/quotes?tickers=AAPL&since={last_id}") == [2, 3]
    # since= alone would replay only quote 3; the header asks from quote 1 and wins
    header = {"Last-Event-ID": last_id}
    assert await resume(f"/sse/quotes?tickers=AAPL&since={epoch}:2", header) == [2, 3]


async def _refusal(port: int, target: str, headers: dict[str, str] | None = None) -> SseReader:
    sse = await SseReader.open(port, target, headers)
    sse.close()
    return sse


async def test_every_refusal_is_the_websocket_handshakes_answer(
    redis_server: RedisServer, start_server: StartServer, tmp_path: Path
) -> None:
    """Origin 403, auth 401/403, query and Last-Event-ID 400: text/plain, same reasons."""
    tokens = tmp_path / "tokens"
    tokens.write_text("s3cret AAPL\n")
    server = start_server(redis_server, cors_origins="https://app.example", auth_tokens_file=tokens)
    cases = [
        ("/sse/quotes?tickers=AAPL&access_token=s3cret", {"Origin": "https://evil.example"}, 403),
        ("/sse/quotes?tickers=AAPL", None, 401),
        ("/sse/quotes?tickers=AAPL&access_token=wrong", None, 401),
        ("/sse/quotes?tickers=MSFT", {"Authorization": "Bearer s3cret"}, 403),
        ("/sse/quotes?tickers=AAPL;X&access_token=s3cret", None, 400),
        ("/sse/quotes?tickers=AAPL&batch=2&access_token=s3cret", None, 400),
    ]
    for target, headers, status in cases:
        sse = await SseReader.open(server.port, target, headers)
        body = await sse.body()
        sse.close()
        ws_status, _h, ws_body = await handshake_rejection(
            f"{server.ws_url}{target.replace('/sse/', '/ws/')}",
            additional_headers={k: v for k, v in (headers or {}).items() if k != "Origin"},
            origin=(headers or {}).get("Origin"),
        )
        assert (sse.status, body) == (ws_status, ws_body), target
        assert sse.status == status, target
        assert sse.headers["content-type"].startswith("text/plain")
        if status == 401:
            assert sse.headers["www-authenticate"].startswith("Bearer")
    sse = await SseReader.open(
        server.port, "/sse/quotes?access_token=s3cret&tickers=AAPL", {"Last-Event-ID": "nope"}
    )
    assert sse.status == 400
    assert "invalid Last-Event-ID" in await sse.body()
    sse.close()
    for outcome, count in [
        ("origin_forbidden", 1),
        ("unauthorized", 2),
        ("forbidden", 1),
        ("bad_request", 3),
    ]:
        assert server.metric("quotes_sse_handshakes_total", f'outcome="{outcome}"') == count
        assert server.metric("quotes_ws_handshakes_total", f'outcome="{outcome}"') == (
            count - (outcome == "bad_request")
        )


async def test_caps_count_sse_streams(redis_server: RedisServer, start_server: StartServer) -> None:
    """An open SSE stream fills the per-address cap (429) and the process cap (503)."""
    server = start_server(redis_server, max_connections_per_ip=1, retry_after=7)
    async with await SseReader.open(server.port, "/sse/quotes") as sse:
        assert sse.status == 200
        status, headers, _body = await handshake_rejection(f"{server.ws_url}/ws/quotes")
        assert (status, headers.get("Retry-After")) == (429, "7")
        again = await _refusal(server.port, "/sse/quotes")
        assert (again.status, again.headers["retry-after"]) == (429, "7")
    await eventually(
        lambda: server.metric("quotes_sse_disconnects_total", 'code="none"') == 1, what="ended"
    )
    assert server.metric("quotes_sse_streams") == 0
    assert json.loads(server.get("/ready")[1])["connections"] == 0

    capped = start_server(redis_server, max_connections=1)
    async with open_ws(f"{capped.ws_url}/ws/quotes"):
        refused = await _refusal(capped.port, "/sse/quotes")
        assert (refused.status, refused.headers["retry-after"]) == (503, "5")
    assert capped.metric("quotes_sse_handshakes_total", 'outcome="over_capacity"') == 1


async def test_upstream_down_is_503_before_and_an_error_event_during(
    start_server: StartServer,
) -> None:
    """Redis lost past the grace period: event: error (1011), then the response ends."""
    redis = RedisServer(port=free_port())
    server = start_server(redis, wait_ready=False, grace_period=1)
    refused = await _refusal(server.port, "/sse/quotes")
    assert (refused.status, refused.headers["retry-after"]) == (503, "5")
    redis.start()
    try:
        server.wait_ready(timeout=20)
        async with await SseReader.open(server.port, "/sse/quotes?tickers=AAPL") as sse:
            await sse.event()  # retry
            redis.stop()
            last = await sse.events_until_end(timeout=30)
    finally:
        redis.stop()
    assert [e.get("event") for e in last] == ["error"]
    assert json.loads(last[0]["data"]) == {
        "event": "error",
        "code": "closed",
        "close_code": 1011,
        "message": "Internal server error",
    }
    assert sse.ended
    await eventually(
        lambda: server.metric("quotes_sse_disconnects_total", 'code="1011"') == 1, what="counted"
    )


async def test_keepalive_comment_after_silence(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A silent stream gets ": keepalive" comments (sse_keepalive), and nothing else."""
    server = start_server(redis_server, sse_keepalive=0.2)
    async with await SseReader.open(server.port, "/sse/quotes") as sse:
        assert await sse.event() == {"retry": "1000"}
        assert await sse.event() == {"comment": "keepalive"}
        assert await sse.event() == {"comment": "keepalive"}
    assert b": keepalive\n\n: keepalive\n\n" in sse.raw


async def test_shutdown_ends_the_response_cleanly(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """SIGTERM: event: error (1001), then the last chunk, before uvicorn's shutdown timeout."""
    server = start_server(redis_server, close_timeout=30)
    async with await SseReader.open(server.port, "/sse/quotes") as sse:
        await sse.event()  # retry
        await eventually(lambda: server.metric("quotes_sse_streams") == 1, what="registered")
        stopping = asyncio.create_task(asyncio.to_thread(server.stop))
        last = await sse.events_until_end()
        assert await stopping in (0, -signal.SIGTERM)  # uvicorn re-raises the signal
    assert [json.loads(e["data"])["close_code"] for e in last] == [1001]
    assert sse.ended
    # the stream ended before uvicorn's graceful-shutdown timeout, not cut by it
    assert "timeout graceful shutdown exceeded" not in server.log()
    assert "ASGI callable returned without completing response" not in server.log()


async def test_a_stalled_reader_conflates_and_is_closed_while_another_gets_everything(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A reader that stops reading: conflated, then reset after 1013; the other misses nothing."""
    server = start_server(redis_server, slow_client_timeout=5, close_timeout=1, buffer_size=1000)
    stalled = await SseReader.open(server.port, "/sse/quotes", rcvbuf=4096)
    tickers = ["AAPL", "MSFT", "GOOGL", "TSLA"]
    batch, rounds = 500, 100  # ~10 MB of events: more than the stalled socket's buffers
    try:
        async with await SseReader.open(server.port, "/sse/quotes") as healthy:
            await healthy.event()  # retry
            await eventually(lambda: server.metric("quotes_sse_streams") == 2, what="both open")
            got: list[int] = []
            for r in range(rounds):  # in step with the healthy reader: it never lags a bound
                first = r * batch
                redis_server.publish_many(
                    CHANNEL,
                    [upstream_message(tickers[n % 4], n) for n in range(first, first + batch)],
                )
                while len(got) < first + batch:
                    got.append(json.loads((await healthy.event())["data"])["volume"])
            assert got == list(range(batch * rounds))
            await eventually(
                lambda: server.metric("quotes_sse_disconnects_total", 'code="1013"') == 1,
                timeout=30,
                what="the stalled reader closed",
            )
            assert server.metric("quotes_slow_consumer_closes_total") == 1
            # counted when its stream ended: it held the newest quote per ticker, not 50,000
            assert server.metric("quotes_conflated_total") > 0
            assert "Traceback" not in server.log()
            assert server.metric("quotes_sse_streams") == 1  # the healthy one only
    finally:
        stalled.close()
