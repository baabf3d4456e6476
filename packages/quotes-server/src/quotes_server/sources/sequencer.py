"""
The deployment's sequencer (``--history redis``): one instance at a time gives each
upstream quote its position and appends it to the history in Redis.

Every instance runs a :class:`Sequencer`. Each one reads the upstream channel (a
:class:`~quotes_server.sources.redis.RedisSource`) and keeps the raw messages of its
current subscription for a few lease periods (its *buffer*). The instance that holds
the *lease* (a Redis key with a time to live, renewed while it leads) validates each
message and appends the valid ones with one Lua script per batch
(:data:`APPEND`): the script checks the lease first (a sequencer that lost it can no
longer write: fencing), gives each message the next position, adds it to the stream
(``XADD`` with the position as its ID, trimmed by ``MAXLEN``) and publishes
``<epoch> <seq> <message>`` on the sequenced channel that every instance streams from
(:mod:`quotes_server.sources.sequenced`). The appends go over a connection of their
own, read like the subscriptions (:class:`~quotes_server.sources.resp.CommandConnection`:
``EVALSHA`` packed by hand, hiredis's parser, one call at a time): through redis-py's
client each call cost about 64 µs of the event loop and left reference cycles for the
garbage collector; the lease's few calls a second stay with redis-py.

A standby takes the lease when it lapses (the sequencer died) or is released (it
stopped cleanly). It then reads the newest entries of the stream and looks for them,
in order, in its own buffer: found exactly once, it appends what follows them, so the
stream goes on in the same epoch with nothing lost (a rolling restart keeps every
client's position); not found (its subscription began later, it was interrupted, its
buffer no longer reaches back, or the epoch is empty) continuity cannot be proven,
and it starts a new epoch (:data:`START`): a resume across it answers
``recovered: false``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from quotes_core import InvalidQuote, TickerFilter, checked_epoch, parse_quote
from quotes_server.sources import RuntimeSink, SourceState
from quotes_server.sources.redis import RedisSource, open_resp
from quotes_server.sources.redis_url import command_client
from quotes_server.sources.resp import CommandConnection, SubscriptionLost

__all__ = ["APPEND", "START", "HistoryKeys", "Sequencer", "history_keys"]

log = logging.getLogger("quotes_server.sequencer")

TAIL = 32
"""Newest stream entries a standby must find in its buffer to continue the epoch."""

APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOTLEADER the lease is held by another instance')
end
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then return redis.error_reply('NOEPOCH no epoch started') end
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq'))
local now = redis.call('TIME')
local ms = tostring(now[1] * 1000 + math.floor(now[2] / 1000))
for i = 5, #ARGV do
  seq = seq + 1
  local id = string.format('%d-0', seq)
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], id, 't', ms, 'q', ARGV[i])
  redis.call('PUBLISH', ARGV[3], epoch .. ' ' .. string.format('%d', seq) .. ' ' .. ARGV[i])
end
redis.call('HSET', KEYS[2], 'seq', string.format('%d', seq))
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return seq
"""
"""Append ``ARGV[5:]`` at the next positions, if ``ARGV[1]`` holds the lease.
KEYS: lease, meta, stream; ARGV: token, MAXLEN, channel, stream TTL (ms), messages..."""

START = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOTLEADER the lease is held by another instance')
end
local seq = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if seq == 0 then redis.call('DEL', KEYS[3]) end
local s = string.format('%d', seq)
redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'seq', s, 'from', string.format('%d', seq + 1))
redis.call('PUBLISH', ARGV[3], ARGV[2] .. ' ' .. s)
return seq
"""
"""Start epoch ``ARGV[2]`` after the newest position, if ``ARGV[1]`` holds the lease,
and tell every instance (``<epoch> <seq>`` on the channel). KEYS: lease, meta, stream."""

RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class HistoryKeys(NamedTuple):
    """Where the deployment's positions live in Redis."""

    stream: str
    """The history: a stream whose entry IDs are the positions (``<seq>-0``)."""
    meta: str
    """A hash: ``epoch``, ``seq`` (the newest position), ``from`` (the epoch's first)."""
    lease: str
    """The sequencer's lease: its token, with a time to live."""
    channel: str
    """The Pub/Sub channel of positioned quotes (``<epoch> <seq> <message>``)."""


def history_keys(channel: str) -> HistoryKeys:
    """The keys of the history of upstream ``channel``."""
    base = f"{channel}.history"
    return HistoryKeys(base, f"{base}:meta", f"{base}:lease", base)


