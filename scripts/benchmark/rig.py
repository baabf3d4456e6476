"""
The load rig: client processes, the publisher and the watchers of one server under test.

A :class:`Rig` opens the clients (spread over several processes), proves every one
of them is subscribed with a warm-up, then runs measured *phases*: the publisher
sends quotes on its fixed schedule while the orchestrator samples the server's CPU
and RSS; afterwards it waits for the stream to drain and merges every client
process's counts and latency histogram into a :class:`PhaseResult` dict.

Every wait here has a deadline; processes started here are stopped by this object.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any
from urllib.parse import quote as urlquote
from urllib.parse import urlsplit

import psutil
from feed import ticker_names
from latency_histogram import LatencyHistogram
from loadgen import WorkerSpec, worker_main
from phase_report import PhaseInputs, RssTrace, Watch, build_phase_result
from publisher import GIVE_UP_FACTOR, GIVE_UP_SLACK, PhaseStats, publisher_main
from servers import CpuSnapshot, process_tree, rss_bytes

__all__ = ["Rig", "RigConfig", "RigError"]

_CTX = mp.get_context("spawn")


class RigError(RuntimeError):
    """The rig could not do what it was asked (the message says what and why)."""


@dataclass(frozen=True)
class RigConfig:
    """Shape of the load: who connects, asking for what."""

    ws_url: str
    redis_url: str
    channel: str = "quotes.realtime"
    ticker_count: int = 300
    clients: int = 1000
    tickers_per_client: int | None = 10
    """``None``: every client asks for all tickers (no ``tickers`` parameter)."""
    client_processes: int = 2
    seed: int = 1
    connect_timeout: float = 120.0
    drain_timeout: float = 30.0
    quiet_seconds: float = 2.0
    memory_limit: int = 4 * 1024**3
    """Server + Redis RSS (bytes) at which a phase stops publishing early."""
    shards: int | None = None
    """Sharded upstream: ``SPUBLISH`` on this many shard channels (``None``: ``PUBLISH``)."""


def _call(conn: Connection, cmd: tuple[Any, ...], timeout: float, who: str) -> Any:
    conn.send(cmd)
    return _reply(conn, timeout, who)


def _reply(conn: Connection, timeout: float, who: str) -> Any:
    if not conn.poll(timeout):
        raise RigError(f"{who} did not answer within {timeout:.0f}s")
    try:
        status, value = conn.recv()
    except EOFError:
        raise RigError(f"{who} exited unexpectedly") from None
    if status != "ok":
        raise RigError(f"{who}: {value}")
    return value


def _prime(url: str) -> None:
    """
    Open and close one connection before measuring the server's baseline RSS.

    A server imports and allocates some things on its first WebSocket; that is not
    a per-connection cost. Nothing listening is fatal (fail fast); a refused
    handshake is not (the clients retry 5xx and report the rest).
    """
    from websockets.sync.client import connect

    if url.startswith("http://"):  # an SSE stream: its response head, then hang up
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                resp.read(1)
        except urllib.error.HTTPError:
            return  # e.g. 503: the clients retry
        except OSError as exc:
            raise RigError(f"cannot connect to {url}: {exc}") from None
        return
    try:
        with connect(url, open_timeout=10, close_timeout=5):
            pass
    except OSError as exc:  # nothing listens there, or the host is unreachable
        raise RigError(f"cannot connect to {url}: {exc}") from None
    except Exception:  # e.g. 503 while the server's upstream is down: clients retry
        return


_WRITE_COUNTERS = ("quotes_forwarded_total", "quotes_socket_writes_total", "quotes_flushes_total")
_GC_SAMPLES = tuple(
    f'quotes_gc_pause_seconds_{kind}{{generation="{generation}"}}'
    for generation in range(3)
    for kind in ("count", "sum")
)
_GC_FULL_BUCKETS = 'quotes_gc_pause_seconds_bucket{generation="2",le="'


def scrape_write_counters(ws_url: str) -> dict[str, float] | None:
    """
    Our server's frame, write and flush counters from its ``/metrics`` (``None`` for a
    server without them, e.g. the reference), and its garbage collections' pause
    histogram when it has one. With several worker processes this is whichever
    worker answered.
    """
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{parts.netloc}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (OSError, ValueError):
        return None
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in _WRITE_COUNTERS or name in _GC_SAMPLES or name.startswith(_GC_FULL_BUCKETS):
            found[name] = float(value)
    return found if all(name in found for name in _WRITE_COUNTERS) else None


def write_figures(
    before: dict[str, float] | None, after: dict[str, float] | None
) -> dict[str, float | None] | None:
    """Frames per socket write and per flush over a phase, from two scrapes."""
    if before is None or after is None:
        return None
    frames, writes, flushes = (after[k] - before[k] for k in _WRITE_COUNTERS)
    if writes <= 0 or flushes <= 0:
        return None
    return {
        "frames_per_write": round(frames / writes, 3),
        "writes_per_flush": round(writes / flushes, 1),
        "flushes": flushes,
        **gc_figures(before, after),
    }


def gc_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """
    The server's garbage collections over a phase (empty without the histogram): the
    full collections, their pauses in all, the longest one's bucket (it took at most
    that long), and the young collections' pauses in all.
    """
    if not all(name in before and name in after for name in _GC_SAMPLES):
        return {}

    def delta(kind: str, generation: int) -> float:
        name = f'quotes_gc_pause_seconds_{kind}{{generation="{generation}"}}'
        return after[name] - before[name]

    full = delta("count", 2)
    longest = 0.0  # the smallest bucket (cumulative) that gained every one of them
    if full:
        longest = float("inf")
        for name, value in after.items():
            if name.startswith(_GC_FULL_BUCKETS) and value - before.get(name, 0.0) == full:
                longest = min(longest, float(name[len(_GC_FULL_BUCKETS) :].rstrip('"}')))
    return {
        "gc_full_collections": full,
        "gc_full_pause_ms": round(delta("sum", 2) * 1000, 1),
        # null: over the largest bucket (1 s)
        "gc_full_pause_max_ms_at_most": round(longest * 1000, 1) if longest < 1e9 else None,
        "gc_young_pause_ms": round((delta("sum", 0) + delta("sum", 1)) * 1000, 1),
    }


class Rig:
    """Clients and publisher driving one server; use as a context manager."""

    def __init__(
        self, cfg: RigConfig, *, server_pids: list[int], redis_pids: list[int] | None = None
    ) -> None:
        self.cfg = cfg
        self.server_pids = server_pids
        self.redis_pids = redis_pids or []
        self.tickers = ticker_names(cfg.ticker_count)
        rng = random.Random(cfg.seed)
        k = cfg.tickers_per_client
        self.filters: list[list[int] | None] = [
            None
            if k is None or k >= cfg.ticker_count
            else sorted(rng.sample(range(cfg.ticker_count), k))
            for _ in range(cfg.clients)
        ]
        self.procs: list[BaseProcess] = []
        self.stop = _CTX.Event()
        self.worker_conns: list[Connection] = []
        self.publisher_conn: Connection | None = None
        self.watch: Watch | None = None
        self.baseline_rss: int | None = None
        self.baseline_redis_rss: int | None = None
        self.opened = 0
        self.failed: set[int] = set()
        self.cold = 0
        self.connect_errors: list[str] = []

    # --- set-up -----------------------------------------------------------------

    def _url(self, tickers: list[int] | None) -> str:
        if tickers is None:
            return self.cfg.ws_url
        sep = "&" if "?" in self.cfg.ws_url else "?"
        names = ",".join(self.tickers[i] for i in tickers)
        return f"{self.cfg.ws_url}{sep}tickers={urlquote(names, safe=',')}"

    def worker_entry(self) -> Callable[[WorkerSpec, Connection], None]:
        """The client processes' entry point (the soak's rig runs clients that check more)."""
        return worker_main

    def _server_procs(self) -> list[psutil.Process]:
        return process_tree(self.server_pids)

    def open(self) -> dict[str, Any]:
        """Start the publisher and client processes and open every connection."""
        cfg = self.cfg
        parent, child = _CTX.Pipe()
        pub = _CTX.Process(
            target=publisher_main,
            kwargs={
                "conn": child,
                "redis_url": cfg.redis_url,
                "channel": cfg.channel,
                "ticker_count": cfg.ticker_count,
                "stop": self.stop,
                "shards": cfg.shards,
            },
            name="bench-publisher",
            daemon=True,
        )
        pub.start()
        self.procs.append(pub)
        self.publisher_conn = parent
        _reply(parent, 30, "publisher")

        _prime(cfg.ws_url)
        self.baseline_rss = rss_bytes(self._server_procs()) if self.server_pids else None
        self.baseline_redis_rss = (
            rss_bytes(process_tree(self.redis_pids)) if self.redis_pids else None
        )
        n = max(1, min(cfg.client_processes, cfg.clients))
        for w in range(n):
            urls = [self._url(self.filters[c]) for c in range(w, cfg.clients, n)]
            spec = WorkerSpec(worker_id=w, urls=urls, connect_timeout=cfg.connect_timeout)
            parent, child = _CTX.Pipe()
            proc = _CTX.Process(
                target=self.worker_entry(),
                args=(spec, child),
                name=f"bench-clients-{w}",
                daemon=True,
            )
            proc.start()
            self.procs.append(proc)
            self.worker_conns.append(parent)
        started = time.monotonic()
        opened = failed = 0
        for w, conn in enumerate(self.worker_conns):
            left = cfg.connect_timeout + 30 - (time.monotonic() - started)
            res = _reply(conn, max(1.0, left), f"client process {w}")
            opened += res["opened"]
            failed += len(res["failed"])
            self.failed.update(local * n + w for local in res["failed"])
            self.connect_errors.extend(res["errors"])
        self.opened = opened
        self.watch = Watch(
            server=self._server_procs(),
            redis=process_tree(self.redis_pids),
            workers=[psutil.Process(p.pid) for p in self.procs[1:] if p.pid],
            publisher=[psutil.Process(pub.pid)] if pub.pid else [],
        )
        return {
            "opened": opened,
            "failed": failed,
            "seconds": round(time.monotonic() - started, 2),
            "errors": self.connect_errors[:5],
        }

    # --- helpers ----------------------------------------------------------------

    def _n_workers(self) -> int:
        return len(self.worker_conns)

    def local(self, clients: set[int]) -> list[list[int]]:
        n = self._n_workers()
        out: list[list[int]] = [[] for _ in range(n)]
        for c in sorted(clients):
            out[c % n].append(c // n)
        return out

    def stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for w, conn in enumerate(self.worker_conns):
            for key, v in _call(conn, ("stats",), 30, f"client process {w}").items():
                total[key] = total.get(key, 0) + v
        return total

    def _subscribers(self, clients: set[int] | None = None) -> list[int]:
        subs = [0] * self.cfg.ticker_count
        for c, f in enumerate(self.filters):
            if clients is not None and c not in clients:
                continue
            for t in range(self.cfg.ticker_count) if f is None else f:
                subs[t] += 1
        return subs

    def _expected(self, published: int, order: list[int], clients: set[int]) -> int:
        subs = self._subscribers(clients)
        per_round, rest = divmod(published, len(order))
        expected = sum(subs[t] for t in order) * per_round
        expected += sum(subs[t] for t in order[:rest])
        return expected

    # --- warm-up ----------------------------------------------------------------

    def _cover(self) -> list[int]:
        """A small set of tickers that every open client's filter meets (greedy set cover)."""
        uncovered = {
            c: set(range(self.cfg.ticker_count)) if f is None else set(f)
            for c, f in enumerate(self.filters)
            if c not in self.failed
        }
        cover: list[int] = []
        while uncovered:
            counts = [0] * self.cfg.ticker_count
            for wanted in uncovered.values():
                for t in wanted:
                    counts[t] += 1
            best = max(range(self.cfg.ticker_count), key=counts.__getitem__)
            cover.append(best)
            uncovered = {c: w for c, w in uncovered.items() if best not in w}
        return cover

    def warm_up(self, timeout: float = 60.0) -> dict[str, Any]:
        """
        Publish warm-up quotes until every open connection has received one.

        A round is one quote per ticker of a small cover set (every client's filter
        meets it). After a round the rig waits until every connection is warm or
        the warm-up traffic has stopped arriving, and only then publishes another
        round (for connections that subscribed too late for the last one): a slow
        server is never handed a growing backlog, which would inflate its memory.
        """
        assert self.publisher_conn is not None
        cover = self._cover()
        started = time.monotonic()
        deadline = started + timeout
        rounds = 0
        warm = 0
        while time.monotonic() < deadline:
            _call(self.publisher_conn, ("warmup", cover), 30, "publisher")
            rounds += 1
            self.wait_quiet(
                "stale",
                timeout=max(1.0, deadline - time.monotonic()),
                done=lambda st: st["warm"] >= self.opened,
            )
            warm = self.stats()["warm"]
            if warm >= self.opened:
                break
        self.wait_quiet("stale", timeout=max(5.0, deadline - time.monotonic()))
        self.cold = self.opened - warm
        return {
            "warm": warm,
            "of": self.opened,
            "rounds": rounds,
            "cover_tickers": len(cover),
            "seconds": round(time.monotonic() - started, 2),
        }

    def wait_quiet(
        self,
        key: str,
        timeout: float,
        target: int | None = None,
        done: Callable[[dict[str, int]], bool] | None = None,
    ) -> tuple[bool, float]:
        """
        Wait until counter ``key`` stops moving, reaches ``target``, or ``done(stats)``.

        Returns:
            Whether it did before the timeout, and the wall time it last moved.
        """
        deadline = time.monotonic() + timeout
        last = -1
        last_change = time.monotonic()
        last_change_wall = time.time()
        while time.monotonic() < deadline:
            stats = self.stats()
            value = stats[key]
            if value != last:
                last, last_change, last_change_wall = value, time.monotonic(), time.time()
            if (target is not None and value >= target) or (done is not None and done(stats)):
                return True, last_change_wall
            if time.monotonic() - last_change >= self.cfg.quiet_seconds:
                return True, last_change_wall
            time.sleep(0.1)
        return False, last_change_wall

    # --- measurement --------------------------------------------------------------

    def redis_kib_per_connection(self) -> float | None:
        """Growth of the private Redis's RSS since before the clients connected, per client."""
        if self.baseline_redis_rss is None or not self.opened:
            return None
        now = rss_bytes(process_tree(self.redis_pids))
        return round((now - self.baseline_redis_rss) / 1024 / self.opened, 1)

    def sample_rss(self) -> int:
        """Current RSS of the server process tree, in bytes."""
        return rss_bytes(self._server_procs())

    def measure(
        self,
        rate: float,
        duration: float,
        *,
        designated: set[int] | None = None,
        stall: bool = False,
        label: str = "",
    ) -> dict[str, Any]:
        """
        Run one measured phase and return its result.

        Args:
            rate: quotes per second to publish.
            duration: seconds of publishing.
            designated: client numbers counted apart (not in latency or loss).
            stall: whether the designated clients stop reading during the phase.
            label: a name for the phase in the result.
        """
        assert self.publisher_conn is not None
        assert self.watch is not None
        designated = designated or set()
        measured = set(range(self.cfg.clients)) - designated - self.failed
        start = round(time.time() + 0.5, 3)
        for w, (conn, local) in enumerate(
            zip(self.worker_conns, self.local(designated), strict=True)
        ):
            _call(conn, ("phase", start, local, stall), 30, f"client process {w}")
        order = list(range(self.cfg.ticker_count))
        self.publisher_conn.send(("run", start, rate, duration, order))
        server_procs = self._server_procs()
        watch = Watch(server_procs, self.watch.redis, self.watch.workers, self.watch.publisher)
        rss = RssTrace()
        counters0 = scrape_write_counters(self.cfg.ws_url)
        time.sleep(max(0.0, start - time.time()))
        cpu0 = CpuSnapshot.take(watch.all())
        machine0 = psutil.cpu_times()
        rss.add(rss_bytes(server_procs))
        limit = time.monotonic() + duration * GIVE_UP_FACTOR + GIVE_UP_SLACK + 60
        memory_stop = False
        while not self.publisher_conn.poll(0.5):
            now_rss = rss_bytes(server_procs)
            rss.add(now_rss)
            if not memory_stop and now_rss + rss_bytes(watch.redis) > self.cfg.memory_limit:
                # The server or Redis is queueing without bound: stop before the machine suffers.
                memory_stop = True
                self.stop.set()
            if time.monotonic() > limit:
                raise RigError("publisher did not finish its phase in time")
        self.stop.clear()
        cpu1 = CpuSnapshot.take(watch.all())
        machine1 = psutil.cpu_times()
        pub: PhaseStats = _reply(self.publisher_conn, 60, "publisher")

        expected = self._expected(pub.published, order, measured)
        drained, _ = self.wait_quiet("received", self.cfg.drain_timeout, target=expected)
        rss.add(rss_bytes(server_procs))
        writes = write_figures(counters0, scrape_write_counters(self.cfg.ws_url))

        hist = LatencyHistogram()
        counts: dict[str, Any] = {}
        close_codes: dict[int, int] = {}
        last_receipt = 0.0
        loop_lags: list[float] = []
        for w, conn in enumerate(self.worker_conns):
            rep = _call(conn, ("report",), 60, f"client process {w}")
            hist.merge_sparse(rep.pop("fine"), rep.pop("coarse"))
            last_receipt = max(last_receipt, rep.pop("last_receipt"))
            loop_lags.extend(rep.pop("loop_lags"))
            for code, n in rep.pop("close_codes").items():
                close_codes[code] = close_codes.get(code, 0) + n
            for key, v in rep.items():
                counts[key] = counts.get(key, 0) + v
        counts["close_codes"] = close_codes
        counts["loop_lags"] = sorted(loop_lags)
        # Deliveries per second over the time they took: the schedule, or longer when
        # the server was still catching up after publishing ended.
        active = max(pub.published / rate, last_receipt - start)
        result = build_phase_result(
            PhaseInputs(
                label=label, rate=rate, duration=duration, pub=pub, expected=expected,
                counts=counts, hist=hist, drained=drained, cpu0=cpu0, cpu1=cpu1,
                machine0=machine0, machine1=machine1, watch=watch, rss=rss,
                designated=len(designated), stall=stall, active=active, opened=self.opened,
                failed=len(self.failed), cold=self.cold, baseline_rss=self.baseline_rss,
                memory_stopped=memory_stop, memory_limit=self.cfg.memory_limit,
                drain_timeout=self.cfg.drain_timeout,
            )
        )  # fmt: skip
        if writes is not None:
            result["server"].update(writes)
        return result

    # --- tear-down --------------------------------------------------------------

    def close(self) -> dict[str, int]:
        """Close every connection, stop the publisher and client processes (by PID)."""
        final: dict[str, int] = {}
        for w, conn in enumerate(self.worker_conns):
            with contextlib.suppress(RigError, OSError):
                for key, v in _call(conn, ("close",), 30, f"client process {w}").items():
                    final[key] = final.get(key, 0) + v
        if self.publisher_conn is not None:
            with contextlib.suppress(RigError, OSError):
                _call(self.publisher_conn, ("close",), 10, "publisher")
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        self.procs.clear()
        self.worker_conns.clear()
        self.publisher_conn = None
        return final

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
