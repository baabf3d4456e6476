"""
The result of one measured phase: figures, resource use and honest warnings.

The rig gathers raw material (publisher stats, merged client counters and
histogram, CPU snapshots, RSS samples); :func:`build_phase_result` turns it into
the report's phase dict and says, in plain words, when a figure should not be
trusted as the server's: the publisher fell behind, a client process or the
whole machine was saturated, client event loops woke up late, other processes
were busy, connections closed, deliveries were still arriving.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psutil
from latency_histogram import LatencyHistogram
from publisher import PhaseStats
from servers import CpuSnapshot

__all__ = ["PhaseInputs", "RssTrace", "Watch", "build_phase_result"]

_MiB = 1024 * 1024
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 100.0)
_PCT_KEYS = ("p50", "p90", "p99", "p99_9", "max")

CLIENT_CPU_SATURATED = 85.0
"""% of one core at which a client process counts as saturated."""
MACHINE_CPU_SATURATED = 95.0
"""% of all cores at which the machine counts as saturated."""
PUBLISHER_LAG_MS = 10.0
"""Publisher lag p99 beyond which it counts as behind its schedule."""
OTHER_CPU_NOISY = 25.0
"""% of one core used outside the benchmark's processes that makes a phase noisy."""
LOOP_LAG_MS = 5.0
"""Client event-loop lag p99 worth a warning (when also >= 25% of the latency p99)."""


@dataclass
class Watch:
    """The processes whose CPU and memory a phase reports."""

    server: list[psutil.Process]
    redis: list[psutil.Process]
    workers: list[psutil.Process]
    publisher: list[psutil.Process]

    def all(self) -> list[psutil.Process]:
        """Every watched process."""
        return [*self.server, *self.redis, *self.workers, *self.publisher]


@dataclass
class RssTrace:
    """Server RSS samples over a phase."""

    samples: list[tuple[float, int]] = field(default_factory=list)

    def add(self, rss: int) -> None:
        """Record one sample, now."""
        self.samples.append((time.monotonic(), rss))

    def summary(self) -> dict[str, Any]:
        """Start, end and peak RSS, and the growth rate over the second half."""
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


@dataclass
class PhaseInputs:
    """Everything a phase result is computed from."""

    label: str
    rate: float
    duration: float
    pub: PhaseStats
    expected: int
    counts: dict[str, Any]
    """Merged client counters, plus ``close_codes`` and sorted ``loop_lags``."""
    hist: LatencyHistogram
    drained: bool
    cpu0: CpuSnapshot
    cpu1: CpuSnapshot
    machine0: Any
    machine1: Any
    watch: Watch
    rss: RssTrace
    designated: int
    stall: bool
    active: float
    """Seconds from the phase start to the last measured receipt (or the schedule)."""
    opened: int
    failed: int
    cold: int
    baseline_rss: int | None
    memory_stopped: bool
    memory_limit: int
    drain_timeout: float


def _quantiles(sorted_values: list[float]) -> dict[str, float | None]:
    def at(q: float) -> float | None:
        if not sorted_values:
            return None
        return round(
            1000 * sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))], 2
        )

    return {"p50": at(0.5), "p99": at(0.99), "max": at(1.0)}


def _machine_percent(m0: Any, m1: Any) -> float:
    busy0 = sum(m0) - m0.idle - getattr(m0, "iowait", 0.0)
    busy1 = sum(m1) - m1.idle - getattr(m1, "iowait", 0.0)
    return 100.0 * (busy1 - busy0) / max(1e-9, sum(m1) - sum(m0))


