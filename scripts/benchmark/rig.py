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
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any
from urllib.parse import quote as urlquote

import psutil
from feed import ticker_names
from latency_histogram import LatencyHistogram
from loadgen import WorkerSpec, worker_main
from publisher import GIVE_UP_FACTOR, GIVE_UP_SLACK, PhaseStats, publisher_main
from servers import CpuSnapshot, process_tree, rss_bytes

__all__ = ["Rig", "RigConfig", "RigError"]

_CTX = mp.get_context("spawn")
_MiB = 1024 * 1024
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 100.0)
_PCT_KEYS = ("p50", "p90", "p99", "p99_9", "max")
_CLIENT_CPU_SATURATED = 85.0
_MACHINE_CPU_SATURATED = 95.0
_PUBLISHER_LAG_MS = 10.0
_OTHER_CPU_NOISY = 25.0


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


@dataclass
class _Watch:
    """The processes whose CPU and memory a phase reports."""

    server: list[psutil.Process]
    redis: list[psutil.Process]
    workers: list[psutil.Process]
    publisher: list[psutil.Process]

    def all(self) -> list[psutil.Process]:
        return [*self.server, *self.redis, *self.workers, *self.publisher]


@dataclass
class _RssTrace:
    samples: list[tuple[float, int]] = field(default_factory=list)

    def add(self, rss: int) -> None:
        self.samples.append((time.monotonic(), rss))

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {}
        values = [r for _, r in self.samples]
        t0, r0 = self.samples[0]
        t1, r1 = self.samples[-1]
        mid = next((s for s in self.samples if s[0] >= t0 + (t1 - t0) / 2), self.samples[-1])
        second_half = max(1e-9, t1 - mid[0])
        return {
            "rss_start_mib": round(r0 / _MiB, 1),
            "rss_end_mib": round(r1 / _MiB, 1),
            "rss_max_mib": round(max(values) / _MiB, 1),
            "rss_growth_second_half_mib_per_s": round((r1 - mid[1]) / _MiB / second_half, 2),
        }


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
    a per-connection cost. Failure here is not fatal (the clients will report it).
    """
    from websockets.sync.client import connect

    with contextlib.suppress(Exception), connect(url, open_timeout=10, close_timeout=5):
        pass


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
        self.watch: _Watch | None = None
        self.baseline_rss: int | None = None
        self.baseline_redis_rss: int | None = None
        self.opened = 0
        self.failed: set[int] = set()
        self.cold = 0
        self.memory_stops = 0
        self.connect_errors: list[str] = []

    # --- set-up -----------------------------------------------------------------

    def _url(self, tickers: list[int] | None) -> str:
        if tickers is None:
            return self.cfg.ws_url
        sep = "&" if "?" in self.cfg.ws_url else "?"
        names = ",".join(self.tickers[i] for i in tickers)
        return f"{self.cfg.ws_url}{sep}tickers={urlquote(names, safe=',')}"

    def _server_procs(self) -> list[psutil.Process]:
        return process_tree(self.server_pids)

    def open(self) -> dict[str, Any]:
        """Start the publisher and client processes and open every connection."""
        cfg = self.cfg
        parent, child = _CTX.Pipe()
        pub = _CTX.Process(
            target=publisher_main,
            args=(child, cfg.redis_url, cfg.channel, cfg.ticker_count, self.stop),
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
                target=worker_main, args=(spec, child), name=f"bench-clients-{w}", daemon=True
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
        self.watch = _Watch(
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

    def _local(self, clients: set[int]) -> list[list[int]]:
        n = self._n_workers()
        out: list[list[int]] = [[] for _ in range(n)]
        for c in sorted(clients):
            out[c % n].append(c // n)
        return out

    def _stats(self) -> dict[str, int]:
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

    def warm_up(self, timeout: float = 60.0) -> dict[str, Any]:
        """
        Publish warm-up quotes until every open connection has received one.

        One quote per ticker of a small cover set (each client's filter meets it),
        repeated every 2 s until all are warm or the deadline passes, then wait
        until the warm-up traffic has drained.
        """
        assert self.publisher_conn is not None
        cover: list[int] = []
        chosen: set[int] = set()
        for c, f in enumerate(self.filters):
            if c in self.failed:
                continue
            wanted = range(self.cfg.ticker_count) if f is None else f
            if not chosen.intersection(wanted):
                t = wanted[0]
                chosen.add(t)
                cover.append(t)
        started = time.monotonic()
        deadline = started + timeout
        rounds = 0
        warm = 0
        while time.monotonic() < deadline:
            _call(self.publisher_conn, ("warmup", cover), 30, "publisher")
            rounds += 1
            round_end = min(deadline, time.monotonic() + 2.0)
            while time.monotonic() < round_end:
                warm = self._stats()["warm"]
                if warm >= self.opened:
                    break
                time.sleep(0.1)
            if warm >= self.opened:
                break
        self._wait_quiet("stale", timeout=max(5.0, deadline - time.monotonic()))
        self.cold = self.opened - warm
        return {
            "warm": warm,
            "of": self.opened,
            "rounds": rounds,
            "seconds": round(time.monotonic() - started, 2),
        }

    def _wait_quiet(
        self, key: str, timeout: float, target: int | None = None
    ) -> tuple[bool, float]:
        """
        Wait until counter ``key`` stops moving (or reaches ``target``).

        Returns:
            Whether it did before the timeout, and the wall time it last moved.
        """
        deadline = time.monotonic() + timeout
        last = -1
        last_change = time.monotonic()
        last_change_wall = time.time()
        while time.monotonic() < deadline:
            value = self._stats()[key]
            if value != last:
                last, last_change, last_change_wall = value, time.monotonic(), time.time()
            if target is not None and value >= target:
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
            zip(self.worker_conns, self._local(designated), strict=True)
        ):
            _call(conn, ("phase", start, local, stall), 30, f"client process {w}")
        order = list(range(self.cfg.ticker_count))
        self.publisher_conn.send(("run", start, rate, duration, order))
        server_procs = self._server_procs()
        watch = _Watch(server_procs, self.watch.redis, self.watch.workers, self.watch.publisher)
        rss = _RssTrace()
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
        drained, _ = self._wait_quiet("received", self.cfg.drain_timeout, target=expected)
        if memory_stop:
            self.memory_stops += 1
        rss.add(rss_bytes(server_procs))

        hist = LatencyHistogram()
        counts: dict[str, Any] = {}
        close_codes: dict[int, int] = {}
        last_receipt = 0.0
        for w, conn in enumerate(self.worker_conns):
            rep = _call(conn, ("report",), 60, f"client process {w}")
            hist.merge_sparse(rep.pop("fine"), rep.pop("coarse"))
            last_receipt = max(last_receipt, rep.pop("last_receipt"))
            for code, n in rep.pop("close_codes").items():
                close_codes[code] = close_codes.get(code, 0) + n
            for key, v in rep.items():
                counts[key] = counts.get(key, 0) + v
        counts["close_codes"] = close_codes
        # Deliveries per second over the time they took: the schedule, or longer when
        # the server was still catching up after publishing ended.
        active = max(pub.published / rate, last_receipt - start)
        return self._result(
            label, rate, duration, pub, expected, counts, hist, drained, cpu0, cpu1,
            machine0, machine1, watch, rss, len(designated), stall, active,
        )  # fmt: skip

    def _result(
        self,
        label: str,
        rate: float,
        duration: float,
        pub: PhaseStats,
        expected: int,
        counts: dict[str, Any],
        hist: LatencyHistogram,
        drained: bool,
        cpu0: CpuSnapshot,
        cpu1: CpuSnapshot,
        machine0: Any,
        machine1: Any,
        watch: _Watch,
        rss: _RssTrace,
        designated: int,
        stall: bool,
        active: float,
    ) -> dict[str, Any]:
        received = counts["received"]
        # The schedule spans published / rate seconds (quote 0 at 0 s, the last one a
        # step before the end); a late publisher stretches it.
        wall = max(1e-9, pub.wall_seconds, pub.published / rate)
        pct = cpu1.percent_since(cpu0)
        server_pids = [p.pid for p in watch.server]
        server_cpu = sum(pct.get(pid, 0.0) for pid in server_pids)
        server_cpu_s = server_cpu / 100 * (cpu1.at - cpu0.at)
        worker_cpu = [round(pct.get(p.pid, 0.0), 1) for p in watch.workers]
        redis_cpu = sum(pct.get(p.pid, 0.0) for p in watch.redis)
        busy0 = sum(machine0) - machine0.idle - getattr(machine0, "iowait", 0.0)
        busy1 = sum(machine1) - machine1.idle - getattr(machine1, "iowait", 0.0)
        machine_pct = 100.0 * (busy1 - busy0) / max(1e-9, sum(machine1) - sum(machine0))
        cores = psutil.cpu_count() or 1
        watched = sum(pct.values())
        other_cpu = max(0.0, machine_pct * cores - watched)
        latencies = hist.percentiles(PERCENTILES)
        latency_ms = {
            k: (None if v is None else round(v * 1000, 3))
            for k, v in zip(_PCT_KEYS, latencies, strict=True)
        }
        rss_summary = rss.summary()
        rss_end = rss.samples[-1][1] if rss.samples else 0
        per_conn = None
        if self.baseline_rss is not None and self.opened:
            per_conn = round((rss_end - self.baseline_rss) / 1024 / self.opened, 1)

        warnings: list[str] = []
        if self.memory_stops:
            self.memory_stops = 0
            warnings.append(
                f"publishing stopped early: server + Redis RSS passed "
                f"{self.cfg.memory_limit / _MiB:.0f} MiB (--memory-limit-mib)"
            )
        elif pub.gave_up:
            warnings.append(
                f"publishing gave up after {pub.wall_seconds:.0f}s with {pub.published} of "
                f"{pub.target} quotes sent: Redis stopped keeping up (a subscription per "
                "connection makes Redis copy every quote to every connection) or the machine "
                "is saturated"
            )
        elif pub.lag_ms_p99 > _PUBLISHER_LAG_MS or pub.wall_seconds > duration * 1.05 + 0.05:
            warnings.append(
                f"publisher fell behind its schedule (lag p99 {pub.lag_ms_p99:.1f} ms, "
                f"max {pub.lag_ms_max:.1f} ms; {pub.published / wall:.0f}/s "
                f"of {rate:.0f}/s): latencies include that delay"
            )
        busy = [c for c in worker_cpu if c >= _CLIENT_CPU_SATURATED]
        if busy:
            warnings.append(
                f"client process CPU near saturation ({', '.join(f'{c:.0f}%' for c in busy)} "
                "of one core): the load generator may limit delivery and add latency"
            )
        if machine_pct >= _MACHINE_CPU_SATURATED:
            warnings.append(
                f"machine CPU saturated ({machine_pct:.0f}% of {cores} cores): "
                "server, Redis and load generator compete for the cores"
            )
        if other_cpu >= _OTHER_CPU_NOISY:
            warnings.append(
                f"processes outside the benchmark (or unattributed kernel work) used "
                f"{other_cpu:.0f}% of a core during the phase: figures are noisy"
            )
        if not drained:
            warnings.append(
                f"deliveries still arriving {self.cfg.drain_timeout:.0f}s after publishing "
                "ended: the rest count as lost"
            )
        closed = counts["disconnected"]
        if closed:
            codes = ", ".join(f"{c} x{n}" for c, n in sorted(counts["close_codes"].items()))
            warnings.append(
                f"{closed} measured connection(s) closed during the phase (close codes: "
                f"{codes}; 1006 = dropped without a close frame): their later quotes count "
                "as lost"
            )
        already_closed = self.opened - counts["open_at_start"]
        if already_closed > 0:
            warnings.append(
                f"{already_closed} connection(s) were already closed when the phase began: "
                "their quotes count as lost"
            )
        if self.cold:
            warnings.append(
                f"{self.cold} connection(s) received no warm-up quote: not subscribed, "
                "or the server does not pass quotes through"
            )
        if len(self.failed):
            warnings.append(f"{len(self.failed)} connection(s) failed to open (not counted)")
        if pub.errors:
            warnings.append(f"Redis answered {pub.errors} PUBLISH with an error")

        return {
            "label": label,
            "rate": rate,
            "duration_s": duration,
            "published": pub.published,
            "publish_target": pub.target,
            "publish_seconds": round(pub.wall_seconds, 3),
            "publish_rate": round(pub.published / wall, 1),
            "expected": expected,
            "received": received,
            "lost": max(0, expected - received),
            "extra": max(0, received - expected),
            "loss_pct": round(100.0 * max(0, expected - received) / expected, 4)
            if expected
            else 0.0,
            "delivered_per_s": round(received / max(wall, active), 1),
            "delivery_seconds": round(max(wall, active), 3),
            "latency_ms": latency_ms,
            "drained": drained,
            "stale": counts["stale"],
            "foreign": counts["foreign"],
            "malformed": counts["malformed"],
            "disconnected": counts["disconnected"],
            "close_codes": {str(c): n for c, n in sorted(counts["close_codes"].items())},
            "designated": {
                "clients": designated,
                "stalled": stall,
                "received": counts["designated_received"],
                "disconnected": counts["designated_disconnected"],
            },
            "server": {
                "pids": server_pids,
                "cpu_percent": round(server_cpu, 1),
                "cpu_us_per_delivery": round(server_cpu_s * 1e6 / received, 2)
                if received
                else None,
                **rss_summary,
                "rss_per_connection_kib": per_conn,
            },
            "redis": {"cpu_percent": round(redis_cpu, 1)} if watch.redis else None,
            "load_generator": {
                "client_processes": len(watch.workers),
                "client_cpu_percent": worker_cpu,
                "publisher_cpu_percent": round(100 * pub.cpu_seconds / wall, 1),
                "publisher_lag_ms": {
                    "p50": round(pub.lag_ms_p50, 3),
                    "p99": round(pub.lag_ms_p99, 3),
                    "max": round(pub.lag_ms_max, 3),
                },
                "redis_receivers": [pub.receivers_min, pub.receivers_max],
                "machine_cpu_percent": round(machine_pct, 1),
                "other_cpu_percent": round(other_cpu, 1),
                "saturated": bool(
                    warnings and any("publisher" in w or "client" in w for w in warnings)
                ),
            },
            "warnings": warnings,
        }

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
