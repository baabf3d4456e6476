"""The sharded upstream on a real 3-master Redis Cluster: fan-out, failover, slot migration."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from quotes_core import ShardMap
from quotes_core.testing import upstream_message
from tests.helpers.cluster import RedisClusterProcesses, ShardedPublisher
from tests.helpers.processes import TestSetupError, eventually
from tests.helpers.server import StartServer
from tests.helpers.ws import open_ws

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SHARDS = ShardMap("quotes.realtime", 16)
END = 10**9


@pytest.fixture
def cluster() -> Iterator[RedisClusterProcesses]:
    try:
        c = RedisClusterProcesses(masters=3).start()
    except TestSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield c
    finally:
        c.stop()


def tickers_on(c: RedisClusterProcesses, count_per_master: int = 1) -> list[str]:
    """Symbols whose shard channels are owned by different masters (each master covered)."""
    picked: dict[int, list[str]] = defaultdict(list)
    for i in range(1000):
        t = f"T{i:03d}"
        port = c.owner(SHARDS.channel(t)).port
        if len(picked[port]) < count_per_master:
            picked[port].append(t)
    assert len(picked) == 3
    return [t for ts in picked.values() for t in ts]


@dataclass
class Feed:
    """A WebSocket client reading quotes in the background: per-ticker sequence numbers."""

    ws: ClientConnection
    seqs: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    closed: ConnectionClosed | None = None
    task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                q = json.loads(raw)
                self.seqs[q["ticker"]].append(q["volume"])
        except ConnectionClosed as exc:
            self.closed = exc


async def feed(url: str) -> Feed:
    ws = await open_ws(url)
    f = Feed(ws)
    f.task = asyncio.get_running_loop().create_task(f._read())
    return f


async def poll(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    await eventually(cond, timeout=timeout, interval=0.02, what=what)


def ended(f: Feed, tickers: list[str]) -> bool:
    return all(f.seqs[t][-1:] == [END] for t in tickers)


def publish_end(c: RedisClusterProcesses, tickers: list[str]) -> None:
    for t in tickers:
        c.owner(SHARDS.channel(t)).command("SPUBLISH", SHARDS.channel(t), upstream_message(t, END))


async def test_two_servers_deliver_every_quote_exactly_once(
    cluster: RedisClusterProcesses, start_server: StartServer
) -> None:
    """Two servers, different filters: each client gets every matching quote once, in order."""
    a, b, c = tickers_on(cluster)
    env = {"upstream": "sharded", "shards": SHARDS.shards}
    s1 = start_server(None, redis_url=cluster.nodes[0].url, **env)
    s2 = start_server(None, redis_url=cluster.nodes[1].url, **env)
    wants = {
        f"{s1.ws_url}/ws/quotes?tickers={a}": [a],
        f"{s1.ws_url}/ws/quotes?tickers={b},{c}": [b, c],
        f"{s2.ws_url}/ws/quotes?tickers={a},{c}": [a, c],
        f"{s2.ws_url}/ws/quotes": [a, b, c],
    }
    feeds = {url: await feed(url) for url in wants}
    pub = ShardedPublisher(cluster.url, [a, b, c], SHARDS)
    pub.start()
    await poll(lambda: pub.total() >= 600, "the publisher made progress")
    pub.stop()
    publish_end(cluster, [a, b, c])
    for url, f in feeds.items():
        await poll(lambda f=f, t=wants[url]: ended(f, t), f"end markers on {url}")
        for t in [a, b, c]:
            got = f.seqs.get(t, [])
            if t in wants[url]:
                assert got == [*pub.acked[t], END], f"{url} {t}"
            else:
                assert got == [], f"{url} received {t} it did not ask for"
        await f.ws.close()
    assert pub.failed == 0


async def test_slot_migration_loses_nothing_outside_the_window(
    cluster: RedisClusterProcesses, start_server: StartServer
) -> None:
    """The slot of one shard moves to another master mid-stream: only that shard has a gap."""
    moved, steady, _ = tickers_on(cluster)
    server = start_server(None, redis_url=cluster.url, upstream="sharded", shards=SHARDS.shards)
    f = await feed(f"{server.ws_url}/ws/quotes?tickers={moved},{steady}")
    pub = ShardedPublisher(cluster.url, [moved, steady], SHARDS).start()
    await poll(lambda: len(f.seqs[moved]) >= 50 and len(f.seqs[steady]) >= 50, "streaming")
    old = cluster.owner(SHARDS.channel(moved))
    target = next(n for n in cluster.masters_now() if n is not old)
    slot = SHARDS.slots[SHARDS.shard(moved)]
    await asyncio.to_thread(cluster.migrate_slot, slot, target)
    assert cluster.owner(SHARDS.channel(moved)) is target
    mark = len(pub.acked[moved])
    await poll(lambda: len(f.seqs[moved]) > 0 and f.seqs[moved][-1] > mark + 20, "moved shard back")
    pub.stop()
    publish_end(cluster, [moved, steady])
    await poll(lambda: ended(f, [moved, steady]), "end markers")
    assert f.closed is None
    await f.ws.close()
    assert f.seqs[steady] == [*pub.acked[steady], END]
    got = f.seqs[moved][:-1]
    acked = pub.acked[moved]
    assert got == sorted(set(got))  # no duplicate, no reordering
    missing = [i for i, s in enumerate(acked) if s not in set(got)]
    # whatever was lost is one contiguous run: the migration's resubscription window
    assert missing == list(range(missing[0], missing[0] + len(missing))) if missing else True
    assert "slot migrated" in server.log() or "moved to" in server.log()


async def test_master_killed_replica_promoted(start_server: StartServer) -> None:
    """
    A shard master dies and its replica is promoted: clients of other shards are untouched;
    with a long grace the shard's clients recover, with a short one only they get 1011.
    """
    try:
        c = RedisClusterProcesses(masters=3, replicas=1).start()
    except TestSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        # the victim shard's master is not the node the servers and publisher start from
        for t in (f"T{i:03d}" for i in range(1000)):
            if c.owner(SHARDS.channel(t)) is not c.nodes[0]:
                victim_ticker = t
                break
        victim = c.owner(SHARDS.channel(victim_ticker))
        other = next(
            f"T{i:03d}"
            for i in range(1000)
            if c.owner(SHARDS.channel(f"T{i:03d}")) not in (victim,)
        )
        env = {"upstream": "sharded", "shards": SHARDS.shards, "redis_url": c.url}
        patient = start_server(None, grace_period=60, **env)
        strict = start_server(None, grace_period=0.5, **env)
        p_victim = await feed(f"{patient.ws_url}/ws/quotes?tickers={victim_ticker}")
        p_other = await feed(f"{patient.ws_url}/ws/quotes?tickers={other}")
        s_victim = await feed(f"{strict.ws_url}/ws/quotes?tickers={victim_ticker}")
        s_other = await feed(f"{strict.ws_url}/ws/quotes?tickers={other}")
        s_all = await feed(f"{strict.ws_url}/ws/quotes")
        pub = ShardedPublisher(c.url, [victim_ticker, other], SHARDS).start()
        await poll(lambda: len(p_victim.seqs[victim_ticker]) >= 20, "streaming")
        replica = c.replica_of(victim)
        victim_shards = [
            n for n, channel in enumerate(SHARDS.channels) if c.owner(channel) is victim
        ]
        c.kill(victim)
        await poll(lambda: s_victim.closed is not None and s_all.closed is not None, "1011s")
        for closed in (s_victim.closed, s_all.closed):
            assert closed is not None
            assert closed.rcvd is not None
            assert closed.rcvd.code == 1011
        # /ready names the shards that are down; the server still accepts the others
        status, body = strict.get("/ready")
        health = json.loads(body)["shards"]
        assert status == 200
        assert health["down"] == victim_shards
        assert health["healthy"] == SHARDS.shards - len(victim_shards)
        assert json.loads(patient.get("/ready")[1])["shards"]["lost"] == victim_shards
        await asyncio.to_thread(c.failover_to, replica)
        mark = len(pub.acked[victim_ticker])
        await poll(
            lambda: p_victim.seqs[victim_ticker][-1] > mark + 10, "the patient client recovers"
        )
        pub.stop()
        assert c.owner(SHARDS.channel(other)).alive()
        c.owner(SHARDS.channel(other)).command(
            "SPUBLISH", SHARDS.channel(other), upstream_message(other, END)
        )
        for f in (p_other, s_other):
            await poll(lambda f=f: ended(f, [other]), "end marker")
            assert f.closed is None
            assert f.seqs[other] == [*pub.acked[other], END]  # untouched by the failover
        assert p_victim.closed is None
        got = p_victim.seqs[victim_ticker]
        assert got == sorted(set(got))
        # the strict server accepts the shard's clients again once it is back (its own
        # link re-subscribes on its own schedule: wait for its /ready to say so)
        await poll(
            lambda: not json.loads(strict.get("/ready")[1])["shards"]["down"],
            "the strict server's shards back up",
        )
        s_back = await feed(f"{strict.ws_url}/ws/quotes?tickers={victim_ticker}")
        assert s_back.closed is None
        for f in (p_victim, p_other, s_other, s_back, s_victim, s_all):
            await f.ws.close()
    finally:
        c.stop()


async def test_simultaneous_bursts_on_three_masters_share_one_budget(
    cluster: RedisClusterProcesses, start_server: StartServer
) -> None:
    """
    Pipelined bursts on three masters at once reach an every-ticker client whole and in
    order, with a client buffer of 300: the three links together hand the runtime at
    most one budget (256) between two write rounds, not 256 each.
    """
    tickers = tickers_on(cluster)
    n = 1000
    server = start_server(
        None, redis_url=cluster.url, upstream="sharded", shards=SHARDS.shards, buffer_size=300
    )
    f = await feed(f"{server.ws_url}/ws/quotes")
    pipes = []
    for t in tickers:
        pipe = cluster.owner(SHARDS.channel(t)).client().pipeline(transaction=False)
        for i in range(n):
            pipe.spublish(SHARDS.channel(t), upstream_message(t, i))
        pipes.append(pipe)
    await asyncio.gather(*(asyncio.to_thread(p.execute) for p in pipes))
    publish_end(cluster, tickers)
    await poll(lambda: ended(f, tickers), "every burst and its end marker")
    for t in tickers:
        assert f.seqs[t] == [*range(n), END], t
    assert server.metric("quotes_conflated_total") == 0
    await f.ws.close()
