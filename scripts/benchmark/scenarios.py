"""
The named scenarios and how each one runs against one server.

===============  ====================================================================
``custom``       one measured phase with exactly the options given (the contract's
                 command line: defaults to the spec case's shape)
``spec``         1,000 clients x 10 of 300 tickers x 3,000 quotes/s (~100k deliveries/s)
``idle-memory``  5,000 idle connections; server RSS growth per connection, in KiB
``broad``        1,000 clients x all tickers, rate rising step by step; the highest
                 step with p99 <= 50 ms and no loss (deliveries/s), and the highest
                 lossless step with p99 <= 1 s (capacity); climbs until a step loses
                 quotes or its p99 passes 1 s
``ingest``       10 clients x all tickers x 10,000 quotes/s
``slow``         the spec load twice on the same connections: once with everybody
                 reading, once with 5% of clients stalled (not reading); the others'
                 p99 in both, and the server's RSS over the stalled phase
``cluster``      the ingest shape (10 clients x all tickers) on a rate ladder of
                 5,000, 7,500, 10,000, 15,000, 20,000 ... quotes/s (8 s steps),
                 stopping at the first step that loses a quote or has p99 > 50 ms,
                 in up to three set-ups run in turn
                 (``--spawn ours`` only): the contract's single channel on one Redis,
                 the sharded upstream on one non-cluster Redis, and the sharded
                 upstream on a private 3-master Redis Cluster
``soak``         1,000 clients x 10 of 300 tickers x 300 quotes/s for an hour, 10% of
                 the clients reconnecting every minute (half of them resuming with
                 ``since=``) and 20 hostile connections a minute; the server's RSS,
                 FDs, tasks, subscriptions, connections and the p99 of every minute,
                 and pass/fail on loss, exact resumes and stable resources (``soak``)
===============  ====================================================================
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rig import Rig, RigConfig
from soak import SoakOptions, SoakRig, run_soak

__all__ = ["MAX_RATE", "PRESETS", "Preset", "run_scenario"]

Log = Callable[[str], None]


@dataclass(frozen=True)
class Preset:
    """Defaults of one scenario (any command-line option overrides them)."""

    kind: str
    clients: int
    tickers_per_client: int | None
    rate: float
    duration: float
    description: str


PRESETS: dict[str, Preset] = {
    "custom": Preset("load", 1000, 10, 3000, 300, "one phase with the given options"),
    "spec": Preset(
        "load", 1000, 10, 3000, 30, "1,000 clients x 10 of 300 tickers x 3,000 quotes/s"
    ),
    "idle-memory": Preset("idle", 5000, 10, 0, 0, "5,000 idle connections: KiB per connection"),
    "broad": Preset(
        "broad", 1000, None, 1, 10, "1,000 clients x all tickers, rising rate until p99 > limit"
    ),
    "ingest": Preset("load", 10, None, 10_000, 30, "10 clients x all tickers x 10,000 quotes/s"),
    "slow": Preset("slow", 1000, 10, 3000, 30, "spec load, then again with 5% of clients stalled"),
    "cluster": Preset(
        "cluster",
        10,
        None,
        5_000,
        8,
        "ingest ladder (10 clients x all tickers, 5k, 7.5k, 10k, 15k ... quotes/s) "
        "on 1 vs 3 shard masters",
    ),
    "soak": Preset(
        "soak",
        1000,
        10,
        300,
        3600,
        "1,000 clients x 10 of 300 tickers x 300 quotes/s for an hour: 10% reconnecting "
        "(half resuming) and 20 hostile connections per period; resources and p99 per period",
    ),
}

BROAD_LADDER = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500)
"""Quotes/s steps of the broad scenario (x clients = deliveries/s); the first is ``--rate``."""


CLUSTER_LADDER = (
    5_000, 7_500, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000,
)  # fmt: skip
"""Quotes/s steps of the cluster scenario (x 10 clients = deliveries/s); the first is ``--rate``."""

MAX_RATE = {"broad": 1500.0, "cluster": 100_000.0}
"""Default highest step (``--max-rate``) of the ladder scenarios."""


@dataclass(frozen=True)
class ScenarioOptions:
    """What the scenario runner needs beyond the rig's shape."""

    kind: str
    rate: float
    duration: float
    p99_limit_ms: float = 50.0
    stop_p99_ms: float = 1000.0
    stalled_fraction: float = 0.05
    max_rate: float = 1500.0
    warmup_timeout: float = 60.0
    period: float = 60.0
    """soak: seconds per period (churn, hostile wave and one sample each)."""
    churn: float = 0.10
    """soak: share of the clients that reconnect each period."""
    hostile: int = 20
    """soak: hostile connections each period."""
    reconnect_delay: float = 2.0
    """soak: seconds a reconnecting client stays away."""


