"""
The publisher process: pipelined ``PUBLISH`` to Redis on a fixed schedule.

Quote ``i`` of a phase is due at ``start + i / rate``; its ``timestamp`` is that
intended time, whether or not the publisher manages to send it then. The publisher
wakes up once per tick (0.5 ms by default: waking for every quote costs a lot of CPU
on a small machine) and sends every quote due by then in one write (RESP
pipelining). The batching delay (under a tick) therefore counts in the measured
latency, and a publisher that falls behind catches up in bigger batches instead
of silently lowering the rate; how far behind it was (send time minus intended
time) is reported so the benchmark can say when the load generator itself is
the bottleneck.

The process speaks raw RESP over one TCP socket (no client library in the hot
loop) and drains the integer replies without waiting for them. It only ever sends
``PUBLISH`` (and ``AUTH`` when the URL has a password).

With ``shards`` (the server's ``--upstream sharded``), :class:`ShardedPublisher`
sends ``SPUBLISH`` on each ticker's shard channel (:class:`quotes_core.ShardMap`)
instead, through one raw socket per master that owns a shard channel's slot: the
owners come from ``CLUSTER SLOTS`` (read once, through redis-py, before any
phase), or there is a single socket on a non-cluster Redis. Each batch is split
by owner, one write per master per wake-up, and the phase stats say how many
quotes each master took.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from feed import QuoteFactory, ticker_names

from quotes_core import ShardMap, key_slot

__all__ = ["PhaseStats", "RedisAddress", "ShardedPublisher", "publisher_main", "shard_owners"]

DEFAULT_TICK = 0.0005
"""Seconds between the publisher's wake-ups; each sends every quote due by then."""

_MAX_BATCH = 5000
"""Most quotes in one write."""

GIVE_UP_FACTOR = 2.0
GIVE_UP_SLACK = 10.0
"""A phase stops publishing at ``start + duration * GIVE_UP_FACTOR + GIVE_UP_SLACK``
(Redis or the machine cannot take the rate); what was published by then counts."""


@dataclass(frozen=True)
class RedisAddress:
    """Where to publish, parsed from a ``redis://`` URL."""

    host: str
    port: int
    password: str | None = None
    username: str | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisAddress:
        """Parse ``redis://[[user]:password@]host[:port][/db]`` (PUBLISH ignores the db)."""
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"only redis:// URLs are supported, not {url!r}")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            password=parts.password,
            username=parts.username or None,
        )


@dataclass
class PhaseStats:
    """What one measured phase of publishing did."""

    published: int = 0
    target: int = 0
    gave_up: bool = False
    rate: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    batches: int = 0
    lag_ms_p50: float = 0.0
    lag_ms_p99: float = 0.0
    lag_ms_max: float = 0.0
    replies: int = 0
    errors: int = 0
    receivers_min: int | None = None
    receivers_max: int | None = None
    links: list[dict[str, Any]] | None = None
    """Sharded mode: per master, its port, shard channels, quotes published, replies."""


