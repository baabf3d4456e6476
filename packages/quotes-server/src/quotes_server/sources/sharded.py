"""
The sharded Redis source: ``SSUBSCRIBE`` to the shard channels clients need.

The feed publishes each quote with ``SPUBLISH`` on the shard channel of its ticker
(:class:`quotes_core.ShardMap`: ``quotes.realtime.{n}``, ``n = CRC-32(ticker) mod N``).
On a Redis Cluster each channel lives on the master that owns its hash slot, so
this source keeps **one pub/sub connection per owning master** (a :class:`ShardLink`)
and subscribes there only to the shard channels some client wants: every shard
while any client wants every ticker, otherwise the shards of the tickers asked
for by name, following the hub as connections come and go. On a single Redis 7
that is not a cluster (``CLUSTER SLOTS`` answers "cluster support disabled"), the
one server owns every shard and there is one link.

Topology. Owners come from ``CLUSTER SLOTS`` asked of the configured node or any
node seen before. It is asked again whenever a link fails (node down, failover),
a ``SSUBSCRIBE`` is answered with ``MOVED`` (whose target is used at once), or the
server drops one of our shard subscriptions on its own (``sunsubscribe`` pushed
when a slot migrates away); while any shard is unhealthy it is retried with backoff.

Health, per shard. A shard is *healthy* while its owner is known and the link to
it is up (connected and answering our PINGs within ``pong_timeout``; silence is
never a failure). A shard that was healthy and is lost gets ``grace_period``
seconds; past that it is *down*: the clients that want any of its tickers (and
every-ticker clients) are closed with 1011, and handshakes that need it are
answered with 503 until it is back. Other clients keep streaming. A shard that
never came up is down from the start. The source's overall
:class:`~quotes_server.sources.SourceState`: ``UP`` when every shard is healthy,
``DOWN`` when none is reachable (past grace, or never up), else ``RECONNECTING``.

Window. A quote published on a shard channel before our ``SSUBSCRIBE`` to it is
confirmed is not seen. For a new connection the server waits for that
confirmation (up to the Redis timeout) before it accepts the handshake, so a
client sees everything published after its 101 response; a slot migration or a
failover loses the quotes of the moved shard between the move and the
re-subscription on the new owner.

redis-py's own async ``ClusterPubSub`` is not used: it reconnects and
re-subscribes silently inside ``get_message`` (no per-shard health to act on, no
PING deadline) and needs a cluster. ``CLUSTER SLOTS`` goes through plain
``redis.asyncio`` clients with retries off and explicit timeouts; each link's
subscription is read in bulk through hiredis's parser, as in the single-channel
source (:mod:`quotes_server.sources.shard_link`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Set
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import MovedError, RedisError, ResponseError

from quotes_core import DEFAULT_FLUSH_BUDGET, Backoff, ShardMap, TickerFilter
from quotes_server.sources import ShardHealth, Sink, SourceState
from quotes_server.sources.health import HealthTable
from quotes_server.sources.redis_url import SHARDED_NEEDS_TCP, RedisUrlError, parse_redis_url
from quotes_server.sources.shard_link import ShardLink
from quotes_server.sources.topology import Address, assignment, owners_from_slots, wanted_shards
from quotes_server.tasks import cancel_and_wait

__all__ = ["Address", "ShardedRedisSource"]

log = logging.getLogger("quotes_server.redis")

_NOT_A_CLUSTER = "cluster support disabled"


class ShardedRedisSource:
    """
    Subscribe with ``SSUBSCRIBE`` to the shard channels that connected clients need.

    Args:
        url: Redis URL of one node (any node of a cluster, or a single Redis 7);
            ``rediss://`` for TLS, with the options of
            :func:`~quotes_server.sources.redis_url.parse_redis_url`.
        prefix: channel prefix; shard ``n`` is ``<prefix>.{n}``.
        shards: how many shard channels the feed publishes on.
        grace_period: seconds a lost shard may stay lost before it counts as down.
        timeout: connect and command timeout, in seconds.
        ping_interval: seconds of silence on a link before we PING.
        pong_timeout: seconds to wait for the PONG.
    """

    name = "redis-sharded"
    assigns_positions = False

    def __init__(
        self,
        url: str,
        prefix: str = "quotes.realtime",
        shards: int = 16,
        *,
        grace_period: float = 5.0,
        timeout: float = 3.0,
        ping_interval: float = 5.0,
        pong_timeout: float = 3.0,
    ) -> None:
        self.map = ShardMap(prefix, shards)
        self.grace_period = grace_period
        self.timeout = timeout
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        parsed = parse_redis_url(url)
        if parsed.unix_path is not None:
            raise RedisUrlError(SHARDED_NEEDS_TCP)
        self.username = parsed.username
        self.password = parsed.password
        self.ssl_context = parsed.ssl_context()
        """The links' TLS context for a ``rediss://`` URL (None: plain TCP)."""
        self._seed: Address = (parsed.host, parsed.port)
        self._client_options = parsed.client_kwargs()
        self.reconnects = 0
        """Links that came back after a failure."""
        self.cluster: bool | None = None
        """True on a Redis Cluster, False on a single Redis, None until known."""
        self._known: list[Address] = [self._seed]
        self._owners: dict[int, Address] = {}
        self._links: dict[Address, ShardLink] = {}
        self._wants_all = False
        self._tickers: Set[str] = frozenset()
        self._wanted: frozenset[int] = frozenset()
        self._interest_handle: asyncio.Handle | None = None
        self._health = HealthTable(shards, grace_period)
        self._state = SourceState.CONNECTING
        self._sink: Sink | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._refresh: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None
        self._stopping: set[asyncio.Task[None]] = set()

    # --- what the server asks ------------------------------------------------------------------

    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def interest(self) -> ShardedRedisSource:
        return self  # subscribes only to the shards clients want

    @property
    def sequencing(self) -> None:
        return None

    @property
    def down_shards(self) -> frozenset[int]:
        """Shards down past the grace period (or never up)."""
        return self._health.down

    @property
    def subscribed_shards(self) -> frozenset[int]:
        """Shards whose channel is currently subscribed on its owner."""
        return frozenset(s for s in range(self.map.shards) if self._confirmed(s))

    def shard_health(self) -> ShardHealth:
        """Counts of healthy and subscribed shards, and which are lost or down."""
        shards = range(self.map.shards)
        return {
            "shards": self.map.shards,
            "healthy": sum(1 for s in shards if self._healthy(s)),
            "subscribed": sum(1 for s in shards if self._confirmed(s)),
            "lost": sorted(self._health.lost),
            "down": sorted(self._health.down),
        }

    def accepts(self, filter: TickerFilter) -> bool:
        """True when a client with ``filter`` may connect: none of its shards is down."""
        if not self._state.accepting:
            return False
        return not (self.map.shards_of(filter.tickers) & self._health.down)

    def set_interest(self, wants_all: bool, tickers: Set[str]) -> None:
        """
        The hub's interest changed: subscribe to every shard if ``wants_all``, else to
        the shards of ``tickers``. Applied once per event-loop turn (``tickers`` may be
        a live view, read then).
        """
        self._wants_all = wants_all
        self._tickers = tickers
        if self._interest_handle is None:
            self._interest_handle = asyncio.get_running_loop().call_soon(self._apply_interest)

    async def wait_subscribed(self, filter: TickerFilter, limit: float) -> bool:
        """
        Wait until every shard ``filter`` needs is subscribed (at most ``limit`` s).

        Returns False at the deadline; shards that are down are not waited for.
        """
        if self._interest_handle is not None:
            self._interest_handle.cancel()
            self._apply_interest()
        needed = self.map.shards_of(filter.tickers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not all(self._confirmed(s) or s in self._health.down for s in needed):
            remaining = deadline - loop.time()
            if remaining <= 0 or self._changed is None:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True

    # --- the loop ---------------------------------------------------------------------------------

    async def run(self, sink: Sink) -> None:
        self._sink = sink
        self._refresh = asyncio.Event()
        self._changed = asyncio.Event()
        sink.on_state(self._state)
        backoff = Backoff(initial=0.1, max_delay=min(5.0, max(0.1, self.grace_period)), jitter=0.5)
        try:
            while True:
                self._refresh.clear()
                try:
                    owners = await self._resolve()
                except (RedisError, OSError, TimeoutError) as exc:
                    log.warning(
                        "redis cluster topology unavailable (%s: %s)", type(exc).__name__, exc
                    )
                    self._health.failed = True
                    self._recompute()
                else:
                    self._set_owners(owners)
                    backoff.reset()
                wait: float | None = None
                if not self._health.settled or not self._owners:
                    wait = backoff.next_delay()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._refresh.wait(), wait)
        finally:
            if self._grace is not None:
                self._grace.cancel()
            links, self._links = list(self._links.values()), {}
            await self._stop_links(links)

    def node_client(self, address: Address) -> Redis:
        return Redis(
            host=address[0],
            port=address[1],
            socket_connect_timeout=self.timeout,
            socket_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            **self._client_options,
        )

    async def close_quietly(self, client: Redis) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await client.aclose()
        except (RedisError, OSError, TimeoutError) as exc:  # closing a dead connection
            log.debug("error while closing redis connection: %s", exc)

    async def _resolve(self) -> dict[int, Address]:
        """Ask ``CLUSTER SLOTS`` of the known nodes in turn; map each shard to its master."""
        error: BaseException | None = None
        for address in list(self._known):
            client = self.node_client(address)
            try:
                reply = await client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
            except ResponseError as exc:
                if _NOT_A_CLUSTER in str(exc):
                    if self.cluster is not False:
                        log.info(
                            "redis %s:%s is not a cluster: one node owns every shard", *address
                        )
                    self.cluster = False
                    return dict.fromkeys(range(self.map.shards), address)
                error = exc
            except (RedisError, OSError, TimeoutError) as exc:
                error = exc
            else:
                self.cluster = True
                return self._owners_from(reply, address)
            finally:
                await self.close_quietly(client)
        assert error is not None
        raise error

    def _owners_from(self, reply: list[Any], asked: Address) -> dict[int, Address]:
        owners, self._known = owners_from_slots(self.map, reply, asked, self._seed)
        return owners

    def _set_owners(self, owners: dict[int, Address]) -> None:
        if owners != self._owners:
            moved = sorted(
                s for s in range(self.map.shards) if owners.get(s) != self._owners.get(s)
            )
            if self._owners:
                log.info("redis shard owners changed for shard(s) %s", moved)
            self._owners = owners
        loop = asyncio.get_running_loop()
        for address in set(owners.values()) - set(self._links):
            link = ShardLink(self, address)
            link.task = loop.create_task(self._run_link(link), name=f"quotes-shard-link-{address}")
            self._links[address] = link
        stale = [self._links.pop(a) for a in set(self._links) - set(owners.values())]
        if stale:
            task = loop.create_task(self._stop_links(stale))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
        self._assign()
        self._recompute()

    async def _run_link(self, link: ShardLink) -> None:
        try:
            await link.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in one link must not stop the others
            log.exception("shard link %s crashed", link.address)  # it reset itself: down
            self.link_changed(link, None)

    async def _stop_links(self, links: list[ShardLink]) -> None:
        await cancel_and_wait(link.task for link in links if link.task is not None)

    def _apply_interest(self) -> None:
        self._interest_handle = None
        wanted = wanted_shards(self.map, self._wants_all, self._tickers)
        if wanted != self._wanted:
            self._wanted = wanted
            self._assign()

    def _assign(self) -> None:
        links = self._links
        for address, channels in assignment(self.map, self._wanted, self._owners, links).items():
            links[address].set_wanted(channels)

    def _confirmed(self, shard: int) -> bool:
        owner = self._owners.get(shard)
        link = self._links.get(owner) if owner is not None else None
        return link is not None and self.map.channels[shard] in link.confirmed

    # --- what the links report --------------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink.on_message(data)

    def room(self) -> int:
        """What the sink takes before its next write round (shared by every link)."""
        return self._sink.room() if self._sink is not None else DEFAULT_FLUSH_BUDGET

    def subscribed_changed(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def link_changed(self, link: ShardLink, exc: BaseException | None) -> None:
        if link.up:
            self._health.ever_up = True
            if link.connects > 1:
                self.reconnects += 1
        if exc is not None:
            detail = f"{type(exc).__name__}: {exc}"
            if link.connects:
                log.warning("redis %s:%s lost (%s); reconnecting", *link.address, detail)
            else:
                log.warning("redis %s:%s unavailable (%s); retrying", *link.address, detail)
                self._health.failed = True
            if self._refresh is not None:
                self._refresh.set()  # a failover may have promoted a replica
        if self._links.get(link.address) is link:
            self._recompute()
        self.subscribed_changed()

    def channel_moved(self, link: ShardLink, channel: str, exc: ResponseError | None) -> None:
        shard = self.map.channels.index(channel)
        if isinstance(exc, MovedError):
            target = (exc.host or link.address[0], int(exc.port))
            if target not in self._known:
                self._known.append(target)
            log.info("shard %d (%s) moved to %s:%s", shard, channel, *target)
            self._set_owners({**self._owners, shard: target})
        elif exc is not None:
            log.warning("SSUBSCRIBE %s on %s:%s failed: %s", channel, *link.address, exc)
        else:
            log.info("shard %d (%s) left %s:%s (slot migrated)", shard, channel, *link.address)
        if self._refresh is not None:
            self._refresh.set()

    # --- health -----------------------------------------------------------------------------------

    def _healthy(self, shard: int) -> bool:
        owner = self._owners.get(shard)
        link = self._links.get(owner) if owner is not None else None
        return link is not None and link.up

    def _recompute(self) -> None:
        now = time.monotonic()
        self._health.observe({s for s in range(self.map.shards) if self._healthy(s)}, now)
        self._schedule_grace(now)
        self._update_state()

    def _schedule_grace(self, now: float) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        deadline = self._health.next_deadline()
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._grace = loop.call_later(max(0.0, deadline - now), self._grace_over)

    def _grace_over(self) -> None:
        self._grace = None
        now = time.monotonic()
        health = self._health
        expired = health.expire(now)
        if expired:
            log.error(
                "redis shard(s) %s down past the %.1fs grace period",
                sorted(expired),
                self.grace_period,
            )
            down = health.down
            sink = self._sink
            if sink is not None and len(down) < self.map.shards:
                shards_of = self.map.shards_of

                def affected(f: TickerFilter) -> bool:
                    return bool(shards_of(f.tickers) & down)

                sink.close_affected(affected)
        self._schedule_grace(now)
        self._update_state()

    def _update_state(self) -> None:
        shards = self.map.shards
        health = self._health
        state = health.source_state()
        if state is self._state:
            return
        log.log(
            logging.INFO if state is SourceState.UP else logging.WARNING,
            "redis sharded source %s -> %s (%d/%d shard(s) healthy)",
            self._state.value,
            state.value,
            shards - len(health.down) - len(health.lost),
            shards,
        )
        self._state = state
        if self._sink is not None:
            self._sink.on_state(state)
