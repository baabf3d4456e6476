"""
The soak scenario: an hour of churn against one server, measured period by period.

One publishing phase runs for the whole ``duration`` at ``rate`` (each ticker's quotes
numbered 1, 2, 3 ... in ``volume``; see ``feed``), and the clients (``seq=1``) check
every ticker's sequence (see ``soak_clients``). Every ``period``:

- ``churn`` (10%) of the clients, in turn, close (1000) and reconnect ``down``
  seconds later: half of them resume (``since=<epoch>:<seq>`` of their last quote,
  so the replay must fill the gap exactly), the others start afresh;
- ``hostile`` (20) raw connections misbehave (see ``hostile``) for most of the
  period;
- at the period's end, once the churn and the hostile connections are done, the
  server's RSS and open file descriptors (psutil, on its PID), its asyncio tasks,
  hub subscriptions and open connections (``GET /ready``), its close codes and limit
  hits (``/metrics``, deltas), and the period's latency percentiles are recorded.

Pass (each check reported with its figures):

``lossless``
    No quote lost, repeated or reordered on a connection while it stayed open, no
    open connection missing quotes at the end, no connection closed by the server.
``resume_exact``
    Every resume answered ``recovered: true`` and its replay continued every
    ticker's sequence exactly (no gap, no repeat across the reconnect), every
    reconnection opened. (A resume here is always inside the server's window:
    ``down`` is seconds, the window two minutes; ``recovered: false`` is a failure.)
``stable``
    RSS, file descriptors, tasks and subscriptions at the end within ``tolerance``
    (5%) of their level after the first twelfth of the run (5 minutes of an hour).
"""

from __future__ import annotations

import json
import math
import resource
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import urlsplit

import psutil
from hostile import EXPECTED, OPEN_AT_DEADLINE, HostileTarget, HostileWave
from latency_histogram import LatencyHistogram
from loadgen import WorkerSpec
from rig import Rig, RigError, _call, _reply
from servers import CpuSnapshot, process_tree, rss_bytes
from soak_clients import SOAK_COUNTERS, soak_worker_main

__all__ = ["STABLE_KEYS", "SoakOptions", "SoakRig", "run_soak"]

Log = Callable[[str], None]
_MiB = 1024 * 1024
STABLE_KEYS = ("rss_mib", "fds", "tasks", "subscriptions")
"""Resources that must end within the tolerance of their baseline."""


@dataclass(frozen=True)
class SoakOptions:
    """The soak's knobs (the load's shape is the rig's)."""

    rate: float
    duration: float
    period: float = 60.0
    churn: float = 0.10
    resume_share: float = 0.5
    hostile: int = 20
    down: float = 2.0
    tolerance: float = 0.05
    baseline_share: float = 1 / 12

    @property
    def periods(self) -> int:
        """Number of periods (the last may be shorter)."""
        return max(1, math.ceil(self.duration / self.period - 1e-9))

    @property
    def baseline_period(self) -> int:
        """The period after which the baseline sample is taken (1-based)."""
        return min(self.periods, max(1, math.ceil(self.periods * self.baseline_share - 1e-9)))

    @property
    def hostile_lifetime(self) -> float:
        """Longest a hostile connection lives: it must end inside its period."""
        return max(1.0, 0.75 * self.period)


class SoakRig(Rig):
    """The load rig with the soak's clients (``seq=1``, sequence checks, churn)."""

    def worker_entry(self) -> Callable[[WorkerSpec, Connection], None]:
        return soak_worker_main

    def _url(self, tickers: list[int] | None) -> str:
        if tickers is None:
            raise RigError("the soak checks each client's tickers: give --tickers-per-client N")
        return super()._url(tickers) + "&seq=1"

    def call_all(self, cmd: tuple[Any, ...], timeout: float = 60) -> list[Any]:
        """Send one command to every client process; their answers."""
        return [
            _call(conn, cmd, timeout, f"client process {w}")
            for w, conn in enumerate(self.worker_conns)
        ]


def _http_json(ws_url: str, path: str) -> Any:
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{parts.netloc}{path}", timeout=5) as r:
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


_SERVER_COUNTERS = ("quotes_ws_disconnects_total{", "quotes_limit_hits_total{")


