"""
The source of ``--history redis``: positioned quotes that belong to the deployment.

Every instance reads the upstream channel (through its
:mod:`~quotes_server.sources.sequencer`, leading or standing by), whose messages go
to its plain clients at once (``Sink.on_live``), and streams the positioned quotes
from the sequenced channel that the deployment's sequencer publishes on: each
message is ``<epoch> <seq> <quote>``, or ``<epoch> <seq>`` when
a new epoch starts after ``seq``. The instance keeps the resume window in memory (the
engine answers ``since=`` in the same synchronous step as the subscription) as a
mirror of the Redis stream: each time the channel is subscribed (at start-up, after a
reconnection) it reads the deployment's epoch and window from Redis before it reports
``UP``, holding the channel's messages meanwhile:

- the same epoch and the positions it missed still in the stream: it publishes them
  to its clients, late but complete, then the held messages (duplicates ignored);
- another epoch (a restart, a takeover that started one): it takes the new epoch and
  its window; its clients go on in the new epoch, as after an upstream outage;
- the same epoch but positions gone from the stream: its clients would miss quotes
  without being told, so they are closed with 1011 and resume (``recovered: false``);
- no epoch in Redis (its data was lost, or no sequencer has started one yet): a new
  local epoch, so no resume across the loss is answered as recovered.

The state is the sequenced channel's subscription state (grace period included),
held at the previous state while the window loads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from quotes_core import TickerFilter
from quotes_server.sources import RuntimeSink, SourceState, StoredQuote
from quotes_server.sources.redis import RedisSource
from quotes_server.sources.redis_url import command_client
from quotes_server.sources.sequencer import Sequencer, history_keys

__all__ = ["SequencedSource"]

log = logging.getLogger("quotes_server.sequenced")

_CHUNK = 10_000
"""Stream entries read per XRANGE while loading the window."""


class SequencedSource:
    """
    Positioned quotes from the deployment's sequencer (see the module docs).

    Args:
        url: the Redis URL.
        channel: the upstream channel (the history's keys are named after it).
        history_size: entries the deployment's stream keeps.
        history_age: seconds an entry stays resumable.
        lease: seconds the sequencer's lease lasts without renewal.
        grace_period: as :class:`~quotes_server.sources.redis.RedisSource`.
        timeout: as :class:`~quotes_server.sources.redis.RedisSource`.
        ping_interval: as :class:`~quotes_server.sources.redis.RedisSource`.
        pong_timeout: as :class:`~quotes_server.sources.redis.RedisSource`.
    """

    name = "redis"
    assigns_positions = True

    def __init__(
        self,
        url: str,
        channel: str = "quotes.realtime",
        *,
        history_size: int = 100_000,
        history_age: float = 120.0,
        lease: float = 3.0,
        grace_period: float = 5.0,
        timeout: float = 3.0,
        ping_interval: float = 5.0,
        pong_timeout: float = 3.0,
    ) -> None:
        self.url = url
        self.keys = history_keys(channel)
        self.history_age = history_age
        self.timeout = timeout
        options = {
            "grace_period": grace_period,
            "ping_interval": ping_interval,
            "pong_timeout": pong_timeout,
        }
        self._channel = RedisSource(url, self.keys.channel, timeout=timeout, **options)
        self._settings = (channel, history_size, history_age, lease, timeout, options)
        self.sequencer: Sequencer | None = None
        self._state = SourceState.CONNECTING
        self._sink: RuntimeSink | None = None
        self._held: list[bytes] | None = None
        self._load: asyncio.Task[None] | None = None
        self.loads = 0
        """Windows loaded from Redis (one per subscription)."""

    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def reconnects(self) -> int:
        return self._channel.reconnects

    @property
    def interest(self) -> None:
        return None

    @property
    def sequencing(self) -> SequencedSource:
        return self

    @property
    def role(self) -> str:
        """``sequencing`` while this instance holds the lease, else ``following``."""
        leading = self.sequencer is not None and self.sequencer.leading
        return "sequencing" if leading else "following"

    @property
    def takeovers(self) -> int:
        return self.sequencer.takeovers if self.sequencer is not None else 0

    @property
    def new_epochs(self) -> int:
        return self.sequencer.new_epochs if self.sequencer is not None else 0

    async def run(self, sink: RuntimeSink) -> None:
        self._sink = sink
        channel, size, age, lease, timeout, options = self._settings
        self.sequencer = Sequencer(
            self.url,
            channel,
            sink,
            history_size=size,
            history_age=age,
            lease=lease,
            timeout=timeout,
            **options,
        )
        sink.on_state(self._state)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.sequencer.run(), name="quotes-sequencer")
                tasks.create_task(self._channel.run(self), name="quotes-sequenced")
        finally:
            if self._load is not None:
                self._load.cancel()

    # --- the sequenced channel's sink -------------------------------------------------------

    def on_message(self, data: bytes) -> None:
        if self._held is not None:
            self._held.append(data)
        else:
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        assert self._sink is not None
        parts = data.split(b" ", 2)
        try:
            epoch, seq = parts[0].decode(), int(parts[1])
        except (IndexError, ValueError, UnicodeDecodeError):
            log.error("malformed message on %r: %r", self.keys.channel, data[:80])
            return
        if len(parts) == 3:
            self._sink.on_positioned(parts[2], seq, epoch)
        else:
            self._sink.begin_epoch(epoch, seq)

    def on_state(self, state: SourceState) -> None:
        if self._load is not None:
            self._load.cancel()
            self._load = None
        if state is SourceState.UP:
            self._held = []
            self._load = asyncio.get_running_loop().create_task(self._load_window())
            return
        self._held = None
        self._set_state(state)

    def room(self) -> int:
        return self._sink.room() if self._sink is not None else 1000

    def close_affected(self, affected: Callable[[TickerFilter], bool]) -> None:
        if self._sink is not None:
            self._sink.close_affected(affected)

    def _set_state(self, state: SourceState) -> None:
        if state is not self._state:
            self._state = state
            if self._sink is not None:
                self._sink.on_state(state)

    # --- loading the window ----------------------------------------------------------------

    async def _load_window(self) -> None:
        """Read the deployment's epoch and window, bring the engine to it, go up."""
        sink = self._sink
        assert sink is not None
        redis = command_client(self.url, self.timeout)
        try:
            while True:
                try:
                    async with asyncio.timeout(4 * self.timeout):
                        await self._catch_up(redis, sink)
                    break
                except (RedisError, OSError, TimeoutError) as exc:
                    log.warning("loading the history window failed (%s); retrying", exc)
                    await asyncio.sleep(min(1.0, self.timeout))
                except Exception:  # a bug must not leave the instance never ready, silently
                    log.exception("loading the history window failed; retrying")
                    await asyncio.sleep(min(1.0, self.timeout))
        finally:
            await redis.aclose()
        held, self._held = self._held or [], None
        for data in held:
            self._deliver(data)
        self.loads += 1
        self._load = None
        self._set_state(SourceState.UP)

    async def _catch_up(self, redis: Redis, sink: RuntimeSink) -> None:
        keys = self.keys
        meta: dict[bytes, bytes] = await redis.hgetall(keys.meta)  # type: ignore[assignment]
        if b"epoch" not in meta:
            sink.restore(None, 0, [])
            return
        epoch = meta[b"epoch"].decode()
        newest = int(meta[b"seq"])
        first = int(meta.get(b"from", 1))
        here_epoch, here_seq = sink.position()
        same = epoch == here_epoch and here_seq >= first - 1
        start = here_seq + 1 if same else first
        entries = await self._read(redis, start)
        if same and (not entries or entries[0].seq == start):
            late = [e for e in entries if e.seq > here_seq]
            if late:
                log.info("publishing %d quote(s) missed while resubscribing", len(late))
            for entry in late:
                sink.on_positioned(entry.raw, entry.seq, epoch)
            return
        if same and start <= newest:
            log.error(
                "positions %d..%d are gone from the history: closing every client (1011)",
                start,
                entries[0].seq - 1 if entries else newest,
            )
            sink.close_affected(lambda _f: True)
            entries = await self._read(redis, first)
        sink.restore(epoch, max(newest, entries[-1].seq if entries else 0), entries)

    async def _read(self, redis: Redis, start: int) -> list[StoredQuote]:
        """The stream's entries from position ``start`` on, younger than ``history_age``."""
        seconds, micros = await redis.time()
        now_ms = seconds * 1000 + micros // 1000
        oldest_ms = now_ms - self.history_age * 1000
        here = time.monotonic()
        out: list[StoredQuote] = []
        low = f"{start}-0"
        while True:
            chunk: list[Any] = await redis.xrange(self.keys.stream, min=low, count=_CHUNK)  # type: ignore[assignment]
            for entry_id, fields in chunk:
                t = int(fields[b"t"])
                if t >= oldest_ms:
                    seq = int(entry_id.split(b"-")[0])
                    out.append(StoredQuote(seq, fields[b"q"], here - (now_ms - t) / 1000))
            if len(chunk) < _CHUNK:
                return out
            low = "(" + chunk[-1][0].decode()
