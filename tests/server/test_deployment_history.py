"""
``--history redis``: stream positions that belong to the deployment, not to a process.

Real Redis, real servers, real clients: a resume answered by another instance, by a
restarted one, by either worker of ``--workers 2``; the sequencing instance killed
mid-stream (the survivor takes over: the resume is exact or ``recovered: false``,
never a gap behind ``recovered: true``); Redis restarted without its data (a new
epoch: ``recovered: false``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from websockets.exceptions import InvalidStatus

from quotes_core.testing import upstream_message
from tests.helpers.processes import RedisServer, ServerProcess, eventually, wait_until
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import open_ws, recv_json

pytestmark = pytest.mark.anyio

LONE_QUERY = "/ws/quotes?tickers=AAPL&seq=1"
REDIS_HISTORY = {"history": "redis", "history_lease": "1", "grace_period": "5"}


def status(server: ServerProcess) -> dict[str, Any]:
    _code, body = server.get("/ready")
    history: dict[str, Any] = json.loads(body)["history"]
    return history


def sequencer_of(*servers: ServerProcess) -> ServerProcess:
    """Wait until one of ``servers`` sequences; return it."""
    found: list[ServerProcess] = []

    def one() -> bool:
        found[:] = [s for s in servers if status(s).get("role") == "sequencing"]
        return len(found) == 1

    wait_until(one, what="one sequencing instance")
    return found[0]


def published(redis: RedisServer, servers: list[ServerProcess], messages: list[bytes]) -> None:
    """Publish, then wait until every server has published them to its clients."""
    before = [status(s)["seq"] for s in servers]
    redis.publish_many(CHANNEL, messages)
    wait_until(
        lambda: all(
            status(s)["seq"] >= b + len(messages) for s, b in zip(servers, before, strict=True)
        ),
        what="every server at the new positions",
    )


def vols(frames: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(f["ticker"], f["volume"]) for f in frames]


async def read_some(url: str, n: int) -> list[dict[str, Any]]:
    async with open_ws(url) as ws:
        return [await recv_json(ws) for _ in range(n)]


async def resume(url: str, last: dict[str, Any], n: int) -> tuple[dict[str, Any], list[Any]]:
    """Resume after ``last``: the ``recovered`` event and the next ``n`` frames."""
    async with open_ws(f"{url}&since={last['epoch']}:{last['seq']}") as ws:
        event = await recv_json(ws)
        return event, [await recv_json(ws) for _ in range(n)]


async def test_a_resume_on_another_instance_gets_exactly_the_missed_quotes(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    a = start_server(redis_server, **REDIS_HISTORY)
    b = start_server(redis_server, **REDIS_HISTORY)
    sequencer_of(a, b)
    query = "/ws/quotes?tickers=AAPL,MSFT&seq=1"
    async with open_ws(a.ws_url + query) as ws:
        published(redis_server, [a, b], [upstream_message("AAPL", 1), upstream_message("MSFT", 2)])
        seen = [await recv_json(ws), await recv_json(ws)]
    missed = [
        upstream_message("AAPL", 3),
        upstream_message("GOOGL", 4),
        upstream_message("MSFT", 5),
    ]
    published(redis_server, [a, b], missed)
    last = seen[-1]
    event, replay = await resume(b.ws_url + query, last, 2)
    assert event == {
        "event": "recovered",
        "recovered": True,
        "epoch": last["epoch"],
        "seq": last["seq"] + 3,
    }
    assert vols(replay) == [("AAPL", 3), ("MSFT", 5)]
    assert [q["seq"] for q in replay] == [last["seq"] + 1, last["seq"] + 3]
    assert {q["epoch"] for q in replay} == {last["epoch"]}
    assert status(a)["epoch"] == status(b)["epoch"] == last["epoch"]


async def test_the_sequencer_restarted_hands_over_and_comes_back_with_the_window(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    A rolling restart: the sequencing instance stops (SIGTERM), quotes go on being
    published at once, the other instance takes over in the same epoch (its own
    subscription holds what came meanwhile), and the restarted instance answers a
    resume exactly, snapshot included.
    """
    a = start_server(redis_server, **REDIS_HISTORY)
    b = start_server(redis_server, **REDIS_HISTORY)
    first = sequencer_of(a, b)
    other = b if first is a else a
    query = "/ws/quotes?tickers=AAPL,MSFT&seq=1"
    async with open_ws(first.ws_url + query) as ws:
        published(redis_server, [a, b], [upstream_message("AAPL", 1)])
        last = await recv_json(ws)
    port = first.port
    first.stop()
    redis_server.publish_many(CHANNEL, [upstream_message("MSFT", n) for n in range(2, 12)])
    assert sequencer_of(other) is other
    wait_until(lambda: status(other)["seq"] >= last["seq"] + 10, what="the quotes appended")
    back = start_server(redis_server, port=port, **REDIS_HISTORY)
    published(redis_server, [back, other], [upstream_message("AAPL", 12)])
    event, replay = await resume(back.ws_url + query, last, 11)
    assert event == {
        "event": "recovered",
        "recovered": True,
        "epoch": last["epoch"],
        "seq": last["seq"] + 11,
    }
    assert vols(replay) == [("MSFT", n) for n in range(2, 12)] + [("AAPL", 12)]
    assert [q["seq"] for q in replay] == list(range(last["seq"] + 1, last["seq"] + 12))
    assert status(other)["new_epochs"] == 0
    assert status(back)["role"] == "following"
    async with open_ws(back.ws_url + "/ws/quotes?tickers=AAPL,MSFT&snapshot=1") as ws:
        snap = [await recv_json(ws), await recv_json(ws)]
    assert vols(snap) == [("MSFT", 11), ("AAPL", 12)]


