"""
End-to-end latency and throughput benchmark of a quote WebSocket server.

The benchmark publishes quotes into Redis itself (pipelined ``PUBLISH`` on a fixed
schedule, each quote stamped with its intended publish time), holds many WebSocket
clients open across several processes (picows), and reports what arrived: quotes
published, deliveries expected from the clients' ticker filters vs received (loss),
deliveries per second, latency percentiles from the intended publish time to
receipt, the server's CPU and RSS, and warnings when the load generator itself
saturates.

Against a running server (the contract's command line)::

    uv run python scripts/benchmark/ws_latency_benchmark.py \\
        --ws-url ws://localhost:8000/ws/quotes --ticker-count 300 --duration 300

It then publishes to ``--redis-url`` (default the local Redis on 6379; only
``PUBLISH`` is ever sent there). With ``--spawn ours|reference|both`` it starts a
private ``redis-server`` and the server(s) itself, one at a time on free ports,
runs the scenario against each and reports ours / reference ratios::

    uv run python scripts/benchmark/ws_latency_benchmark.py --spawn both --scenario spec --repeat 3

The ``cluster`` scenario (``--spawn ours`` only) runs the ingest ladder once per
set-up of ``--setups`` in turn, each with its own private Redis (or 3-master Redis
Cluster) and server; the report's columns are the set-ups::

    uv run python scripts/benchmark/ws_latency_benchmark.py --spawn ours --scenario cluster

Scenarios: see ``scenarios.py`` (``--scenario``). Output: a text summary, or the
full report as JSON with ``--json`` (and/or ``--output FILE``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from report import headline, machine_info, medians, ratios, render_markdown, render_text
from rig import RigConfig, RigError
from scenarios import MAX_RATE, PRESETS, ScenarioOptions, run_scenario
from servers import (
    REFERENCE_SERVER,
    PrivateRedis,
    PrivateRedisCluster,
    ServerProcess,
    listening_pids,
    python_argv,
)

DEFAULT_WS_URL = "ws://localhost:8000/ws/quotes"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
LOOPBACK = {"localhost", "127.0.0.1", "::1"}

SETUPS = {
    "single-channel": "one redis-server, the contract's channel (PUBLISH, --upstream single)",
    "1-master": "one non-cluster redis-server, SPUBLISH on the shard channels (--upstream sharded)",
    "3-masters": "a private 3-master Redis Cluster, SPUBLISH to each shard channel's "
    "master (--upstream sharded)",
}
"""Set-ups of the cluster scenario, in the order they run."""


def _setups(value: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in SETUPS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown set-up(s) {unknown}; choose from {', '.join(SETUPS)}"
        )
    return list(dict.fromkeys(names))


def _tickers_per_client(value: str) -> int | None:
    if value.lower() in {"all", "*"}:
        return None
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("must be >= 1 or 'all'")
    return n


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="ws_latency_benchmark.py",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Scenarios: "
        + "; ".join(f"{name}: {pre.description}" for name, pre in PRESETS.items()),
    )
    g = p.add_argument_group("target")
    g.add_argument(
        "--ws-url", default=DEFAULT_WS_URL, help="server WebSocket URL (path is kept with --spawn)"
    )
    g.add_argument(
        "--redis-url",
        default=None,
        help=f"Redis to PUBLISH to (default {DEFAULT_REDIS_URL}, or a private one with --spawn)",
    )
    g.add_argument(
        "--channel", default="quotes.realtime", help="Pub/Sub channel (default %(default)s)"
    )
    g.add_argument(
        "--spawn",
        choices=("ours", "reference", "both"),
        help="start a private redis-server and the server(s) under test, one at a time",
    )
    g.add_argument(
        "--transport",
        choices=("ws", "sse", "both"),
        default="ws",
        help="how the clients read our server: WebSocket (default), Server-Sent Events "
        "(/sse/quotes), or both in one run (targets ours and ours-sse, sse/ws ratios); "
        "sse and both need --spawn ours",
    )
    g.add_argument(
        "--server-args",
        default="",
        help="extra arguments for `python -m quotes_server` with --spawn (e.g. '--workers 2')",
    )
    g.add_argument(
        "--reference-fanout",
        choices=("subscription", "queue"),
        default="subscription",
        help="reference server shape: a Redis subscription per connection (default) or "
        "broadcaster-style queues",
    )
    g.add_argument(
        "--server-pid",
        type=int,
        action="append",
        help="PID of an external server to watch (default: whoever listens on the URL's port)",
    )
    g.add_argument("--allow-remote", action="store_true", help="allow non-loopback hosts")

    g = p.add_argument_group("load (defaults come from --scenario)")
    g.add_argument("--scenario", choices=tuple(PRESETS), default="custom")
    g.add_argument("--ticker-count", type=int, default=300, help="tickers published (default 300)")
    g.add_argument("--clients", type=int, help="WebSocket connections")
    g.add_argument(
        "--tickers-per-client",
        type=_tickers_per_client,
        default=argparse.SUPPRESS,
        help="tickers each client asks for (random, seeded), or 'all'",
    )
    g.add_argument("--rate", type=float, help="quotes/s published (broad: the first step)")
    g.add_argument("--duration", type=float, help="seconds of publishing per phase (or step)")
    g.add_argument(
        "--client-processes", type=int, default=2, help="load-generator processes (default 2)"
    )
    g.add_argument("--repeat", type=int, default=1, help="runs per server; medians are reported")
    g.add_argument("--p99-limit-ms", type=float, default=50.0, help="broad: pass limit (50)")
    g.add_argument(
        "--max-rate",
        type=float,
        default=None,
        help="broad / cluster: highest step (1500 / 100000)",
    )
    g.add_argument(
        "--stop-p99-ms",
        type=float,
        default=1000.0,
        help="broad: stop climbing when p99 exceeds this (1000), or at the first loss",
    )
    g.add_argument(
        "--stalled-fraction", type=float, default=0.05, help="slow: share stalled (0.05)"
    )
    g.add_argument(
        "--setups",
        type=_setups,
        default=list(SETUPS),
        help="cluster: comma-separated set-ups to run, from " + ", ".join(SETUPS) + " (all)",
    )
    g.add_argument(
        "--shards", type=int, default=16, help="cluster: shard channels of the sharded set-ups"
    )
    g.add_argument(
        "--period", type=float, default=60.0, help="soak: seconds per period (default 60)"
    )
    g.add_argument(
        "--churn",
        type=float,
        default=0.10,
        help="soak: share of the clients reconnecting each period, half with a resume (0.10)",
    )
    g.add_argument(
        "--hostile", type=int, default=20, help="soak: hostile connections per period (20)"
    )
    g.add_argument(
        "--reconnect-delay",
        type=float,
        default=2.0,
        help="soak: seconds a reconnecting client stays away (2)",
    )
    g.add_argument("--seed", type=int, default=1, help="seed for the clients' ticker choice")
    g.add_argument("--connect-timeout", type=float, default=120.0)
    g.add_argument("--drain-timeout", type=float, default=30.0)
    g.add_argument(
        "--memory-limit-mib",
        type=float,
        default=min(4096.0, psutil.virtual_memory().total / 2**20 * 0.25),
        help="stop a phase early when server + private Redis RSS exceed this (default: "
        "25%% of RAM, at most 4 GiB)",
    )

    g = p.add_argument_group("output")
    g.add_argument("--json", action="store_true", help="print the full report as JSON on stdout")
    g.add_argument("--output", help="also write the full JSON report to this file")
    g.add_argument(
        "--results",
        metavar="DIR",
        help="also write the report to DIR/<scenario>.json and its SVG plots into DIR "
        "(scripts/benchmark/plots.py; make bench uses bench-results/)",
    )
    g.add_argument("--markdown", action="store_true", help="print the medians as a Markdown table")
    g.add_argument(
        "--from-json",
        metavar="FILE",
        help="do not run anything: re-render a report written earlier with --output",
    )
    g.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _check_loopback(url: str, what: str, allow_remote: bool) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK and not allow_remote:
        raise SystemExit(f"{what} {url!r} is not on this machine; pass --allow-remote to allow it")


def _collect_warnings(obj: Any) -> list[str]:
    """Every phase's warnings, prefixed with the phase label when there is one."""
    found: list[str] = []
    if isinstance(obj, dict):
        prefix = f"{obj['label']}: " if obj.get("label") else ""
        for k, v in obj.items():
            if k == "warnings" and isinstance(v, list):
                found.extend(prefix + str(w) for w in v)
            else:
                found.extend(_collect_warnings(v))
    elif isinstance(obj, list):
        for v in obj:
            found.extend(_collect_warnings(v))
    return found