def _brief(phase: dict[str, Any]) -> str:
    lat = phase["latency_ms"]
    return (
        f"rate {phase['rate']:g}/s: {phase['received']}/{phase['expected']} delivered "
        f"(loss {phase['loss_pct']:.3f}%), {phase['delivered_per_s']:.0f}/s, "
        f"p50 {lat['p50']} ms p99 {lat['p99']} ms max {lat['max']} ms, "
        f"server CPU {phase['server']['cpu_percent']:.0f}%"
    )


def _log_phase(phase: dict[str, Any], log: Log, prefix: str = "") -> None:
    log(prefix + _brief(phase))
    for w in phase["warnings"]:
        log(f"  warning: {w}")


def _open(rig: Rig, opts: ScenarioOptions, log: Log) -> dict[str, Any]:
    log(f"opening {rig.cfg.clients} connections over {rig.cfg.client_processes} processes")
    connect = rig.open()
    log(f"opened {connect['opened']} (failed {connect['failed']}) in {connect['seconds']} s")
    for err in connect["errors"]:
        log(f"  connect error: {err}")
    warm = rig.warm_up(opts.warmup_timeout)
    log(
        f"warm-up: {warm['warm']}/{warm['of']} connections received a quote "
        f"({warm['rounds']} rounds)"
    )
    return {"connect": connect, "warmup": warm}


def _idle(rig: Rig, setup: dict[str, Any], log: Log) -> dict[str, Any]:
    """Wait for the server's RSS to settle, then divide its growth by the connections."""
    deadline = time.monotonic() + 15
    samples = [rig.sample_rss()]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        samples.append(rig.sample_rss())
        if len(samples) >= 3 and abs(samples[-1] - samples[-3]) <= 0.005 * samples[-1]:
            break
    base = rig.baseline_rss or 0
    after = samples[-1]
    opened = setup["connect"]["opened"]
    kib = round((after - base) / 1024 / opened, 1) if opened else None
    log(f"idle: server RSS {base / 2**20:.1f} -> {after / 2**20:.1f} MiB: {kib} KiB per connection")
    return {
        "connections": opened,
        "rss_before_mib": round(base / 2**20, 1),
        "rss_after_mib": round(after / 2**20, 1),
        "kib_per_connection": kib,
        "redis_kib_per_connection": rig.redis_kib_per_connection(),
    }


def _broad(rig: Rig, opts: ScenarioOptions, log: Log) -> dict[str, Any]:
    """
    Climb the rate ladder; report the best passing step and the lossless capacity.

    A step *passes* with zero loss and p99 within the limit. The climb goes on past
    the first failing step (to measure capacity: the highest step still lossless
    with p99 within ``stop_p99_ms``) until a step loses quotes or its p99 exceeds
    ``stop_p99_ms``; then one extra step between the best pass and the first
    failure narrows the edge.
    """
    ladder = [r for r in BROAD_LADDER if opts.rate <= r <= opts.max_rate]
    if not ladder or ladder[0] != opts.rate:
        ladder.insert(0, opts.rate)
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    first_fail: dict[str, Any] | None = None
    capacity: dict[str, Any] | None = None

    def step(rate: float) -> dict[str, Any]:
        phase = rig.measure(rate, opts.duration, label=f"broad@{rate:g}")
        p99 = phase["latency_ms"]["p99"]
        phase["passed"] = bool(phase["lost"] == 0 and p99 is not None and p99 <= opts.p99_limit_ms)
        steps.append(phase)
        _log_phase(phase, log, "PASS " if phase["passed"] else "FAIL ")
        return phase

    for rate in ladder:
        phase = step(rate)
        if phase["passed"] and first_fail is None:
            best = phase
        elif not phase["passed"] and first_fail is None:
            first_fail = phase
        p99 = phase["latency_ms"]["p99"]
        if phase["lost"] > 0 or p99 is None or p99 > opts.stop_p99_ms:
            break
        if phase["drained"]:
            capacity = phase
    if best is not None and first_fail is not None:
        mid = round(math.sqrt(best["rate"] * first_fail["rate"]), 1)
        if best["rate"] < mid < first_fail["rate"]:
            phase = step(mid)
            if phase["passed"]:
                best = phase

    def brief(phase: dict[str, Any] | None) -> dict[str, Any] | None:
        if phase is None:
            return None
        return {
            "rate": phase["rate"],
            "delivered_per_s": phase["delivered_per_s"],
            "p99_ms": phase["latency_ms"]["p99"],
            "loss_pct": phase["loss_pct"],
        }

    return {
        "steps": steps,
        "p99_limit_ms": opts.p99_limit_ms,
        "best_rate": best["rate"] if best else None,
        "best_delivered_per_s": best["delivered_per_s"] if best else 0.0,
        "best_p99_ms": best["latency_ms"]["p99"] if best else None,
        "first_failure": brief(first_fail),
        "lossless_capacity": brief(capacity),
        "curve": [
            [p["rate"], p["delivered_per_s"], p["latency_ms"]["p99"], p["loss_pct"]] for p in steps
        ],
    }