class Sequencer:
    """
    Leads or stands by (see the module docs); one per server process.

    Every upstream message also goes to the sink as it comes (``on_live``: the
    clients that need no position), leading or not.

    Args:
        url: the Redis URL.
        channel: the upstream channel.
        sink: the runtime (``on_live`` takes each message and says whether it is
            valid, ``room`` is its budget per write round).
        history_size: entries the stream keeps (``MAXLEN ~``).
        history_age: seconds the stream lives without a new entry.
        lease: seconds the lease lasts without renewal (renewed every third of it).
        options: the upstream subscription's settings (grace, timeouts, pings).
    """

    def __init__(
        self,
        url: str,
        channel: str,
        sink: RuntimeSink,
        *,
        history_size: int,
        history_age: float,
        lease: float,
        timeout: float = 3.0,
        **options: float,
    ) -> None:
        self.keys = history_keys(channel)
        self.history_size = history_size
        self.history_age = history_age
        self.lease = lease
        self.timeout = timeout
        self.token = secrets.token_hex(8)
        self.leading = False
        self.takeovers = 0
        """Leases taken: the epoch continued or a new one started."""
        self.new_epochs = 0
        """Takeovers that could not prove continuity and started a new epoch."""
        self._sink = sink
        self._url = url
        self._upstream = RedisSource(url, channel, timeout=timeout, **options)
        self._buffer: deque[tuple[float, bytes]] = deque(maxlen=max(1000, history_size))
        """(arrival, message): plain tuples, which the garbage collector stops tracking."""
        self._keep = 4 * lease + 2 * timeout
        self._pending: list[bytes] = []
        self._wake = asyncio.Event()
        self._redis: Redis | None = None
        self._appender: CommandConnection | None = None
        """The connection of the appends: lean RESP, not redis-py (see :meth:`_append`)."""
        self._releases: set[asyncio.Task[None]] = set()

    # --- the upstream subscription's sink ------------------------------------------------------

    def on_message(self, raw: bytes) -> None:
        valid = self._sink.on_live(raw)
        now = time.monotonic()
        buffer = self._buffer
        buffer.append((now, raw))
        oldest = now - self._keep
        while buffer[0][0] < oldest:
            buffer.popleft()
        if self.leading and valid:
            self._pending.append(raw)
            self._wake.set()

    def on_state(self, state: SourceState) -> None:
        # the buffer holds one unbroken subscription: a new one starts it again
        self._buffer.clear()
        if state is not SourceState.UP and self.leading:
            log.warning("upstream subscription lost while sequencing: stepping down")
            self._step_down(release=True)

    def room(self) -> int:
        return self._sink.room()

    def close_affected(self, affected: Callable[[TickerFilter], bool]) -> None:
        pass  # no clients here

    # --- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Subscribe upstream, and lead or stand by, until cancelled."""
        self._redis = command_client(self._url, self.timeout)
        scripts = {name: self._redis.register_script(text) for name, text in _SCRIPTS.items()}
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._upstream.run(self), name="quotes-sequencer-upstream")
                tasks.create_task(self._lease_loop(scripts), name="quotes-sequencer-lease")
                tasks.create_task(self._append_loop(), name="quotes-sequencer-append")
        finally:
            if self.leading:
                self.leading = False
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await scripts["release"](keys=[self.keys.lease], args=[self.token])
            await self._redis.aclose()

    async def _lease_loop(self, scripts: dict[str, Any]) -> None:
        assert self._redis is not None
        ttl = int(self.lease * 1000)
        while True:
            try:
                if self.leading:
                    if not await scripts["renew"](keys=[self.keys.lease], args=[self.token, ttl]):
                        log.warning("sequencer lease lost to another instance")
                        self._step_down(release=False)
                elif self._upstream.state is SourceState.UP and await self._redis.set(
                    self.keys.lease, self.token, nx=True, px=ttl
                ):
                    await self._take_over(scripts)
            except (RedisError, OSError, TimeoutError) as exc:
                if self.leading:
                    log.warning("sequencer lease not renewed (%s): stepping down", exc)
                    self._step_down(release=False)
            await asyncio.sleep(self.lease / 3)

    async def _take_over(self, scripts: dict[str, Any]) -> None:
        """Holding the lease: continue the epoch if the buffer proves it, else start one."""
        assert self._redis is not None
        keys = self.keys
        self.takeovers += 1
        meta: dict[bytes, bytes] = await self._redis.hgetall(keys.meta)  # type: ignore[assignment]
        tail: list[bytes] = []
        newest = int(meta.get(b"seq", 0))
        first = int(meta.get(b"from", newest + 1))
        want = min(TAIL, newest - first + 1)
        if b"epoch" in meta and want > 0:
            entries: list[Any] = await self._redis.xrevrange(keys.stream, count=want)  # type: ignore[assignment]
            ids = [int(entry_id.split(b"-")[0]) for entry_id, _ in entries]
            if ids == list(range(newest, newest - want, -1)):
                tail = [fields[b"q"] for _, fields in reversed(entries)]
        # no await from here: the buffer is read as it stands
        rest = self._after(tail) if tail else None
        if rest is None:
            epoch = checked_epoch(None)
            await scripts["start"](
                keys=[keys.lease, keys.meta, keys.stream],
                args=[self.token, epoch, keys.channel],
            )
            self.new_epochs += 1
            log.warning(
                "sequencing: took the lease, continuity not provable: new epoch %s after seq %d",
                epoch,
                newest,
            )
            rest = []
            if self._buffer:  # the epoch starts now: what came before belongs to none
                self._buffer.clear()
        else:
            log.info(
                "sequencing: took the lease, epoch %s continues after seq %d (%d to append)",
                meta[b"epoch"].decode(),
                newest,
                len(rest),
            )
        self._pending = rest + self._pending
        self.leading = True
        if self._pending:
            self._wake.set()

    def _after(self, tail: list[bytes]) -> list[bytes] | None:
        """The valid buffered messages after ``tail`` when it occurs once in the buffer."""
        valid = [raw for _, raw in self._buffer if _valid(raw)]
        n = len(tail)
        ends = [
            i + n
            for i in range(len(valid) - n + 1)
            if valid[i] == tail[0] and valid[i : i + n] == tail
        ]
        if len(ends) != 1:
            return None
        return valid[ends[0] :]

    async def _append_loop(self) -> None:
        keys = self.keys
        ttl = int(self.history_age * 1000) + 1
        head = [
            b"EVALSHA",
            _APPEND_SHA,
            b"3",
            *(key.encode() for key in (keys.lease, keys.meta, keys.stream)),
            self.token.encode(),
            b"%d" % self.history_size,
            keys.channel.encode(),
            b"%d" % ttl,
        ]
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                if not self.leading or not self._pending:
                    continue
                batch, self._pending = self._pending, []
                await self._append(head + batch)
        finally:
            if self._appender is not None:
                self._appender.close()
                self._appender = None

    async def _append(self, command: list[bytes]) -> None:
        """One :data:`APPEND` call on the appender's own connection; step down if it fails."""
        try:
            async with asyncio.timeout(self.timeout):
                conn = self._appender
                if conn is None or conn.lost:
                    conn = self._appender = await self._connect_appender()
                try:
                    await conn.call(command)
                except ResponseError as exc:
                    if not str(exc).startswith("NOSCRIPT"):
                        raise
                    # Redis restarted or flushed its scripts: EVAL loads it again
                    await conn.call([b"EVAL", _APPEND_BYTES, *command[2:]])
        except ResponseError as exc:
            log.warning("sequencing stopped: %s", exc)
            self._step_down(release=False)
        except (RedisError, OSError, TimeoutError, SubscriptionLost) as exc:
            if self._appender is not None:  # a reply may still come: never read it
                self._appender.close()
                self._appender = None
            # whether the batch was appended is read from the stream by whoever leads next
            log.warning("sequencing interrupted (%s: %s): stepping down", type(exc).__name__, exc)
            self._step_down(release=True)

    async def _connect_appender(self) -> CommandConnection:
        address = self._upstream.address
        conn = CommandConnection()
        try:
            await open_resp(conn, address, self._upstream.ssl)
            if address.db:
                await conn.call([b"SELECT", b"%d" % address.db])
        except BaseException:
            conn.close()
            raise
        return conn

    def _step_down(self, *, release: bool) -> None:
        self.leading = False
        self._pending = []
        if release and self._redis is not None:
            redis, keys, token = self._redis, self.keys, self.token
            task = asyncio.get_running_loop().create_task(_release(redis, keys.lease, token))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)


def _valid(raw: bytes) -> bool:
    try:
        parse_quote(raw)
    except InvalidQuote:
        return False
    return True


async def _release(redis: Redis, lease: str, token: str) -> None:
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        await redis.eval(RELEASE, 1, lease, token)


_SCRIPTS = {"start": START, "renew": RENEW, "release": RELEASE}
_APPEND_BYTES = APPEND.encode()
_APPEND_SHA = hashlib.sha1(_APPEND_BYTES).hexdigest().encode()