async def lone_instance_after_one_quote(
    redis: RedisServer, start_server: StartServer
) -> tuple[ServerProcess, dict[str, Any]]:
    """One sequencing instance, and the AAPL quote a ``seq=1`` client read from it."""
    server = start_server(redis, **REDIS_HISTORY)
    sequencer_of(server)
    async with open_ws(server.ws_url + LONE_QUERY) as ws:
        published(redis, [server], [upstream_message("AAPL", 1)])
        return server, await recv_json(ws)


async def test_a_lone_instance_restarted_cannot_prove_continuity(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Nobody listened while it was away: a new epoch, and the resume says so."""
    a, last = await lone_instance_after_one_quote(redis_server, start_server)
    port = a.port
    a.stop()
    a = start_server(redis_server, port=port, **REDIS_HISTORY)
    sequencer_of(a)
    wait_until(lambda: status(a)["epoch"] != last["epoch"], what="a new epoch")
    assert status(a)["new_epochs"] == 1
    published(redis_server, [a], [upstream_message("AAPL", 2)])
    event, live = await resume(a.ws_url + LONE_QUERY + "&snapshot=1", last, 1)
    assert (event["recovered"], event["epoch"]) == (False, status(a)["epoch"])
    assert vols(live) == [("AAPL", 2)]


@contextmanager
def publishing_numbered(redis: RedisServer, ticker: str = "AAPL") -> Iterator[list[int]]:
    """Publish ``ticker`` quotes numbered 1, 2, ... every few ms until the block ends;
    yields the list of numbers published so far (complete once the block has ended)."""
    sent: list[int] = []
    stop = threading.Event()

    def run() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            redis.publish(CHANNEL, upstream_message(ticker, n))
            sent.append(n)
            stop.wait(0.005)  # pacing of the traffic, not synchronisation

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join(timeout=10)


async def test_the_sequencer_killed_mid_stream_the_survivor_continues_without_a_gap(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    SIGKILL of the sequencing instance while quotes flow: the survivor takes the lease
    when it lapses, finds the stream's newest entries in its own subscription's
    buffer and appends what followed, so a resume across the takeover is exact; had
    it not found them, a new epoch would make the resume say ``recovered: false``.
    """
    a = start_server(redis_server, **REDIS_HISTORY)
    b = start_server(redis_server, **REDIS_HISTORY)
    victim = sequencer_of(a, b)
    survivor = b if victim is a else a
    query = "/ws/quotes?tickers=AAPL&seq=1"
    plain: list[int] = []  # a plain client on the survivor, reading all along
    async with open_ws(survivor.ws_url + "/ws/quotes?tickers=AAPL") as live:

        async def collect() -> None:
            while True:
                plain.append(json.loads(await live.recv())["volume"])

        reader = asyncio.get_running_loop().create_task(collect())
        with publishing_numbered(redis_server) as sent:
            last = (await read_some(survivor.ws_url + query, 5))[-1]
            victim.stop(signal.SIGKILL)
            await eventually(
                lambda: status(survivor).get("role") == "sequencing", what="the takeover"
            )
            at_takeover = len(sent)
            await eventually(lambda: len(sent) > at_takeover + 20, what="quotes after it")
        total = len(sent)
        await eventually(lambda: bool(plain) and plain[-1] == total, what="the plain client")
        reader.cancel()
    # plain clients take the upstream's quotes as they come: nothing lost, none late
    assert plain == list(range(plain[0], total + 1))
    wait_until(
        lambda: status(survivor)["seq"] >= last["seq"] + total - last["volume"],
        what="the survivor at the newest position",
    )
    after = total - last["volume"]
    event, replay = await resume(survivor.ws_url + query, last, after if after <= 2000 else 0)
    history = status(survivor)
    if history["new_epochs"]:
        assert event["recovered"] is False  # continuity not proven: said so
    else:
        assert event == {
            "event": "recovered",
            "recovered": True,
            "epoch": last["epoch"],
            "seq": last["seq"] + after,
        }
        assert [q["volume"] for q in replay] == list(range(last["volume"] + 1, total + 1))
        assert [q["seq"] for q in replay] == list(range(last["seq"] + 1, last["seq"] + after + 1))
    assert history["new_epochs"] == 0  # this set-up proves continuity: it must be found


async def test_redis_restarted_without_its_data_starts_a_new_epoch(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    a, last = await lone_instance_after_one_quote(redis_server, start_server)
    redis_server.restart()  # SIGKILL and start again, empty (no persistence)
    wait_until(lambda: status(a)["epoch"] != last["epoch"], what="a new epoch")
    sequencer_of(a)
    published(redis_server, [a], [upstream_message("AAPL", 2)])
    event, snap = await resume(a.ws_url + LONE_QUERY + "&snapshot=1", last, 1)
    assert (event["recovered"], event["epoch"]) == (False, status(a)["epoch"])
    assert vols(snap) == [("AAPL", 2)]


async def both_workers_ready(url: str) -> None:
    """
    Wait until handshakes stop answering 503: /ready reaches one worker at a time (the
    kernel picks it), so a worker still loading the window can hide behind the other.
    """
    deadline = asyncio.get_running_loop().time() + 15
    for _ in range(4):  # a few handshakes in a row, so that both workers are met
        while True:
            try:
                async with open_ws(url):
                    break
            except InvalidStatus as exc:
                if exc.response.status_code != 503:
                    raise
                assert asyncio.get_running_loop().time() < deadline, "a worker never ready"
                await asyncio.sleep(0.05)


async def test_either_worker_of_two_answers_a_resume(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    ``--workers 2``: each connection lands on one worker or the other (the kernel
    chooses), the resume too; every resume is exact. Six rounds: all six on one
    worker has odds of 1 in 64; the memory backend fails about half of the rounds.
    """
    server = start_server(redis_server, workers=2, **REDIS_HISTORY)
    wait_until(
        lambda: all(server.get("/ready")[0] == 200 for _ in range(8)), what="both workers ready"
    )
    # one of the two sequences (each /ready is answered by either worker)
    wait_until(lambda: status(server).get("role") == "sequencing", what="a sequencing worker")
    query = "/ws/quotes?tickers=AAPL,MSFT&seq=1"
    n = 0
    for _ in range(6):
        await both_workers_ready(server.ws_url + query)
        async with open_ws(server.ws_url + query) as ws:
            n += 1
            redis_server.publish(CHANNEL, upstream_message("AAPL", n))
            last = await recv_json(ws)
        assert last["volume"] == n
        redis_server.publish_many(
            CHANNEL,
            [
                upstream_message("MSFT", n + 1),
                upstream_message("GOOGL", n + 2),
                upstream_message("AAPL", n + 3),
            ],
        )
        # what the worker has not published yet when the client arrives comes live
        await both_workers_ready(server.ws_url + query)
        event, frames = await resume(server.ws_url + query, last, 2)
        assert (event["recovered"], event["epoch"]) == (True, last["epoch"])
        assert vols(frames) == [("MSFT", n + 1), ("AAPL", n + 3)]
        assert [q["seq"] for q in frames] == [last["seq"] + 1, last["seq"] + 3]
        n += 3


async def test_a_malformed_upstream_message_is_counted_everywhere_and_takes_no_position(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    a = start_server(redis_server, **REDIS_HISTORY)
    b = start_server(redis_server, **REDIS_HISTORY)
    sequencer_of(a, b)
    async with open_ws(b.ws_url + "/ws/quotes?tickers=AAPL&seq=1") as ws:
        published(redis_server, [a, b], [upstream_message("AAPL", 1)])
        first = await recv_json(ws)
        redis_server.publish_many(
            CHANNEL,
            [b"{not json", upstream_message("AAPL", 2, close="x"), upstream_message("AAPL", 3)],
        )
        after = await recv_json(ws)
    assert (after["volume"], after["seq"]) == (3, first["seq"] + 1)  # no position for them
    for server in (a, b):
        wait_until(
            lambda s=server: (
                s.metric("quotes_upstream_invalid_total", 'reason="json"') == 1
                and s.metric("quotes_upstream_invalid_total", 'reason="schema"') == 1
            ),
            what="both invalid messages counted on every instance",
        )


async def test_the_appends_go_to_the_urls_database_and_survive_a_script_flush(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    The appender's own connection selects the URL's database, and when Redis forgets
    the append script (``SCRIPT FLUSH``, as after a restart that kept the data) the next
    append loads it again: the epoch goes on, and a resume across it is exact.
    """
    url = redis_server.url.removesuffix("/0") + "/3"
    a = start_server(redis_server, redis_url=url, **REDIS_HISTORY)
    sequencer_of(a)
    async with open_ws(a.ws_url + LONE_QUERY) as ws:
        published(redis_server, [a], [upstream_message("AAPL", 1)])
        last = await recv_json(ws)
    db3 = redis.Redis(port=redis_server.port, db=3)
    db0 = redis.Redis(port=redis_server.port, db=0)
    try:
        assert db3.xlen(f"{CHANNEL}.history") == 1
        assert not db0.exists(f"{CHANNEL}.history")
        assert db3.script_flush()
        published(redis_server, [a], [upstream_message("MSFT", 2), upstream_message("AAPL", 3)])
        assert db3.xlen(f"{CHANNEL}.history") == 3
    finally:
        db3.close()
        db0.close()
    assert status(a)["epoch"] == last["epoch"]
    event, replay = await resume(a.ws_url + LONE_QUERY, last, 1)
    assert (event["recovered"], event["seq"]) == (True, last["seq"] + 2)
    assert vols(replay) == [("AAPL", 3)]