def _cluster(rig: Rig, opts: ScenarioOptions, log: Log) -> dict[str, Any]:
    """
    Climb the ingest ladder until a step fails; report the best passing step.

    A step *passes* with zero loss and p99 within the limit (50 ms). Unlike broad
    there is no climb past the first failure: the question is the highest rate this
    set-up ingests cleanly, and the failing step's CPU figures say what limited it.
    """
    ladder: list[float] = [r for r in CLUSTER_LADDER if opts.rate <= r <= opts.max_rate]
    if not ladder or ladder[0] != opts.rate:
        ladder.insert(0, opts.rate)
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    first_fail: dict[str, Any] | None = None
    for rate in ladder:
        phase = rig.measure(rate, opts.duration, label=f"cluster@{rate:g}")
        p99 = phase["latency_ms"]["p99"]
        phase["passed"] = bool(phase["lost"] == 0 and p99 is not None and p99 <= opts.p99_limit_ms)
        steps.append(phase)
        _log_phase(phase, log, "PASS " if phase["passed"] else "FAIL ")
        if not phase["passed"]:
            first_fail = phase
            break
        best = phase
    return {
        "steps": steps,
        "p99_limit_ms": opts.p99_limit_ms,
        "best_step": None if best is None else steps.index(best),
        "first_failure_step": None if first_fail is None else steps.index(first_fail),
        "curve": [
            [p["rate"], p["delivered_per_s"], p["latency_ms"]["p99"], p["loss_pct"]] for p in steps
        ],
    }


def _slow(rig: Rig, opts: ScenarioOptions, log: Log) -> dict[str, Any]:
    every = max(1, round(1 / opts.stalled_fraction)) if opts.stalled_fraction > 0 else 0
    designated = {c for c in range(rig.cfg.clients) if every and c % every == 0}
    log(f"slow: {len(designated)} designated clients; phase 1: everybody reads")
    base = rig.measure(opts.rate, opts.duration, designated=designated, label="all-reading")
    _log_phase(base, log)
    log(f"phase 2: the {len(designated)} designated clients stop reading")
    stalled = rig.measure(
        opts.rate, opts.duration, designated=designated, stall=True, label="with-stalled"
    )
    _log_phase(stalled, log)
    p99_a, p99_b = base["latency_ms"]["p99"], stalled["latency_ms"]["p99"]
    delta = None if p99_a is None or p99_b is None else round(p99_b - p99_a, 3)
    return {
        "stalled_clients": len(designated),
        "baseline": base,
        "stalled": stalled,
        "p99_delta_ms": delta,
    }


def run_scenario(
    cfg: RigConfig,
    opts: ScenarioOptions,
    *,
    server_pids: list[int],
    redis_pids: list[int],
    log: Log,
) -> dict[str, Any]:
    """
    Run one scenario once against one server and return its result.

    Args:
        cfg: the rig's shape (URL, Redis, clients, filters, processes).
        opts: the scenario kind and its parameters.
        server_pids: PIDs of the server under test (their children are included).
        redis_pids: PIDs of a private Redis to watch, if any.
        log: progress sink (one line per call).
    """
    rig_type = SoakRig if opts.kind == "soak" else Rig
    with rig_type(cfg, server_pids=server_pids, redis_pids=redis_pids) as rig:
        setup = _open(rig, opts, log)
        out: dict[str, Any] = {"kind": opts.kind, **setup}
        if opts.kind == "idle":
            out["idle"] = _idle(rig, setup, log)
        elif opts.kind == "broad":
            out["broad"] = _broad(rig, opts, log)
        elif opts.kind == "slow":
            out["slow"] = _slow(rig, opts, log)
        elif opts.kind == "cluster":
            out["cluster"] = _cluster(rig, opts, log)
        elif isinstance(rig, SoakRig):
            soak = SoakOptions(
                rate=opts.rate,
                duration=opts.duration,
                period=opts.period,
                churn=opts.churn,
                hostile=opts.hostile,
                down=opts.reconnect_delay,
            )
            out["soak"] = run_soak(rig, soak, log)
        else:
            phase = rig.measure(opts.rate, opts.duration, label="load")
            _log_phase(phase, log)
            out["phase"] = phase
        return out