def _server_argv(
    target: str, redis_url: str, args: argparse.Namespace, shards: int | None = None
) -> list[str]:
    if target == "ours":
        upstream = ["--upstream", "sharded", "--shards", str(shards)] if shards else []
        return python_argv(
            "-m", "quotes_server",
            "--host", "127.0.0.1",
            "--port", "{port}",
            "--redis-url", redis_url,
            "--channel", args.channel,
            "--log-level", "warning",
            # every load-generator client comes from 127.0.0.1: no per-address cap
            "--max-connections-per-ip", "0",
            "--max-connections", "0",
            *upstream,
            *shlex.split(args.server_args),
        )  # fmt: skip
    return python_argv(
        str(REFERENCE_SERVER),
        "--port", "{port}",
        "--redis-url", redis_url,
        "--channel", args.channel,
        "--fanout", args.reference_fanout,
    )  # fmt: skip


def raise_open_files_limit() -> int:
    """
    Raise this process's soft open-files limit to the hard one (inherited by the
    server, Redis and client processes it starts), so that 10,000 connections fit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit status 0 when a report was produced."""
    args = build_parser().parse_args(argv)
    raise_open_files_limit()
    if args.from_json:
        with open(args.from_json, encoding="utf-8") as f:
            _emit(json.load(f), args)
        return 0
    preset = PRESETS[args.scenario]
    clients = args.clients if args.clients is not None else preset.clients
    tpc = getattr(args, "tickers_per_client", preset.tickers_per_client)
    rate = args.rate if args.rate is not None else preset.rate
    duration = args.duration if args.duration is not None else preset.duration
    if clients < 1 or args.ticker_count < 1 or args.repeat < 1 or args.client_processes < 1:
        raise SystemExit("--clients, --ticker-count, --repeat and --client-processes must be >= 1")
    if preset.kind != "idle" and (rate <= 0 or duration <= 0):
        raise SystemExit("--rate and --duration must be > 0")
    _check_loopback(args.ws_url, "--ws-url", args.allow_remote)
    if args.redis_url:
        _check_loopback(args.redis_url, "--redis-url", args.allow_remote)
    cluster = preset.kind == "cluster"
    if cluster and (args.spawn != "ours" or args.redis_url):
        raise SystemExit(
            "--scenario cluster starts its own Redis set-ups: use --spawn ours, without --redis-url"
        )
    if cluster and not 1 <= args.shards <= 1024:
        raise SystemExit("--shards must be between 1 and 1024")
    if preset.kind == "soak":
        if args.spawn in {"reference", "both"}:
            raise SystemExit("--scenario soak needs the stream protocol (seq, since): --spawn ours")
        if tpc is None:
            raise SystemExit("--scenario soak checks each client's tickers: --tickers-per-client N")
        if args.period <= 0 or not 0 <= args.churn <= 1 or args.hostile < 0:
            raise SystemExit("--period must be > 0, --churn in [0, 1], --hostile >= 0")

    if args.transport != "ws" and (args.spawn != "ours" or cluster or preset.kind == "soak"):
        raise SystemExit("--transport sse/both: --spawn ours, not with --scenario cluster or soak")

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    targets = ["ours", "reference"] if args.spawn == "both" else [args.spawn or "external"]
    if args.transport == "sse":
        targets = ["ours-sse" if t == "ours" else t for t in targets]
    elif args.transport == "both":
        targets = [x for t in targets for x in ((t, "ours-sse") if t == "ours" else (t,))]
    if cluster:
        targets = args.setups
    parts = urlsplit(args.ws_url)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    opts = ScenarioOptions(
        kind=preset.kind,
        rate=rate,
        duration=duration,
        p99_limit_ms=args.p99_limit_ms,
        stop_p99_ms=args.stop_p99_ms,
        stalled_fraction=args.stalled_fraction,
        max_rate=args.max_rate if args.max_rate is not None else MAX_RATE.get(preset.kind, 1500.0),
        period=args.period,
        churn=args.churn,
        hostile=args.hostile,
        reconnect_delay=args.reconnect_delay,
    )
    settings = {
        "clients": clients,
        "tickers_per_client": tpc if tpc is not None else "all",
        "ticker_count": args.ticker_count,
        "rate": rate,
        "duration_s": duration,
        "client_processes": args.client_processes,
        "channel": args.channel,
        "repeat": args.repeat,
        "seed": args.seed,
        "p99_limit_ms": args.p99_limit_ms,
        "stop_p99_ms": args.stop_p99_ms,
        "stalled_fraction": args.stalled_fraction,
        "server_args": args.server_args,
        "reference_fanout": args.reference_fanout,
        "transport": args.transport,
    }
    if preset.kind == "soak":
        settings |= {
            "period_s": args.period,
            "churn": args.churn,
            "hostile": args.hostile,
            "reconnect_delay_s": args.reconnect_delay,
        }
    if cluster:
        settings |= {
            "setups": {name: SETUPS[name] for name in targets},
            "shards": args.shards,
            "max_rate": opts.max_rate,
        }
    redis: PrivateRedis | None = None
    upstream: PrivateRedis | PrivateRedisCluster | None = None
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in targets}
    started = dt.datetime.now(dt.UTC)
    machine = machine_info()  # before the runs: the commit the servers start from
    try:
        if args.spawn and not args.redis_url and not cluster:
            redis = PrivateRedis().start()
            log(f"private redis-server on port {redis.port} (PID {redis.pid})")
        redis_url = redis.url if redis else (args.redis_url or DEFAULT_REDIS_URL)
        redis_pids = [redis.pid] if redis and redis.pid else []
        for i in range(args.repeat):
            for target in targets:
                server: ServerProcess | None = None
                shards: int | None = None
                if cluster:
                    # A fresh Redis (or cluster) per set-up and run: nothing carries over.
                    if target == "3-masters":
                        upstream = PrivateRedisCluster(masters=3).start()
                    else:
                        upstream = PrivateRedis().start()
                    shards = None if target == "single-channel" else args.shards
                    redis_url, redis_pids = upstream.url, upstream.pids
                    log(f"set-up {target}: redis-server PID(s) {redis_pids} ({SETUPS[target]})")
                if args.spawn:
                    kind = "ours" if cluster or target == "ours-sse" else target
                    argv = _server_argv(kind, redis_url, args, shards)
                    if target == "ours-sse":  # SSE streams are plain HTTP connections
                        argv += ["--http-max-connections", "0"]
                    server = ServerProcess(kind, argv).start()
                    ws_url = f"ws://127.0.0.1:{server.port}{path}"
                    if target == "ours-sse":
                        ws_url = f"http://127.0.0.1:{server.port}{path.replace('/ws', '/sse', 1)}"
                    pids = [server.pid] if server.pid else []
                    log(
                        f"run {i + 1}/{args.repeat}: {target} server on {ws_url} (PID {server.pid})"
                    )
                else:
                    ws_url = args.ws_url
                    port = parts.port or 80
                    pids = args.server_pid or listening_pids(port)
                    log(f"run {i + 1}/{args.repeat}: server at {ws_url} (PIDs {pids or 'unknown'})")
                cfg = RigConfig(
                    ws_url=ws_url,
                    redis_url=redis_url,
                    channel=args.channel,
                    ticker_count=args.ticker_count,
                    clients=clients,
                    tickers_per_client=tpc,
                    client_processes=args.client_processes,
                    seed=args.seed,
                    connect_timeout=args.connect_timeout,
                    drain_timeout=args.drain_timeout,
                    memory_limit=int(args.memory_limit_mib * 2**20),
                    shards=shards,
                )
                try:
                    result = run_scenario(
                        cfg,
                        opts,
                        server_pids=pids,
                        redis_pids=redis_pids,
                        log=log,
                    )
                finally:
                    if server is not None:
                        server.stop()
                    if upstream is not None:
                        upstream.stop()
                        upstream = None
                result["warnings"] = _collect_warnings(result)
                runs[target].append(result)
    except (RigError, RuntimeError, TimeoutError) as exc:
        print(f"ws_latency_benchmark: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ws_latency_benchmark: interrupted", file=sys.stderr)
        return 130
    finally:
        if redis is not None:
            redis.stop()
        if upstream is not None:
            upstream.stop()

    report: dict[str, Any] = {
        "benchmark": "ws_latency_benchmark",
        "scenario": args.scenario,
        "kind": preset.kind,
        "description": preset.description,
        "started_at": started.isoformat(timespec="seconds"),
        "command": [sys.argv[0], *(argv if argv is not None else sys.argv[1:])],
        "settings": settings,
        "machine": machine,
        "targets": {},
        "ratios": None,
    }
    for target, results in runs.items():
        heads = [headline(r) for r in results]
        report["targets"][target] = {"runs": results, "headlines": heads, "median": medians(heads)}
    if "ours" in runs and "reference" in runs:
        report["ratios"] = ratios(
            report["targets"]["ours"]["median"], report["targets"]["reference"]["median"]
        )
    if "ours" in runs and "ours-sse" in runs:
        report["sse_ratios"] = ratios(
            report["targets"]["ours-sse"]["median"], report["targets"]["ours"]["median"]
        )
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    if args.results:
        _write_results(report, Path(args.results), log)
    _emit(report, args)
    return 0


def _write_results(report: dict[str, Any], folder: Path, log: Callable[[str], None]) -> None:
    """The report as ``<scenario>.json`` in ``folder``, and its plots beside it."""
    from plots import plot_report

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report['scenario']}.json"
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log(f"report: {path}")
    for svg in plot_report(report, folder):
        log(f"plot: {svg}")


def _emit(report: dict[str, Any], args: argparse.Namespace) -> None:
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    elif args.markdown:
        print(render_markdown(report))
    else:
        print(render_text(report))


if __name__ == "__main__":
    sys.exit(main())
