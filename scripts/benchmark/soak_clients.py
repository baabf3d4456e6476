"""
The soak's client processes: loadgen's connections, checking every quote's place.

The soak publishes *counted* quotes (each ticker's quotes carry 1, 2, 3 ... in
``volume``, see ``feed``) and its clients connect with ``seq=1``. A
:class:`SoakClient` keeps, per ticker of its filter, the last number it saw, so a
lost quote shows as a jump in that sequence and a repeated or reordered one as a
step back (both counted in quotes), and it keeps the stream position (``epoch``,
``seq``) of the last quote it saw, to resume from.

A :class:`SoakWorker` adds three commands to loadgen's worker (one reply each):

``("churn", plain, resume, down)``
    Close those connections (1000), wait ``down`` seconds, open them again: the
    ``plain`` ones afresh (their sequences start over: what was published while
    they were away is not theirs to get), the ``resume`` ones with
    ``since=<epoch>:<seq>`` of their last quote, keeping their sequences, so the
    replay must fill the gap exactly. Answers at once; ``("stats",)`` then counts
    the churns still ``churning``.
``("period",)``
    The counters and latency histogram since the last ``period``, then starts
    afresh. Replayed quotes are counted, not timed (they are late by design).
``("final", published, ticker_count)``
    Once the publisher has stopped and the stream drained: how many quotes the open
    connections still miss at the end of their sequences.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import parse_qs, urlsplit

from feed import TICKER_PREFIX, WARMUP_EPOCH_LIMIT
from latency_histogram import COARSE_BUCKETS, COARSE_PER_FINE, FINE_BUCKETS
from loadgen import Client, Recorder, Worker, WorkerSpec
from picows import WSCloseCode, WSFrame, WSHandshakeError, WSMsgType, WSTransport

__all__ = ["SoakClient", "SoakRecorder", "SoakWorker", "soak_worker_main", "ticker_count_of"]

_TEXT = WSMsgType.TEXT
_PREFIX = b'{"ticker":"' + TICKER_PREFIX.encode()
_EVENT = b'{"event"'
_DIGITS = 11 + len(TICKER_PREFIX)
"""Offset of the ticker number in ``{"ticker":"BX0042"``."""

SOAK_COUNTERS = (
    "gaps",
    "gap_events",
    "duplicates",
    "resume_gaps",
    "resume_duplicates",
    "replayed",
    "recovered_true",
    "recovered_false",
    "unexpected_frames",
    "left",
    "reopened",
    "reopen_failed",
    "resumes_sent",
)
"""Counters a :class:`SoakRecorder` adds to loadgen's (all per period)."""


def ticker_count_of(published: int, ticker: int, ticker_count: int) -> int:
    """How many quotes of ``ticker`` are among the first ``published`` of a counted run."""
    return (published - ticker + ticker_count - 1) // ticker_count if published > ticker else 0


class SoakRecorder(Recorder):
    """loadgen's counters plus the soak's (see :data:`SOAK_COUNTERS`)."""

    __slots__ = ("churning", "soak")

    def __init__(self) -> None:
        self.soak: dict[str, int] = dict.fromkeys(SOAK_COUNTERS, 0)
        self.churning = 0
        super().__init__()

    def reset(self) -> None:
        """Forget the counts of the previous period (the churns under way stay)."""
        super().reset()
        self.soak = dict.fromkeys(SOAK_COUNTERS, 0)

    def counts(self) -> dict[str, int]:
        """loadgen's counters, the soak's, and the churns under way."""
        return {**super().counts(), **self.soak, "churning": self.churning}


class SoakClient(Client):
    """One connection that checks each ticker's sequence and remembers its position."""

    __slots__ = (
        "awaiting",
        "epoch",
        "fresh",
        "from_start",
        "last",
        "leaving",
        "replay_until",
        "seq",
        "srec",
        "tickers",
    )

    def __init__(self, rec: SoakRecorder, tickers: list[int], *, from_start: bool) -> None:
        super().__init__(rec)
        self.srec = rec
        self.tickers = tickers
        self.last: dict[int, int] = {}
        """Ticker -> the last number seen in its sequence."""
        self.fresh: set[int] = set()
        """Tickers not seen since a resume: their next quote must follow on exactly."""
        self.from_start = from_start
        """Whether the sequences have been checked since the run's first quote."""
        self.leaving = False
        self.awaiting = False
        self.replay_until = -1
        self.seq = -1
        self.epoch = b""

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not _TEXT:
            super().on_ws_frame(transport, frame)
            return
        now = time.time()
        data = frame.get_payload_as_bytes()
        rec = self.srec
        if data.startswith(_EVENT):
            self._control(data)
            return
        if not data.startswith(_PREFIX):
            rec.foreign += 1
            return
        k = data.rfind(b'"seq":')
        e = data.find(b'"epoch":"', k)
        if k < 0 or e < 0:
            rec.malformed += 1
            return
        self.seq = seq = int(data[k + 6 : e - 1])
        self.epoch = data[e + 9 : data.find(b'"', e + 9)]
        if self.awaiting:  # a quote before the recovered frame
            rec.soak["unexpected_frames"] += 1
            self.awaiting = False
        i = data.find(b'"timestamp"', 12)
        j = data.find(b'"', i + 11) + 1
        ts = data[j : j + 26]
        t = rec.ts_cache.get(ts)
        if t is None:
            t = rec.parse(ts)
        if t < rec.phase_start:
            if t < 0:
                rec.malformed += 1
                return
            if t < WARMUP_EPOCH_LIMIT and not self.warm:
                self.warm = True
                rec.warm += 1
            rec.stale += 1
            return
        v = data.find(b'"volume":', j)
        self._check(
            int(data[_DIGITS : data.find(b'"', _DIGITS)]), int(data[v + 9 : data.find(b",", v + 9)])
        )
        rec.received += 1
        if seq <= self.replay_until:
            rec.soak["replayed"] += 1
            return
        rec.last_receipt = now
        q = int((now - t) * 100_000.0)
        if q < FINE_BUCKETS:
            rec.fine[q if q > 0 else 0] += 1
        else:
            q //= COARSE_PER_FINE
            rec.coarse[q if q < COARSE_BUCKETS else COARSE_BUCKETS - 1] += 1

    def _check(self, ticker: int, number: int) -> None:
        """Count a break in ``ticker``'s sequence: quotes skipped, or a step back."""
        soak = self.srec.soak
        last = self.last.get(ticker)
        across = ticker in self.fresh
        if across:
            self.fresh.discard(ticker)
        if last is None:
            if self.from_start and number != 1:
                soak["resume_gaps" if across else "gaps"] += number - 1
                soak["gap_events"] += 1
        elif number > last + 1:
            soak["resume_gaps" if across else "gaps"] += number - last - 1
            soak["gap_events"] += 1
        elif number <= last:
            soak["resume_duplicates" if across else "duplicates"] += 1
        self.last[ticker] = number

    def _control(self, data: bytes) -> None:
        soak = self.srec.soak
        try:
            event = json.loads(data)
        except ValueError:
            self.srec.malformed += 1
            return
        if event.get("event") != "recovered" or not self.awaiting:
            soak["unexpected_frames"] += 1
            return
        self.awaiting = False
        if event.get("recovered") is True:
            soak["recovered_true"] += 1
            self.replay_until = int(event["seq"])
        else:
            # The gap cannot be filled: what follows is a new sequence.
            soak["recovered_false"] += 1
            self.last, self.fresh, self.from_start = {}, set(), False

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        if self.leaving:
            self.srec.soak["left"] += 1
            return
        super().on_ws_disconnected(transport)


def _filter_of(url: str) -> list[int]:
    """Ticker indexes of a URL's ``tickers=BX0001,BX0042`` parameter."""
    names = parse_qs(urlsplit(url).query).get("tickers", [""])[0]
    return [int(n[len(TICKER_PREFIX) :]) for n in names.split(",") if n]


class SoakWorker(Worker):
    """loadgen's worker with :class:`SoakClient` connections and the soak's commands."""

    def __init__(self, spec: WorkerSpec, conn: Connection) -> None:
        super().__init__(spec, conn)
        self.srec = SoakRecorder()
        self.rec = self.srec
        self.filters = [_filter_of(url) for url in spec.urls]
        self.since: dict[int, str] = {}
        self.carry: dict[int, SoakClient] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def new_client(self, index: int) -> Client:
        old = self.carry.get(index)
        client = SoakClient(
            self.srec,
            self.filters[index],
            from_start=self.clients[index] is None or (old is not None and old.from_start),
        )
        if old is not None:
            client.last = dict(old.last)
            client.fresh = set(self.filters[index])
            client.awaiting = True
        return client

    def url_for(self, index: int) -> str:
        since = self.since.get(index)
        base = super().url_for(index)
        return base if since is None else f"{base}&since={since}"

    async def _churn(self, plain: list[int], resume: list[int], down: float) -> None:
        soak = self.srec.soak
        try:
            olds: dict[int, SoakClient] = {}
            for i in [*plain, *resume]:
                c = self.clients[i]
                if isinstance(c, SoakClient) and c.transport is not None and not c.closed:
                    olds[i] = c
                    c.leaving = True
                    c.transport.send_close(WSCloseCode.OK)
                    c.transport.disconnect()
            waits = [c.transport.wait_disconnected() for c in olds.values() if c.transport]
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 10)
            for i in resume:
                old = olds.get(i)
                if old is not None and old.epoch:
                    self.since[i] = f"{old.epoch.decode()}:{old.seq}"
                    self.carry[i] = old
                    soak["resumes_sent"] += 1
            await asyncio.sleep(down)
            sem = asyncio.Semaphore(self.spec.connect_concurrency)
            deadline = time.monotonic() + self.spec.connect_timeout
            await asyncio.gather(*(self._connect_one(i, sem, deadline) for i in olds))
            for i, old in olds.items():
                soak["reopen_failed" if self.clients[i] is old else "reopened"] += 1
        finally:
            for i in [*plain, *resume]:
                self.since.pop(i, None)
                self.carry.pop(i, None)
            self.srec.churning -= 1

    def period(self) -> dict[str, Any]:
        """The period's counters and histogram; the next period starts from zero."""
        out = self.report()
        self.srec.reset()
        self.loop_lags = []
        return out

    def final(self, published: int, ticker_count: int) -> dict[str, int]:
        """What the open connections miss at the end of their sequences."""
        missing = unseen = still_open = 0
        for c in self.clients:
            if not isinstance(c, SoakClient) or c.closed:
                continue
            still_open += 1
            for t in c.tickers:
                want = ticker_count_of(published, t, ticker_count)
                last = c.last.get(t)
                if last is not None:
                    missing += max(0, want - last)
                elif c.from_start:
                    missing += want
                else:  # reopened afresh so lately that no quote of it came yet
                    unseen += 1
        return {"open": still_open, "tail_missing": missing, "unseen": unseen}

    def on_command(self, cmd: tuple[Any, ...]) -> None:
        name = cmd[0]
        if name == "churn":
            # counted before the answer, so the next ("stats",) already sees it
            self.srec.churning += 1
            task = asyncio.get_running_loop().create_task(self._churn(*cmd[1:]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            self.conn.send(("ok", None))
        elif name == "period":
            self.conn.send(("ok", self.period()))
        elif name == "final":
            self.conn.send(("ok", self.final(*cmd[1:])))
        else:
            super().on_command(cmd)


def soak_worker_main(spec: WorkerSpec, conn: Connection) -> None:  # pragma: no cover - child
    """Entry point of a soak client process (loadgen's ``worker_main``, soak clients)."""
    import uvloop

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(SoakWorker(spec, conn).run())
    except KeyboardInterrupt:
        return
    except WSHandshakeError as exc:
        conn.send(("error", str(exc)))