def build_phase_result(x: PhaseInputs) -> dict[str, Any]:
    """The phase's entry in the report (see the module docstring)."""
    pub, counts = x.pub, x.counts
    received = counts["received"]
    # The schedule spans published / rate seconds; a late publisher stretches it.
    wall = max(1e-9, pub.wall_seconds, pub.published / x.rate)
    span = max(wall, x.active)
    pct = x.cpu1.percent_since(x.cpu0)
    server_pids = [p.pid for p in x.watch.server]
    server_cpu = sum(pct.get(pid, 0.0) for pid in server_pids)
    server_cpu_s = server_cpu / 100 * (x.cpu1.at - x.cpu0.at)
    worker_cpu = [round(pct.get(p.pid, 0.0), 1) for p in x.watch.workers]
    redis_cpu = sum(pct.get(p.pid, 0.0) for p in x.watch.redis)
    machine_pct = _machine_percent(x.machine0, x.machine1)
    cores = psutil.cpu_count() or 1
    other_cpu = max(0.0, machine_pct * cores - sum(pct.values()))
    latency_ms = {
        k: (None if v is None else round(v * 1000, 3))
        for k, v in zip(_PCT_KEYS, x.hist.percentiles(PERCENTILES), strict=True)
    }
    loop_lag = _quantiles(counts["loop_lags"])
    rss_end = x.rss.samples[-1][1] if x.rss.samples else 0
    per_conn = None
    if x.baseline_rss is not None and x.opened:
        per_conn = round((rss_end - x.baseline_rss) / 1024 / x.opened, 1)

    warnings: list[str] = []
    saturated = False
    if x.memory_stopped:
        warnings.append(
            f"publishing stopped early: server + Redis RSS passed "
            f"{x.memory_limit / _MiB:.0f} MiB (--memory-limit-mib)"
        )
    elif pub.gave_up:
        warnings.append(
            f"publishing gave up after {pub.wall_seconds:.0f}s with {pub.published} of "
            f"{pub.target} quotes sent: Redis stopped keeping up (a subscription per "
            "connection makes Redis copy every quote to every connection) or the machine "
            "is saturated"
        )
    elif pub.lag_ms_p99 > PUBLISHER_LAG_MS or pub.wall_seconds > x.duration * 1.05 + 0.05:
        saturated = True
        warnings.append(
            f"publisher fell behind its schedule (lag p99 {pub.lag_ms_p99:.1f} ms, "
            f"max {pub.lag_ms_max:.1f} ms; {pub.published / wall:.0f}/s "
            f"of {x.rate:.0f}/s): latencies include that delay"
        )
    p99, lag_p99 = latency_ms["p99"], loop_lag["p99"]
    if lag_p99 is not None and p99 is not None and lag_p99 >= max(LOOP_LAG_MS, 0.25 * p99):
        saturated = True
        warnings.append(
            f"client event loops woke up to {lag_p99:.1f} ms late (p99): the load "
            "generator adds about that much to the measured latencies"
        )
    busy = [c for c in worker_cpu if c >= CLIENT_CPU_SATURATED]
    if busy:
        saturated = True
        warnings.append(
            f"client process CPU near saturation ({', '.join(f'{c:.0f}%' for c in busy)} "
            "of one core): the load generator may limit delivery and add latency"
        )
    if machine_pct >= MACHINE_CPU_SATURATED:
        warnings.append(
            f"machine CPU saturated ({machine_pct:.0f}% of {cores} cores): "
            "server, Redis and load generator compete for the cores"
        )
    if other_cpu >= OTHER_CPU_NOISY:
        warnings.append(
            f"processes outside the benchmark (or unattributed kernel work) used "
            f"{other_cpu:.0f}% of a core during the phase: figures are noisy"
        )
    if not x.drained:
        warnings.append(
            f"deliveries still arriving {x.drain_timeout:.0f}s after publishing "
            "ended: the rest count as lost"
        )
    if counts["disconnected"]:
        codes = ", ".join(f"{c} x{n}" for c, n in sorted(counts["close_codes"].items()))
        warnings.append(
            f"{counts['disconnected']} measured connection(s) closed during the phase (close "
            f"codes: {codes}; 1006 = dropped without a close frame): their later quotes "
            "count as lost"
        )
    already_closed = x.opened - counts["open_at_start"]
    if already_closed > 0:
        warnings.append(
            f"{already_closed} connection(s) were already closed when the phase began: "
            "their quotes count as lost"
        )
    if x.cold:
        warnings.append(
            f"{x.cold} connection(s) received no warm-up quote: not subscribed, "
            "or the server does not pass quotes through"
        )
    if x.failed:
        warnings.append(f"{x.failed} connection(s) failed to open (not counted)")
    if pub.errors:
        warnings.append(f"Redis answered {pub.errors} PUBLISH with an error")

    lost = max(0, x.expected - received)
    return {
        "label": x.label,
        "rate": x.rate,
        "duration_s": x.duration,
        "published": pub.published,
        "publish_target": pub.target,
        "publish_seconds": round(pub.wall_seconds, 3),
        "publish_rate": round(pub.published / wall, 1),
        "expected": x.expected,
        "received": received,
        "lost": lost,
        "extra": max(0, received - x.expected),
        "loss_pct": round(100.0 * lost / x.expected, 4) if x.expected else 0.0,
        "delivered_per_s": round(received / span, 1),
        "delivery_seconds": round(span, 3),
        "latency_ms": latency_ms,
        "drained": x.drained,
        "stale": counts["stale"],
        "foreign": counts["foreign"],
        "malformed": counts["malformed"],
        "disconnected": counts["disconnected"],
        "close_codes": {str(c): n for c, n in sorted(counts["close_codes"].items())},
        "designated": {
            "clients": x.designated,
            "stalled": x.stall,
            "received": counts["designated_received"],
            "disconnected": counts["designated_disconnected"],
        },
        "server": {
            "pids": server_pids,
            "cpu_percent": round(server_cpu, 1),
            "cpu_us_per_delivery": round(server_cpu_s * 1e6 / received, 2) if received else None,
            **x.rss.summary(),
            "rss_per_connection_kib": per_conn,
        },
        "redis": {
            "cpu_percent": round(redis_cpu, 1),
            "processes": [
                {"pid": p.pid, "cpu_percent": round(pct.get(p.pid, 0.0), 1)} for p in x.watch.redis
            ],
        }
        if x.watch.redis
        else None,
        "load_generator": {
            "client_processes": len(x.watch.workers),
            "client_cpu_percent": worker_cpu,
            "client_loop_lag_ms": loop_lag,
            "publisher_cpu_percent": round(100 * pub.cpu_seconds / wall, 1),
            "publisher_lag_ms": {
                "p50": round(pub.lag_ms_p50, 3),
                "p99": round(pub.lag_ms_p99, 3),
                "max": round(pub.lag_ms_max, 3),
            },
            "redis_receivers": [pub.receivers_min, pub.receivers_max],
            "publisher_links": pub.links,
            "machine_cpu_percent": round(machine_pct, 1),
            "other_cpu_percent": round(other_cpu, 1),
            "saturated": saturated,
        },
        "warnings": warnings,
    }
