"""
``--history redis`` measured: the history's bytes in Redis, and the sequencer's takeover.

``memory``: a private ``redis-server`` gets ``--quotes`` demo-feed quotes appended
exactly as the sequencer appends them (its Lua script, batches of ``--batch``), and
the script reports the stream's ``MEMORY USAGE`` and Redis's ``used_memory`` growth,
per 100,000 quotes, and Redis's CPU per appended quote::

    .venv/bin/python scripts/history_redis.py memory --quotes 100000

``takeover``: two ``quotes-server --history redis`` on a private Redis, quotes
published every 2 ms, a client on the instance that does not sequence; the
sequencer is killed with SIGKILL and the script reports how long until the survivor
sequences, the longest silence the client saw, and whether the epoch went on
(``--runs`` times)::

    .venv/bin/python scripts/history_redis.py takeover --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from quotes_server.sources.demo import DemoFeed
from quotes_server.sources.sequencer import APPEND, START, history_keys

ROOT = Path(__file__).resolve().parents[1]
CHANNEL = "quotes.realtime"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def private_redis() -> Iterator[int]:
    port = free_port()
    folder = tempfile.mkdtemp(prefix="history-redis-")
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", folder, "--loglevel", "warning"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()  # by PID: ours
        proc.wait()


def cpu_seconds(client: Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def measure_memory(quotes: int, batch: int, size: int) -> None:
    keys = history_keys(CHANNEL)
    feed = DemoFeed(300, seed=1)
    messages = [feed.next_message() for _ in range(quotes)]
    with private_redis() as port:
        client = Redis(port=port)
        client.set(keys.lease, "token")
        client.eval(START, 3, keys.lease, keys.meta, keys.stream, "token", "e1", keys.channel)
        used0 = int(client.info("memory")["used_memory"])
        cpu0 = cpu_seconds(client)
        append = client.register_script(APPEND)
        for i in range(0, quotes, batch):
            args = ["token", size, keys.channel, 3_600_000, *messages[i : i + batch]]
            append(keys=[keys.lease, keys.meta, keys.stream], args=args)
        cpu = cpu_seconds(client) - cpu0
        used = int(client.info("memory")["used_memory"]) - used0
        stream = int(client.memory_usage(keys.stream, samples=0) or 0)
        length = int(client.xlen(keys.stream))
    raw = sum(len(m) for m in messages) / quotes
    print(
        f"history in Redis: {length:,} entries; stream MEMORY USAGE {stream / 2**20:.1f} MiB "
        f"({stream / length:.0f} bytes per quote, {stream * 100_000 / length / 2**20:.1f} MiB "
        f"per 100k); used_memory +{used / 2**20:.1f} MiB; the upstream messages average "
        f"{raw:.0f} bytes"
    )
    print(
        f"Redis CPU appending {quotes:,} quotes in batches of {batch}: {cpu:.2f} s "
        f"({cpu / quotes * 1e6:.1f} us per quote, PUBLISH to no subscriber included)"
    )


def ready(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
        body: dict[str, object] = json.loads(r.read())
        return body


def history(port: int) -> dict[str, object]:
    try:
        h = ready(port)["history"]
    except OSError:
        return {}
    assert isinstance(h, dict)
    return h


def wait(cond: object, timeout: float = 30.0) -> None:
    assert callable(cond)
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)


async def watch(url: str, gaps: list[float], stop: asyncio.Event) -> None:
    from websockets.asyncio.client import connect

    async with connect(url) as ws:
        last = time.monotonic()
        while not stop.is_set():
            try:
                await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            now = time.monotonic()
            gaps.append(now - last)
            last = now


def takeover_once(lease: float) -> dict[str, object]:
    with private_redis() as rport:
        env = {
            **os.environ,
            "QUOTES_REDIS_URL": f"redis://127.0.0.1:{rport}/0",
            "QUOTES_HISTORY": "redis",
            "QUOTES_HISTORY_LEASE": str(lease),
            "QUOTES_LOG_LEVEL": "warning",
        }
        servers: list[tuple[int, subprocess.Popen[bytes]]] = []
        try:
            for _ in range(2):
                port = free_port()
                argv = [sys.executable, "-m", "quotes_server", "--port", str(port)]
                proc = subprocess.Popen(
                    argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
                servers.append((port, proc))
            wait(lambda: sum(history(p).get("role") == "sequencing" for p, _ in servers) == 1)
            (_, victim), (sport, _) = sorted(
                servers, key=lambda s: history(s[0]).get("role") != "sequencing"
            )
            epoch = history(sport)["epoch"]
            stop_publishing = threading.Event()
            publisher = Redis(port=rport)
            feed = DemoFeed(30, seed=2)

            def publish() -> None:
                while not stop_publishing.is_set():
                    publisher.publish(CHANNEL, feed.next_message())
                    stop_publishing.wait(0.002)

            thread = threading.Thread(target=publish, daemon=True)
            thread.start()
            gaps: list[float] = []

            async def run() -> float:
                stop = asyncio.Event()
                task = asyncio.create_task(watch(f"ws://127.0.0.1:{sport}/ws/quotes", gaps, stop))
                await asyncio.sleep(3)
                killed = time.monotonic()
                os.kill(victim.pid, signal.SIGKILL)  # ours
                # polled from a thread: the client's loop keeps reading meanwhile
                while (await asyncio.to_thread(history, sport)).get("role") != "sequencing":  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
                took = time.monotonic() - killed
                await asyncio.sleep(3)
                stop.set()
                await task
                return took

            took = asyncio.run(run())
            stop_publishing.set()
            thread.join()
            after = history(sport)
            return {
                "takeover_s": round(took, 2),
                "longest_silence_s": round(max(gaps), 2),
                "epoch_continued": after["epoch"] == epoch,
                "new_epochs": after["new_epochs"],
            }
        finally:
            for _, proc in servers:
                if proc.poll() is None:
                    proc.terminate()  # ours
                    proc.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory", help="the history's bytes and Redis CPU per quote")
    m.add_argument("--quotes", type=int, default=100_000)
    m.add_argument("--batch", type=int, default=20, help="quotes per append (one Lua call)")
    m.add_argument("--size", type=int, default=1_000_000, help="MAXLEN of the stream")
    t = sub.add_parser("takeover", help="SIGKILL of the sequencer, measured")
    t.add_argument("--runs", type=int, default=3)
    t.add_argument("--lease", type=float, default=3.0)
    args = parser.parse_args()
    if args.what == "memory":
        measure_memory(args.quotes, args.batch, args.size)
        return
    rows = [takeover_once(args.lease) for _ in range(args.runs)]
    for row in rows:
        print(json.dumps(row))
    took = statistics.median(float(str(r["takeover_s"])) for r in rows)
    silence = statistics.median(float(str(r["longest_silence_s"])) for r in rows)
    continued = sum(bool(r["epoch_continued"]) for r in rows)
    print(
        f"takeover after SIGKILL with a {args.lease:g} s lease: median {took:.2f} s; longest "
        f"silence seen by a client, median {silence:.2f} s; epoch continued in "
        f"{continued}/{len(rows)}"
    )


if __name__ == "__main__":
    main()
