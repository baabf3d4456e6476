"""
How many ``PUBLISH`` / ``SPUBLISH`` one redis-server core carries, with 0..M subscribers.

For each command and each subscriber count this starts a fresh private
``redis-server`` (free loopback port, no persistence), optionally a process holding
``M`` subscriber connections that read and discard everything (each subscribed to
every channel the publisher uses), and runs ``redis-benchmark`` (C, pipelined) with
one benchmark quote as the payload:

- ``PUBLISH quotes.realtime <quote>``: the contract's single channel;
- ``SPUBLISH quotes.realtime.{__rand_int__} <quote>`` with ``-r 16``: 16 shard
  channels, as the sharded upstream uses them.

It reports the rate redis-benchmark achieved and the CPU that redis-server used
for it (psutil), hence **messages per Redis CPU-second** (``requests / redis CPU
seconds``): the per-core capacity, independent of how much of a core the other
processes on a small machine left to Redis. Each subscriber costs Redis one more
send per message, which the 0/1/3-subscriber rows show.

    uv run python scripts/benchmark/redis_capacity.py [--requests 1000000] [--json]

Nothing here touches the shared Redis on 6379; everything is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import psutil
from feed import QuoteFactory, ticker_names
from servers import PrivateRedis

__all__ = ["main", "measure"]

_CTX = mp.get_context("spawn")
SHARDS = 16


def _channels(command: str) -> list[str]:
    if command == "PUBLISH":
        return ["quotes.realtime"]
    # redis-benchmark's -r 16 expands __rand_int__ to a 12-digit number 0..15
    return [f"quotes.realtime.{{{n:012d}}}" for n in range(SHARDS)]


def _subscriber_main(
    conn: Connection, port: int, count: int, command: str, stop: Any
) -> None:  # pragma: no cover - runs in a child process
    """Hold ``count`` subscriptions to every channel; read and discard until ``stop``."""
    verb = b"SUBSCRIBE" if command == "PUBLISH" else b"SSUBSCRIBE"
    channels = [c.encode() for c in _channels(command)]
    cmd = b"*%d\r\n$%d\r\n%s\r\n" % (len(channels) + 1, len(verb), verb)
    for c in channels:
        cmd += b"$%d\r\n%s\r\n" % (len(c), c)
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(cmd)
        seen = b""
        while seen.count(b"subscribe\r\n") < len(channels):
            seen += s.recv(1 << 16)
        s.setblocking(False)
        socks.append(s)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    conn.send("ready")
    received = 0
    while not stop.is_set():
        for key, _ in sel.select(0.1):
            try:
                data = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            received += len(data)
    conn.send(received)
    for s in socks:
        s.close()


def _rps(csv_text: str) -> float | None:
    for line in csv_text.splitlines()[1:]:
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2:
            try:
                return float(cells[1])
            except ValueError:
                continue
    return None


def measure(command: str, subscribers: int, requests: int, pipeline: int) -> dict[str, Any]:
    """One fresh Redis, ``subscribers`` readers, one redis-benchmark run of ``command``."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark is not on PATH (it comes with redis-server)")
    payload = QuoteFactory(ticker_names(1)).quote(0, 0, int(time.time() * 1e6)).decode()
    redis = PrivateRedis().start()
    stop = _CTX.Event()
    sub: Any = None
    parent: Connection | None = None
    try:
        if subscribers:
            parent, child = _CTX.Pipe()
            sub = _CTX.Process(
                target=_subscriber_main,
                args=(child, redis.port, subscribers, command, stop),
                daemon=True,
            )
            sub.start()
            if not parent.poll(30) or parent.recv() != "ready":
                raise RuntimeError("the subscriber process did not subscribe in time")
        argv = [binary, "-p", str(redis.port), "-c", "2", "-P", str(pipeline)]
        argv += ["-n", str(requests), "--csv"]
        if command == "PUBLISH":
            argv += ["PUBLISH", "quotes.realtime", payload]
        else:
            argv += ["-r", str(SHARDS), "SPUBLISH", "quotes.realtime.{__rand_int__}", payload]
        assert redis.pid is not None
        rproc = psutil.Process(redis.pid)
        sproc = psutil.Process(sub.pid) if sub is not None else None
        r0, s0 = rproc.cpu_times(), sproc.cpu_times() if sproc else None
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        wall = time.monotonic() - t0
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r1, s1 = rproc.cpu_times(), sproc.cpu_times() if sproc else None
        if done.returncode != 0:
            raise RuntimeError(f"redis-benchmark failed: {done.stderr[-500:]}")
        redis_cpu = (r1.user + r1.system) - (r0.user + r0.system)
        sub_cpu = (s1.user + s1.system - s0.user - s0.system) if s1 and s0 else 0.0
        bench_cpu = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
        received = None
        if parent is not None:
            stop.set()
            received = parent.recv() if parent.poll(10) else None
        return {
            "command": command,
            "subscribers": subscribers,
            "requests": requests,
            "pipeline": pipeline,
            "payload_bytes": len(payload),
            "seconds": round(wall, 3),
            "rate": round(requests / wall),
            "redis_benchmark_rps": _rps(done.stdout),
            "redis_cpu_percent": round(100 * redis_cpu / wall, 1),
            "per_redis_cpu_second": round(requests / redis_cpu) if redis_cpu else None,
            "subscriber_cpu_percent": round(100 * sub_cpu / wall, 1),
            "subscriber_mib": round(received / 2**20, 1) if received is not None else None,
            "redis_benchmark_cpu_percent": round(100 * bench_cpu / wall, 1),
        }
    finally:
        stop.set()
        if sub is not None:
            sub.join(10)
            if sub.is_alive():
                sub.terminate()
                sub.join(5)
        redis.stop()


def main(argv: list[str] | None = None) -> int:
    """Measure every command x subscriber count and print a table (or JSON)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1_000_000, help="messages per measurement")
    p.add_argument("--pipeline", type=int, default=32, help="redis-benchmark -P (32)")
    p.add_argument("--subscribers", default="0,1,3", help="subscriber counts (0,1,3)")
    p.add_argument("--commands", default="PUBLISH,SPUBLISH", help="PUBLISH,SPUBLISH")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = p.parse_args(argv)
    rows = []
    for command in [c.strip().upper() for c in args.commands.split(",") if c.strip()]:
        if command not in {"PUBLISH", "SPUBLISH"}:
            raise SystemExit(f"unknown command {command!r}")
        for n in [int(x) for x in args.subscribers.split(",") if x.strip()]:
            row = measure(command, n, args.requests, args.pipeline)
            rows.append(row)
            if not args.json:
                print(
                    f"{command:8} subscribers {n}: {row['rate']:>9,}/s, redis-server "
                    f"{row['redis_cpu_percent']:5.1f}% of a core -> "
                    f"{row['per_redis_cpu_second']:,} per Redis CPU-second "
                    f"(redis-benchmark {row['redis_benchmark_cpu_percent']:.0f}%, "
                    f"subscribers {row['subscriber_cpu_percent']:.0f}%)",
                    flush=True,
                )
    if args.json:
        json.dump({"machine_cpus": psutil.cpu_count(), "rows": rows}, sys.stdout, indent=2)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