def _command(*args: bytes) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class _Replies:
    """Counts RESP replies arriving on the socket, without ever blocking the publisher."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.count = 0
        self.errors = 0
        self.receivers_min: int | None = None
        self.receivers_max: int | None = None
        self._rest = b""

    def _consume(self, data: bytes) -> None:
        lines = (self._rest + data).split(b"\r\n")
        self._rest = lines.pop()
        for line in lines:
            self.count += 1
            if line[:1] == b":":
                n = int(line[1:])
                if self.receivers_min is None or n < self.receivers_min:
                    self.receivers_min = n
                if self.receivers_max is None or n > self.receivers_max:
                    self.receivers_max = n
            elif line[:1] == b"-":
                self.errors += 1

    def poll(self) -> None:
        """Read whatever replies are already there."""
        while True:
            try:
                data = self.sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                raise ConnectionError("Redis closed the publisher connection")
            self._consume(data)

    def wait_for(self, total: int, timeout: float) -> None:
        """Block until ``total`` replies have arrived, or the timeout passes."""
        deadline = time.monotonic() + timeout
        while self.count < total:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(1 << 16)
            except TimeoutError:
                return
            finally:
                self.sock.settimeout(None)
            if not data:
                raise ConnectionError("Redis closed the publisher connection")
            self._consume(data)


@dataclass
class _Paced:
    """What :func:`_run_schedule` did: how many quotes went out, how late, at what cost."""

    published: int
    gave_up: bool
    lags: list[float]
    batches: int
    wall0: float
    wall1: float
    cpu0: float
    cpu1: float

    def fill(self, stats: PhaseStats) -> PhaseStats:
        """Copy the lag percentiles into ``stats``."""
        lags = self.lags
        if lags:
            stats.lag_ms_p50 = lags[len(lags) // 2]
            stats.lag_ms_p99 = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
            stats.lag_ms_max = lags[-1]
        return stats


def _run_schedule(
    start: float,
    rate: float,
    duration: float,
    *,
    tick: float,
    stop: Any,
    send: Callable[[int, int, int, float], bool],
    after: Callable[[int], None],
) -> _Paced:
    """
    The fixed grid: quote ``k`` is due at ``start + k / rate``. Wake once per tick and
    call ``send(i, due, start_us, timeout)`` for every quote due by then (``False``: the
    connection broke, give up), then ``after(batches)``.
    """
    total = max(1, int(rate * duration))
    start_us = round(start * 1_000_000)
    step_us = 1_000_000 / rate
    lags: list[float] = []
    batches = 0
    now = time.time()
    if start > now:
        time.sleep(start - now)
    cpu0 = time.process_time()
    wall0 = time.time()
    give_up_us = start_us + int((duration * GIVE_UP_FACTOR + GIVE_UP_SLACK) * 1_000_000)
    gave_up = False
    i = 0
    while i < total:
        now_us = int(time.time() * 1_000_000)
        if now_us > give_up_us or (stop is not None and stop.is_set()):
            gave_up = True
            break
        due = int((now_us - start_us) / step_us) + 1
        if due > total:
            due = total
        if due <= i:
            # Nothing due: sleep until quote i is, but at least one tick.
            wait = (start_us + i * step_us - now_us) / 1_000_000
            time.sleep(wait if wait > tick else tick)
            continue
        if due - i > _MAX_BATCH:
            due = i + _MAX_BATCH
        if not send(i, due, start_us, max(1.0, (give_up_us - now_us) / 1_000_000)):
            gave_up = True
            break
        lags.append((now_us - (start_us + i * step_us)) / 1000.0)
        batches += 1
        i = due
        after(batches)
        # Sleep out the rest of the tick, so a wake-up always carries a tick's worth.
        rest = tick - (time.time() * 1_000_000 - now_us) / 1_000_000
        if rest > 0 and i < total:
            time.sleep(rest)
    wall1 = time.time()
    cpu1 = time.process_time()
    lags.sort()
    return _Paced(i, gave_up, lags, batches, wall0, wall1, cpu0, cpu1)


def _maker(
    factory: QuoteFactory, order: list[int], step_us: float, counted: bool
) -> Callable[[int, int], bytes]:
    """``make(k, start_us)``: the payload of quote ``k`` of a phase."""
    n_order = len(order)
    if counted:
        return lambda k, start_us: factory.counted_quote(
            k, order[k % n_order], start_us + int(k * step_us), k // n_order + 1
        )
    return lambda k, start_us: factory.quote(k, order[k % n_order], start_us + int(k * step_us))


class Publisher:
    """One Redis connection and the phases published through it."""

    def __init__(
        self,
        address: RedisAddress,
        channel: str,
        ticker_count: int,
        stop: Any = None,
        tick: float = DEFAULT_TICK,
    ) -> None:
        self.address = address
        self.stop = stop
        self.tick = tick
        self.head = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n" % (len(channel), channel.encode())
        self.factory = QuoteFactory(ticker_names(ticker_count))
        self._connect()

    def _connect(self) -> None:
        address = self.address
        self.broken = False
        self.sent = 0
        self.sock = socket.create_connection((address.host, address.port), timeout=10)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.replies = _Replies(self.sock)
        if address.password:
            auth = [b"AUTH"]
            if address.username:
                auth.append(address.username.encode())
            auth.append(address.password.encode())
            self.sock.sendall(_command(*auth))
            self.replies.wait_for(1, 10)
            if self.replies.count != 1 or self._first_error():
                raise ConnectionError("Redis AUTH failed")
            self.replies = _Replies(self.sock)

    def _first_error(self) -> bool:
        return self.replies.errors > 0

    def _frame(self, payload: bytes) -> bytes:
        return b"%s$%d\r\n%s\r\n" % (self.head, len(payload), payload)

    def warmup(self, ticker_indexes: list[int]) -> dict[str, Any]:
        """Publish one warm-up quote for each given ticker and wait for the replies."""
        before = self.replies.count
        self.sock.sendall(
            b"".join(self._frame(self.factory.warmup_quote(i)) for i in ticker_indexes)
        )
        self.sent += len(ticker_indexes)
        self.replies.wait_for(self.sent, 10)
        return {"published": len(ticker_indexes), "replies": self.replies.count - before}

    def run(
        self, start: float, rate: float, duration: float, order: list[int], counted: bool = False
    ) -> PhaseStats:
        """
        Publish ``rate * duration`` quotes on the fixed grid starting at wall time ``start``.

        Args:
            start: wall-clock (epoch seconds) time of quote 0; should be slightly in
                the future so every process sees the phase begin.
            rate: quotes per second.
            duration: seconds.
            order: ticker indexes cycled through, one per quote.
            counted: number each ticker's quotes 1, 2, 3 ... in ``volume``
                (``order`` must then name each ticker once).
        """
        step_us = 1_000_000 / rate
        factory, frame, sock, replies = self.factory, self._frame, self.sock, self.replies
        n_order = len(order)
        replies_before, errors_before = replies.count, replies.errors
        make = _maker(factory, order, step_us, counted) if counted else None

        def send(i: int, due: int, start_us: int, timeout: float) -> bool:
            if make is None:  # the hot path of the other scenarios: no call per quote
                chunk = b"".join(
                    frame(factory.quote(k, order[k % n_order], start_us + int(k * step_us)))
                    for k in range(i, due)
                )
            else:
                chunk = b"".join(frame(make(k, start_us)) for k in range(i, due))
            sock.settimeout(timeout)
            try:
                sock.sendall(chunk)
            except TimeoutError:
                # Redis stopped reading; the connection is mid-command now, so drop it.
                self.broken = True
                return False
            finally:
                sock.settimeout(None)
            self.sent += due - i
            return True

        def after(batches: int) -> None:
            replies.poll()
            if batches % 64 == 0 and replies.count + 200_000 < self.sent:
                # Redis is far behind reading: wait a little rather than queue megabytes.
                replies.wait_for(self.sent - 100_000, 1.0)

        paced = _run_schedule(
            start, rate, duration, tick=self.tick, stop=self.stop, send=send, after=after
        )
        if not self.broken:
            replies.wait_for(self.sent, 30)
        stats = paced.fill(
            PhaseStats(
                published=paced.published,
                gave_up=paced.gave_up,
                target=max(1, int(rate * duration)),
                rate=rate,
                started_at=paced.wall0,
                finished_at=paced.wall1,
                wall_seconds=paced.wall1 - paced.wall0,
                cpu_seconds=paced.cpu1 - paced.cpu0,
                batches=paced.batches,
                replies=replies.count - replies_before,
                errors=replies.errors - errors_before,
                receivers_min=replies.receivers_min,
                receivers_max=replies.receivers_max,
            )
        )
        replies.receivers_min = replies.receivers_max = None
        if self.broken:
            self.close()
            self._connect()
        return stats

    def close(self) -> None:
        """Close the Redis connection."""
        self.sock.close()


def shard_owners(address: RedisAddress, shards: ShardMap) -> dict[int, tuple[str, int]]:
    """
    Shard number -> ``(host, port)`` of the master owning its channel's slot.

    Asks ``address`` for ``CLUSTER SLOTS`` when it is a cluster node; on a
    non-cluster Redis every shard lives on ``address`` itself.
    """
    from redis import Redis

    client = Redis(
        host=address.host,
        port=address.port,
        username=address.username,
        password=address.password,
        socket_timeout=10,
        socket_connect_timeout=10,
    )
    try:
        if not client.info("cluster").get("cluster_enabled"):
            return dict.fromkeys(range(shards.shards), (address.host, address.port))
        ranges: list[Any] = client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
    finally:
        client.close()
    owners: dict[int, tuple[str, int]] = {}
    for row in ranges:
        first, last, master = int(row[0]), int(row[1]), row[2]
        host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
        for s, slot in enumerate(shards.slots):
            if first <= slot <= last:
                owners[s] = (host or address.host, int(master[1]))
    missing = [s for s in range(shards.shards) if s not in owners]
    if missing:
        raise ConnectionError(f"no master serves the slots of shards {missing}")
    return owners


class _Link:
    """One raw RESP socket to one shard master."""

    def __init__(self, address: RedisAddress) -> None:
        self.address = address
        self.sent = 0
        self.published = 0
        self.sock = socket.create_connection((address.host, address.port), timeout=10)
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.replies = _Replies(self.sock)
        if address.password:
            auth = [b"AUTH"]
            if address.username:
                auth.append(address.username.encode())
            auth.append(address.password.encode())
            self.sock.sendall(_command(*auth))
            self.replies.wait_for(1, 10)
            if self.replies.count != 1 or self.replies.errors:
                raise ConnectionError("Redis AUTH failed")
            self.replies = _Replies(self.sock)


class ShardedPublisher:
    """
    ``SPUBLISH`` on the shard channels, one socket per owning master, same schedule.

    The schedule, batching, lag accounting and give-up rules are those of
    :class:`Publisher`; only the framing (``SPUBLISH <prefix>.{n}``) and the
    routing (each quote to the master owning its channel's slot) differ.
    """

    def __init__(
        self,
        address: RedisAddress,
        channel: str,
        ticker_count: int,
        shards: int,
        stop: Any = None,
        tick: float = DEFAULT_TICK,
    ) -> None:
        self.address = address
        self.stop = stop
        self.tick = tick
        self.shard_map = ShardMap(channel, shards)
        tickers = ticker_names(ticker_count)
        self.factory = QuoteFactory(tickers)
        owners = shard_owners(address, self.shard_map)
        endpoints = sorted(set(owners.values()), key=lambda hp: (hp[0], hp[1]))
        self.endpoints = endpoints
        self.shards_per_link = [
            sorted(s for s, hp in owners.items() if hp == ep) for ep in endpoints
        ]
        shard_of = [self.shard_map.shard(t) for t in tickers]
        self.link_of = [endpoints.index(owners[s]) for s in shard_of]
        self.heads = []
        for s in shard_of:
            ch = self.shard_map.channels[s].encode()
            assert key_slot(ch) == self.shard_map.slots[s]
            self.heads.append(b"*3\r\n$8\r\nSPUBLISH\r\n$%d\r\n%s\r\n" % (len(ch), ch))
        self.links: list[_Link] = []
        self._connect()

    def _connect(self) -> None:
        self.broken = False
        self.links = [
            _Link(RedisAddress(host, port, self.address.password, self.address.username))
            for host, port in self.endpoints
        ]

    def _frame(self, ticker_index: int, payload: bytes) -> bytes:
        return b"%s$%d\r\n%s\r\n" % (self.heads[ticker_index], len(payload), payload)

    def _send_split(self, frames: list[list[bytes]], timeout: float) -> None:
        for link, part in zip(self.links, frames, strict=True):
            if not part:
                continue
            link.sock.settimeout(timeout)
            try:
                link.sock.sendall(b"".join(part))
            finally:
                link.sock.settimeout(None)
            link.sent += len(part)
            link.published += len(part)

    def warmup(self, ticker_indexes: list[int]) -> dict[str, Any]:
        """Publish one warm-up quote for each given ticker and wait for every reply."""
        before = sum(link.replies.count for link in self.links)
        frames: list[list[bytes]] = [[] for _ in self.links]
        for t in ticker_indexes:
            frames[self.link_of[t]].append(self._frame(t, self.factory.warmup_quote(t)))
        self._send_split(frames, 10)
        for link in self.links:
            link.replies.wait_for(link.sent, 10)
        after = sum(link.replies.count for link in self.links)
        return {"published": len(ticker_indexes), "replies": after - before}

    def run(
        self, start: float, rate: float, duration: float, order: list[int], counted: bool = False
    ) -> PhaseStats:
        """Publish ``rate * duration`` quotes on the fixed grid (see :meth:`Publisher.run`)."""
        step_us = 1_000_000 / rate
        frame, link_of = self._frame, self.link_of
        links = self.links
        n_order = len(order)
        before = [(link.replies.count, link.replies.errors, link.published) for link in links]
        factory = self.factory
        make = _maker(factory, order, step_us, counted) if counted else None

        def send(i: int, due: int, start_us: int, timeout: float) -> bool:
            frames: list[list[bytes]] = [[] for _ in links]
            for k in range(i, due):
                t = order[k % n_order]
                if make is None:
                    payload = factory.quote(k, t, start_us + int(k * step_us))
                else:
                    payload = make(k, start_us)
                frames[link_of[t]].append(frame(t, payload))
            try:
                self._send_split(frames, timeout)
            except TimeoutError:
                # A master stopped reading; its connection is mid-command now, so drop them.
                self.broken = True
                return False
            return True

        def after(batches: int) -> None:
            for link in links:
                link.replies.poll()
            if batches % 64 == 0:
                for link in links:
                    if link.replies.count + 200_000 < link.sent:
                        link.replies.wait_for(link.sent - 100_000, 1.0)

        paced = _run_schedule(
            start, rate, duration, tick=self.tick, stop=self.stop, send=send, after=after
        )
        if not self.broken:
            for link in links:
                link.replies.wait_for(link.sent, 30)
        per_link: list[dict[str, Any]] = []
        for link, shards, (count0, errors0, published0) in zip(
            links, self.shards_per_link, before, strict=True
        ):
            r = link.replies
            per_link.append(
                {
                    "port": link.address.port,
                    "shards": shards,
                    "published": link.published - published0,
                    "replies": r.count - count0,
                    "errors": r.errors - errors0,
                    "receivers": [r.receivers_min, r.receivers_max],
                }
            )
        mins = [v for link in links if (v := link.replies.receivers_min) is not None]
        maxs = [v for link in links if (v := link.replies.receivers_max) is not None]
        stats = PhaseStats(
            published=paced.published,
            gave_up=paced.gave_up,
            target=max(1, int(rate * duration)),
            rate=rate,
            started_at=paced.wall0,
            finished_at=paced.wall1,
            wall_seconds=paced.wall1 - paced.wall0,
            cpu_seconds=paced.cpu1 - paced.cpu0,
            batches=paced.batches,
            replies=sum(p["replies"] for p in per_link),
            errors=sum(p["errors"] for p in per_link),
            receivers_min=min(mins) if mins else None,
            receivers_max=max(maxs) if maxs else None,
            links=per_link,
        )
        paced.fill(stats)
        for link in links:
            link.replies.receivers_min = link.replies.receivers_max = None
        if self.broken:
            self.close()
            self._connect()
        return stats

    def close(self) -> None:
        """Close every master connection."""
        for link in self.links:
            link.sock.close()


def publisher_main(
    conn: Connection,
    redis_url: str,
    channel: str,
    ticker_count: int,
    stop: Any = None,
    tick: float = DEFAULT_TICK,
    shards: int | None = None,
) -> None:  # pragma: no cover - runs in a child process
    """
    Entry point of the publisher process: obey commands from the orchestrator.

    Commands (tuples on ``conn``): ``("warmup", [ticker indexes])``,
    ``("run", start, rate, duration, order[, counted])``, ``("close",)``. Each gets one reply:
    ``("ok", result)`` or ``("error", message)``. Setting the ``stop`` event (a
    ``multiprocessing.Event``) ends a running phase early. With ``shards``, quotes
    go out as ``SPUBLISH`` on the shard channels (:class:`ShardedPublisher`).
    """
    pub: Publisher | ShardedPublisher
    try:
        address = RedisAddress.from_url(redis_url)
        if shards is None:
            pub = Publisher(address, channel, ticker_count, stop, tick)
        else:
            pub = ShardedPublisher(address, channel, ticker_count, shards, stop, tick)
    except OSError as exc:
        conn.send(("error", f"cannot connect to Redis at {redis_url}: {exc}"))
        return
    conn.send(("ok", None))
    try:
        while True:
            cmd = conn.recv()
            try:
                if cmd[0] == "warmup":
                    conn.send(("ok", pub.warmup(cmd[1])))
                elif cmd[0] == "run":
                    conn.send(("ok", pub.run(*cmd[1:])))
                elif cmd[0] == "close":
                    conn.send(("ok", None))
                    return
                else:
                    conn.send(("error", f"unknown command {cmd[0]!r}"))
            except OSError as exc:
                conn.send(("error", f"Redis connection failed: {exc}"))
                return
    except (EOFError, KeyboardInterrupt):
        return
    finally:
        pub.close()