def _server_counters(ws_url: str) -> dict[str, float]:
    """Close codes and limit hits so far, from ``/metrics`` (empty when unreachable)."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    try:
        with urllib.request.urlopen(f"{scheme}://{parts.netloc}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(_SERVER_COUNTERS):
            name, _, value = line.rpartition(" ")
            label = name[name.index('"') + 1 : name.rindex('"')]
            kind = "close" if name.startswith("quotes_ws") else "limit"
            found[f"{kind} {label}"] = float(value)
    return found


def _sample(rig: SoakRig, procs: list[psutil.Process]) -> dict[str, Any]:
    """The server's resources now."""
    fds = 0
    for p in procs:
        try:
            fds += p.num_fds()
        except psutil.Error:
            continue
    ready = _http_json(rig.cfg.ws_url, "/ready") or {}
    return {
        "rss_mib": round(rss_bytes(procs) / _MiB, 1),
        "fds": fds,
        "tasks": ready.get("tasks"),
        "subscriptions": ready.get("subscriptions"),
        "connections": ready.get("connections"),
        "python_blocks": ready.get("python_blocks"),
        **_kernel_tcp(),
    }


def _kernel_tcp() -> dict[str, int]:
    """
    The machine's orphaned TCP sockets and TCP buffer memory (Linux ``sockstat``).

    A socket the server has closed with unsent data (a reader that never reads) leaves
    the process, and its RSS and FDs, but its buffers stay in the kernel until the
    peer reads them or the kernel gives up; machine-wide, so other work counts too.
    """
    try:
        with open("/proc/net/sockstat", encoding="ascii") as f:
            line = next(x for x in f if x.startswith("TCP:"))
    except (OSError, StopIteration):
        return {}
    fields = line.split()[1:]
    stats = dict(zip(fields[::2], map(int, fields[1::2]), strict=True))
    page_kib = resource.getpagesize() // 1024
    return {"tcp_orphans": stats.get("orphan", 0), "tcp_mem_kib": stats.get("mem", 0) * page_kib}


def _churn_sets(p: int, ok: list[int], opts: SoakOptions) -> tuple[set[int], set[int]]:
    """The clients period ``p`` reconnects afresh and with a resume (in turn, all of them)."""
    k = min(len(ok), round(len(ok) * opts.churn))
    if k == 0:
        return set(), set()
    first = (p * k) % len(ok)
    chosen = [ok[(first + j) % len(ok)] for j in range(k)]
    n_resume = round(k * opts.resume_share)
    return set(chosen[n_resume:]), set(chosen[:n_resume])


def _merge(reports: list[dict[str, Any]]) -> tuple[dict[str, Any], LatencyHistogram, list[float]]:
    hist = LatencyHistogram()
    counts: dict[str, Any] = {"close_codes": {}}
    lags: list[float] = []
    for rep in reports:
        hist.merge_sparse(rep.pop("fine"), rep.pop("coarse"))
        lags.extend(rep.pop("loop_lags"))
        rep.pop("last_receipt")
        for code, n in rep.pop("close_codes").items():
            counts["close_codes"][str(code)] = counts["close_codes"].get(str(code), 0) + n
        for key, v in rep.items():
            counts[key] = counts.get(key, 0) + v
    return counts, hist, sorted(lags)


def _hostile_misses(hostile: dict[str, dict[str, int]]) -> int:
    return sum(
        n
        for kind, outcomes in hostile.items()
        for outcome, n in outcomes.items()
        if outcome not in EXPECTED[kind]
    )


def _period(
    p: int,
    t_s: float,
    counts: dict[str, Any],
    hist: LatencyHistogram,
    lags: list[float],
    extra: dict[str, Any],
) -> dict[str, Any]:
    p50, p90, p99, p999, top = hist.percentiles((50.0, 90.0, 99.0, 99.9, 100.0))

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 3)

    return {
        "period": p + 1,
        "t_s": round(t_s, 1),
        "deliveries": counts["received"],
        "timed": hist.count,
        "latency_ms": {
            "p50": ms(p50),
            "p90": ms(p90),
            "p99": ms(p99),
            "p99_9": ms(p999),
            "max": ms(top),
        },
        "client_loop_lag_p99_ms": round(1000 * lags[int(0.99 * (len(lags) - 1))], 2)
        if lags
        else None,
        "checks": {k: counts[k] for k in SOAK_COUNTERS},
        "disconnected": counts["disconnected"],
        "client_close_codes": counts["close_codes"],
        "malformed": counts["malformed"],
        **extra,
    }


