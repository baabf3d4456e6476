"""
A client process of the load generator: many picows WebSocket connections (or raw
Server-Sent Events streams, for an ``http://`` URL), one loop.

Per message the hot path does the least that is still exact: it checks the ticker
prefix, finds the ``"timestamp"`` key by a byte search (exact for any compact or
spaced JSON whose timestamp string is canonical), looks the 26-byte timestamp up
in a per-process cache (each quote reaches many connections of the same process,
so it is parsed about once per process), and counts ``receive time - timestamp``
in a fixed-bucket histogram (see ``latency_histogram``). No JSON parsing, no
per-message allocation beyond the payload itself.

The orchestrator drives the process through a pipe; see :func:`worker_main` for
the commands. Connections that the orchestrator *designates* (the slow-consumer
scenario) are counted apart, and when told to stall they stop reading their
socket (``pause_reading``) so the server sees a client that makes no progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

from feed import TICKER_PREFIX, WARMUP_EPOCH_LIMIT, parse_timestamp
from latency_histogram import COARSE_BUCKETS, COARSE_PER_FINE, FINE_BUCKETS, LatencyHistogram
from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSHandshakeError,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)

__all__ = ["WorkerSpec", "worker_main"]

_TEXT = WSMsgType.TEXT
_CLOSE = WSMsgType.CLOSE
_PREFIX = b'{"ticker":"' + TICKER_PREFIX.encode()
_SPACED_PREFIX = b'{"ticker": "' + TICKER_PREFIX.encode()
_CACHE_LIMIT = 200_000
_RETRY_STATUSES = {502, 503, 504}
_PROBE_INTERVAL = 0.01
_PROBE_LIMIT = 200_000


@dataclass(frozen=True)
class WorkerSpec:
    """What one client process connects to."""

    worker_id: int
    urls: list[str]
    """One URL per connection (each with its own ``?tickers=``)."""
    connect_concurrency: int = 64
    connect_timeout: float = 60.0


class Recorder:
    """Counters and histogram of one client process (one phase at a time)."""

    __slots__ = (
        "close_codes",
        "coarse",
        "designated_disconnected",
        "designated_received",
        "disconnected",
        "fine",
        "foreign",
        "last_receipt",
        "malformed",
        "open_at_start",
        "phase_start",
        "received",
        "stale",
        "ts_cache",
        "warm",
    )

    def __init__(self) -> None:
        self.ts_cache: dict[bytes, float] = {}
        self.warm = 0
        self.open_at_start = 0
        self.phase_start = float("inf")
        self.reset()

    def reset(self) -> None:
        """Forget the counts of the previous phase."""
        self.disconnected = 0
        self.designated_disconnected = 0
        self.close_codes: dict[int, int] = {}
        self.last_receipt = 0.0
        self.fine = [0] * FINE_BUCKETS
        self.coarse = [0] * COARSE_BUCKETS
        self.received = 0
        self.designated_received = 0
        self.stale = 0
        self.foreign = 0
        self.malformed = 0

    def parse(self, ts: bytes) -> float:
        """Parse and cache a timestamp."""
        if len(self.ts_cache) >= _CACHE_LIMIT:
            self.ts_cache.clear()
        t = parse_timestamp(ts)
        self.ts_cache[ts] = t
        return t

    def count_close(self, code: int) -> None:
        """One connection ended with close code ``code``."""
        self.close_codes[code] = self.close_codes.get(code, 0) + 1

    def count_disconnect(self, close_code: int | None, designated: bool) -> None:
        """
        A connection ended: one without a close code counts as 1006 (what browsers
        report for a connection dropped without a close frame).
        """
        if close_code is None:
            self.count_close(1006)
        if designated:
            self.designated_disconnected += 1
        else:
            self.disconnected += 1

    def counts(self) -> dict[str, int]:
        """The counters, without the histogram (close codes: see ``close_codes``)."""
        return {
            "received": self.received,
            "designated_received": self.designated_received,
            "stale": self.stale,
            "foreign": self.foreign,
            "malformed": self.malformed,
            "warm": self.warm,
            "disconnected": self.disconnected,
            "designated_disconnected": self.designated_disconnected,
            "open_at_start": self.open_at_start,
        }


class Client(WSListener):  # type: ignore[misc]
    """One connection: records every text frame into the shared recorder."""

    __slots__ = ("close_code", "closed", "designated", "rec", "transport", "warm")

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec
        self.transport: WSTransport | None = None
        self.warm = False
        self.designated = False
        self.closed = False
        self.close_code: int | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is not _TEXT:
            if frame.msg_type is _CLOSE:
                code = frame.get_close_code()
                self.close_code = int(code)
                self.rec.count_close(self.close_code)
                transport.send_close(code)
                transport.disconnect()
            return
        record(self, frame.get_payload_as_bytes(), time.time())

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        self.rec.count_disconnect(self.close_code, self.designated)


def record(client: Client | SseClient, data: bytes, now: float) -> None:
    """Count one quote message (a WebSocket text frame, or an SSE event's data)."""
    rec = client.rec
    if not data.startswith((_PREFIX, _SPACED_PREFIX)):
        rec.foreign += 1
        return
    i = data.find(b'"timestamp"', 12)
    if i < 0:
        rec.malformed += 1
        return
    j = data.find(b'"', i + 11) + 1
    ts = data[j : j + 26]
    t = rec.ts_cache.get(ts)
    if t is None:
        t = rec.parse(ts)
    if t < rec.phase_start:
        if t < 0:
            rec.malformed += 1
            return
        if t < WARMUP_EPOCH_LIMIT and not client.warm:
            client.warm = True
            rec.warm += 1
        rec.stale += 1
        return
    if client.designated:
        rec.designated_received += 1
        return
    rec.received += 1
    rec.last_receipt = now
    k = int((now - t) * 100_000.0)
    if k < FINE_BUCKETS:
        rec.fine[k if k > 0 else 0] += 1
    else:
        k //= COARSE_PER_FINE
        rec.coarse[k if k < COARSE_BUCKETS else COARSE_BUCKETS - 1] += 1


class _SseTransport:
    """What :class:`Worker` asks of a picows transport, for an SSE stream."""

    def __init__(self, client: SseClient, transport: asyncio.Transport) -> None:
        self.client = client
        self.underlying_transport = transport

    def send_close(self, code: object = None) -> None:
        pass  # SSE has no closing handshake: the client just hangs up

    def disconnect(self) -> None:
        self.underlying_transport.close()

    async def wait_disconnected(self) -> None:
        await self.client.gone


class SseClient(asyncio.Protocol):
    """
    One Server-Sent Events stream over a raw socket: the request and chunked transfer
    decoding by hand, and each event's ``data:`` counted like a WebSocket text frame
    (a batch's array is counted once, as the WebSocket client counts a batch frame).
    A stream's closing ``error`` event counts its close code.
    """

    def __init__(self, rec: Recorder, target: bytes) -> None:
        self.rec = rec
        self.target = target
        self.transport: _SseTransport | None = None
        self.warm = False
        self.designated = False
        self.closed = False
        self.close_code: int | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.gone: asyncio.Future[None] = loop.create_future()
        self._buf = bytearray()
        self._body = bytearray()
        self._head = True
        self._raw: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = transport  # type: ignore[assignment]  # uvloop's: not asyncio's class
        transport.write(self.target)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            self._head = False
            if status.split(b" ")[1:2] != [b"200"]:
                if not self.opened.done():
                    self.opened.set_exception(ConnectionError(status.decode("latin-1")))
                assert self._raw is not None
                self._raw.close()
                return
            assert self._raw is not None
            self.transport = _SseTransport(self, self._raw)
            self.opened.set_result(None)
        body = self._body
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                break
            size = int(buf[:eol], 16)
            if size == 0:
                del buf[:]
                break
            end = eol + 2 + size
            if len(buf) < end + 2:
                break
            body += buf[eol + 2 : end]
            del buf[: end + 2]
        if not body:
            return
        now = time.time()
        start = 0
        while (end := body.find(b"\n\n", start)) >= 0:
            event = body[start:end]
            start = end + 2
            at = event.find(b"data: ")
            if at < 0:
                continue  # the retry: preface, a keepalive comment
            data = bytes(event[at + 6 :])
            if event.startswith(b"event: "):
                if event.startswith(b"event: error"):
                    self._closing(data)
                continue  # recovered: a control event, not a quote
            record(self, data, now)
        del body[:start]

    def _closing(self, data: bytes) -> None:
        at = data.find(b'"close_code":')
        if at >= 0:
            digits = data[at + 13 : at + 17]
            if digits.isdigit():
                self.close_code = int(digits)
                self.rec.count_close(self.close_code)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed before the response"))
        if self.transport is not None:  # it had opened
            self.rec.count_disconnect(self.close_code, self.designated)
        if not self.gone.done():
            self.gone.set_result(None)


async def sse_connect(rec: Recorder, url: str, timeout: float) -> SseClient:
    """Open one SSE stream (``http://host:port/path?query``); raise when it is refused."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    client = SseClient(rec, request)
    raw, _ = await asyncio.wait_for(
        loop.create_connection(lambda: client, parts.hostname, parts.port or 80), timeout
    )
    try:
        await asyncio.wait_for(client.opened, timeout)
    except BaseException:
        raw.close()
        raise
    return client


class Worker:
    """The connections of one process and the commands that drive them."""

    def __init__(self, spec: WorkerSpec, conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.rec = Recorder()
        self.clients: list[Client | SseClient | None] = [None] * len(spec.urls)
        self.errors: list[str] = []
        self.done = asyncio.Event()
        self.loop_lags: list[float] = []

    def new_client(self, index: int) -> Client:
        """The listener of connection ``index`` (a subclass may keep more per connection)."""
        return Client(self.rec)

    def url_for(self, index: int) -> str:
        """The URL connection ``index`` opens (a subclass may add to it, e.g. on reconnect)."""
        return self.spec.urls[index]

    async def _connect_one(self, index: int, sem: asyncio.Semaphore, deadline: float) -> None:
        url = self.url_for(index)
        delay = 0.1
        sse = url.startswith("http://")
        async with sem:
            while True:
                try:
                    if sse:
                        client: Client | SseClient = await sse_connect(
                            self.rec, url, max(1.0, deadline - time.monotonic())
                        )
                    else:
                        _, client = await ws_connect(
                            lambda: self.new_client(index),
                            url,
                            websocket_handshake_timeout=max(1.0, deadline - time.monotonic()),
                            read_buffer_init_size=4096,
                        )
                except (TimeoutError, WSError, OSError) as exc:
                    status = getattr(getattr(exc, "response", None), "status", None)
                    if sse and isinstance(exc, ConnectionError) and exc.args:
                        head = str(exc.args[0]).split(" ")
                        status = int(head[1]) if len(head) > 1 and head[1].isdigit() else None
                    retry = status is None or status in _RETRY_STATUSES
                    if not retry or time.monotonic() + delay > deadline:
                        if len(self.errors) < 5:
                            self.errors.append(f"{type(exc).__name__}: {exc}")
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                self.clients[index] = client
                return

    async def connect_all(self) -> None:
        """Open every connection (bounded concurrency, retried on 503 until the deadline)."""
        sem = asyncio.Semaphore(self.spec.connect_concurrency)
        deadline = time.monotonic() + self.spec.connect_timeout
        await asyncio.gather(
            *(self._connect_one(i, sem, deadline) for i in range(len(self.spec.urls)))
        )

    def _open_clients(self) -> list[Client | SseClient]:
        return [
            c for c in self.clients if c is not None and c.transport is not None and not c.closed
        ]

    def phase(self, start: float, designated: list[int], stall: bool) -> dict[str, Any]:
        """Begin a measured phase: reset counts, mark designated clients, stall them or not."""
        marked = set(designated)
        for i, c in enumerate(self.clients):
            if c is None or c.transport is None:
                continue
            c.designated = i in marked
            transport = c.transport.underlying_transport
            if c.designated and stall:
                transport.pause_reading()
            elif not transport.is_reading() and not transport.is_closing():
                transport.resume_reading()
        self.rec.reset()
        self.loop_lags = []
        self.rec.open_at_start = len(self._open_clients())
        # Timestamps carry whole microseconds and float epochs are exact to a fraction
        # of one, so quote 0 of the phase (stamped ``start``) may parse a hair earlier.
        self.rec.phase_start = start - 2e-6
        return self.rec.counts()

    def report(self) -> dict[str, Any]:
        """Counts and the latency histogram of the current phase."""
        hist = LatencyHistogram()
        hist.fine, hist.coarse = self.rec.fine, self.rec.coarse
        fine, coarse = hist.to_sparse()
        return {
            **self.rec.counts(),
            "fine": fine,
            "coarse": coarse,
            "close_codes": dict(self.rec.close_codes),
            "last_receipt": self.rec.last_receipt,
            "loop_lags": self.loop_lags,
        }

    async def close_all(self) -> None:
        """Close every connection (1000) and wait for them to go, within 10 s."""
        clients = self._open_clients()
        for c in clients:
            assert c.transport is not None
            with contextlib.suppress(Exception):
                c.transport.underlying_transport.resume_reading()
                c.transport.send_close(WSCloseCode.OK)
                c.transport.disconnect()
        waits = [c.transport.wait_disconnected() for c in clients if c.transport is not None]
        if waits:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 10)

    def _read_commands(self, loop: asyncio.AbstractEventLoop) -> None:
        """
        Thread: block on the pipe and hand each command to the loop.

        (The loop's own ``add_reader`` would make the pipe non-blocking, and a large
        reply could then fail half-written.)
        """
        while True:
            try:
                cmd = self.conn.recv()
            except (EOFError, OSError):
                cmd = ("gone",)
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self.on_command, cmd)
            if cmd[0] in {"close", "gone"}:
                return

    def on_command(self, cmd: tuple[Any, ...]) -> None:
        """Handle one command from the orchestrator, on the loop."""
        name = cmd[0]
        if name == "gone":
            self.done.set()
            return
        if name == "stats":
            self.conn.send(("ok", self.rec.counts()))
        elif name == "phase":
            self.conn.send(("ok", self.phase(*cmd[1:])))
        elif name == "report":
            self.conn.send(("ok", self.report()))
        elif name == "close":
            asyncio.get_running_loop().create_task(self._close_and_finish())
        else:
            self.conn.send(("error", f"unknown command {name!r}"))

    async def _close_and_finish(self) -> None:
        await self.close_all()
        self.conn.send(("ok", self.rec.counts()))
        self.done.set()

    async def run(self) -> None:
        """Connect, report, then serve commands until told to close."""
        await self.connect_all()
        opened = len(self._open_clients())
        gc.collect()
        gc.freeze()
        self.conn.send(
            (
                "ok",
                {
                    "opened": opened,
                    "failed": [i for i, c in enumerate(self.clients) if c is None],
                    "errors": self.errors,
                },
            )
        )
        loop = asyncio.get_running_loop()
        threading.Thread(
            target=self._read_commands, args=(loop,), name="commands", daemon=True
        ).start()
        probe = asyncio.create_task(self._probe_loop_lag())
        await self.done.wait()
        probe.cancel()

    async def _probe_loop_lag(self) -> None:
        """
        Measure how late this process's event loop wakes up (every 10 ms).

        A quote that arrives while the loop is busy waits in the socket for that
        long: the lag is latency the load generator itself adds to the measurement.
        (libuv timers have millisecond granularity, so about 1 ms is the floor.)
        """
        clock = time.perf_counter
        while True:
            t = clock()
            await asyncio.sleep(_PROBE_INTERVAL)
            lag = clock() - t - _PROBE_INTERVAL
            lags = self.loop_lags
            if len(lags) < _PROBE_LIMIT:
                lags.append(lag if lag > 0 else 0.0)


def worker_main(spec: WorkerSpec, conn: Connection) -> None:  # pragma: no cover - child process
    """
    Entry point of a client process.

    After connecting it sends ``("ok", {"opened", "failed", "errors"})`` (``failed``:
    local indexes), then obeys
    commands, one reply each: ``("stats",)`` counters so far; ``("phase", start,
    designated, stall)`` start counting quotes stamped at or after ``start`` (wall
    epoch seconds), with the listed local connection indexes counted apart and,
    if ``stall``, not reading; ``("report",)`` counters and sparse histogram;
    ``("close",)`` close every connection and exit.
    """
    import uvloop

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(Worker(spec, conn).run())
    except KeyboardInterrupt:
        return
    except WSHandshakeError as exc:
        conn.send(("error", str(exc)))