def _wait_churn(rig: SoakRig, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if rig.stats()["churning"] == 0:
            return True
        time.sleep(0.2)
    return False


def _checks(
    periods: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    final: dict[str, int],
    opts: SoakOptions,
) -> dict[str, Any]:
    total = {k: sum(p["checks"][k] for p in periods) for k in SOAK_COUNTERS}
    disconnected = sum(p["disconnected"] for p in periods)
    malformed = sum(p["malformed"] for p in periods)
    lossless = {
        "gaps": total["gaps"],
        "duplicates": total["duplicates"],
        "tail_missing": final["tail_missing"],
        "closed_by_server": disconnected,
        "unexpected_frames": total["unexpected_frames"],
        "malformed": malformed,
    }
    resume = {
        "resumes": total["resumes_sent"],
        "recovered_true": total["recovered_true"],
        "recovered_false": total["recovered_false"],
        "gaps_across": total["resume_gaps"],
        "duplicates_across": total["resume_duplicates"],
        "replayed": total["replayed"],
        "reopen_failed": total["reopen_failed"],
    }
    base, end = samples[opts.baseline_period], samples[-1]
    drift: dict[str, float | None] = {}
    for key in STABLE_KEYS:
        b, e = base.get(key), end.get(key)
        drift[key] = None if not b or e is None else round(100.0 * (e - b) / b, 2)
    stable_ok = all(d is not None and abs(d) <= 100 * opts.tolerance for d in drift.values())
    return {
        "lossless": {"passed": not any(lossless.values()), **lossless},
        "resume_exact": {
            "passed": resume["recovered_true"] == resume["resumes"]
            and not (
                resume["recovered_false"]
                or resume["gaps_across"]
                or resume["duplicates_across"]
                or resume["reopen_failed"]
            ),
            **resume,
        },
        "stable": {
            "passed": stable_ok,
            "baseline_after_period": opts.baseline_period,
            "tolerance_pct": 100 * opts.tolerance,
            "baseline": {k: base.get(k) for k in (*STABLE_KEYS, "connections", "python_blocks")},
            "end": {k: end.get(k) for k in (*STABLE_KEYS, "connections", "python_blocks")},
            "drift_pct": drift,
        },
    }


def run_soak(rig: SoakRig, opts: SoakOptions, log: Log) -> dict[str, Any]:
    """Run the soak on an opened and warmed-up rig; its result (see the module docstring)."""
    cfg = rig.cfg
    assert rig.publisher_conn is not None
    if not rig.server_pids:
        raise RigError("the soak reads the server's RSS and FDs: use --spawn or --server-pid")
    procs = process_tree(rig.server_pids)
    parts = urlsplit(cfg.ws_url)
    target = HostileTarget(parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/")
    ok = [c for c in range(cfg.clients) if c not in rig.failed]
    samples = [_sample(rig, procs)]
    start = round(time.time() + 1.0, 3)
    rig.call_all(("phase", start, [], False))
    rig.publisher_conn.send(
        ("run", start, opts.rate, opts.duration, list(range(cfg.ticker_count)), True)
    )
    counters0 = _server_counters(cfg.ws_url)
    cpu0 = CpuSnapshot.take(procs)
    periods: list[dict[str, Any]] = []
    warnings: list[str] = []
    pub: Any = None
    drained = True
    memory_stop = False
    log(
        f"soak: {opts.periods} period(s) of {opts.period:g}s at {opts.rate:g} quotes/s; "
        f"baseline after period {opts.baseline_period}"
    )
    for p in range(opts.periods):
        p_end = start + min((p + 1) * opts.period, opts.duration)
        wave = HostileWave(target, opts.hostile, opts.hostile_lifetime) if opts.hostile else None
        # A quarter into the period, so that even the first churn leaves connections
        # that have seen quotes (and have a position to resume from).
        time.sleep(max(0.0, start + (p + 0.25) * opts.period - time.time()))
        plain, resume = _churn_sets(p, ok, opts)
        for conn, pl, rs in zip(rig.worker_conns, rig.local(plain), rig.local(resume), strict=True):
            _call(conn, ("churn", pl, rs, opts.down), 30, "client process")
        while (left := p_end - time.time()) > 0:
            time.sleep(min(0.5, left))
            if (
                not memory_stop
                and rss_bytes(procs) + rss_bytes(rig.watch.redis if rig.watch else [])
                > cfg.memory_limit
            ):
                memory_stop = True
                rig.stop.set()
                warnings.append(
                    f"period {p + 1}: server + Redis RSS passed the memory limit: "
                    "publishing stopped"
                )
        if p == opts.periods - 1:
            pub = _reply(rig.publisher_conn, opts.duration + 120, "publisher")
            drained, _ = rig.wait_quiet("received", cfg.drain_timeout)
        if not _wait_churn(rig, cfg.connect_timeout + 30):
            warnings.append(f"period {p + 1}: reconnections still under way at its end")
        hostile = wave.result() if wave else {}
        counts, hist, lags = _merge(rig.call_all(("period",)))
        cpu1 = CpuSnapshot.take(procs)
        sample = _sample(rig, procs)
        samples.append(sample)
        counters1 = _server_counters(cfg.ws_url)
        server_events = {
            k: int(v - counters0.get(k, 0.0))
            for k, v in counters1.items()
            if v != counters0.get(k, 0.0)
        }
        counters0 = counters1
        pct = cpu1.percent_since(cpu0)
        cpu0 = cpu1
        period = _period(
            p,
            p_end - start,
            counts,
            hist,
            lags,
            {
                "churn": {"plain": len(plain), "resume": len(resume)},
                "hostile": hostile,
                "hostile_unanswered": _hostile_misses(hostile),
                "server": {**sample, "cpu_percent": round(sum(pct.values()), 1)},
                "server_events": server_events,
            },
        )
        periods.append(period)
        c = period["checks"]
        log(
            f"period {p + 1}/{opts.periods}: {period['deliveries']} deliveries, "
            f"p99 {period['latency_ms']['p99']} ms; RSS {sample['rss_mib']} MiB, "
            f"{sample['fds']} fds, {sample['tasks']} tasks, {sample['subscriptions']} subs, "
            f"{sample['connections']} conns; gaps {c['gaps']}+{c['resume_gaps']}, "
            f"resumed {c['recovered_true']}/{c['resumes_sent']}; hostile "
            + ", ".join(f"{k} {v}" for k, v in hostile.items())
        )
    rig.stop.clear()
    finals = rig.call_all(("final", pub.published if pub else 0, cfg.ticker_count))
    final = {k: sum(f[k] for f in finals) for k in ("open", "tail_missing", "unseen")}
    checks = _checks(periods, samples, final, opts)
    if not drained:
        warnings.append(
            f"deliveries still arriving {cfg.drain_timeout:.0f}s after publishing ended"
        )
    if opts.periods <= opts.baseline_period:
        warnings.append("the run has no period after its baseline: the stability check is empty")
    if final["unseen"]:
        warnings.append(
            f"{final['unseen']} ticker(s) of reconnected clients got no quote before the end"
        )
    missed = sum(p["hostile_unanswered"] for p in periods)
    if missed:
        outcomes = sorted({o for p in periods for k in p["hostile"].values() for o in k})
        warnings.append(
            f"{missed} hostile connection(s) did not get the documented answer "
            f"(outcomes seen: {outcomes})"
        )
    if any(o == OPEN_AT_DEADLINE for p in periods for k in p["hostile"].values() for o in k):
        warnings.append(
            "some hostile connections outlived their lifetime: the server's timeouts exceed it"
        )
    series = {
        "t_s": [0.0, *(p["t_s"] for p in periods)],
        **{k: [s.get(k) for s in samples] for k in (*STABLE_KEYS, "connections", "python_blocks")},
        "p99_ms": [None, *(p["latency_ms"]["p99"] for p in periods)],
    }
    deliveries = sum(p["deliveries"] for p in periods)
    return {
        "options": {
            "rate": opts.rate,
            "duration_s": opts.duration,
            "period_s": opts.period,
            "churn": opts.churn,
            "resume_share": opts.resume_share,
            "hostile_per_period": opts.hostile,
            "down_s": opts.down,
            "hostile_lifetime_s": opts.hostile_lifetime,
            "tolerance": opts.tolerance,
        },
        "published": pub.published if pub else 0,
        "publisher_lag_ms_p99": round(pub.lag_ms_p99, 3) if pub else None,
        "deliveries": deliveries,
        "delivered_per_s": round(deliveries / max(1e-9, opts.duration), 1),
        "final": final,
        "periods": periods,
        "samples": samples,
        "series": series,
        "checks": checks,
        "passed": all(c["passed"] for c in checks.values()),
        "warnings": warnings,
    }
