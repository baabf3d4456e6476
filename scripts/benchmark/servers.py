"""
Processes the benchmark starts and watches: a private Redis, the servers under test.

Everything listens on 127.0.0.1 on a free port, is waited for by polling with a
deadline, and is stopped by the PID we started (never by name). The shared Redis
on 6379 is never started, flushed or stopped here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = [
    "REFERENCE_SERVER",
    "ROOT",
    "CpuSnapshot",
    "PrivateRedis",
    "PrivateRedisCluster",
    "ServerProcess",
    "free_port",
    "listening_pids",
    "process_tree",
    "rss_bytes",
    "wait_until",
]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REFERENCE_SERVER = HERE / "reference_server.py"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``condition`` every 50 ms; raise ``TimeoutError`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout)


class PrivateRedis:
    """
    A ``redis-server`` of our own on a free loopback port, without persistence.

    Otherwise Redis's defaults, including the Pub/Sub output-buffer limits (a
    subscriber more than 32 MiB behind, or 8 MiB for a minute, is disconnected);
    the benchmark's memory watchdog (``--memory-limit-mib``) stops a phase before
    many slow subscribers add up to too much.
    """

    def __init__(self, maxclients: int = 12_000) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not on PATH (apt-get install redis-server); "
                "or pass --redis-url to publish through an existing Redis"
            )
        self.binary = binary
        self.port = free_port()
        self.maxclients = maxclients
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """PID of the running server."""
        return self.proc.pid if self.proc is not None else None

    @property
    def pids(self) -> list[int]:
        """``[pid]`` while it runs (the same shape as :class:`PrivateRedisCluster`)."""
        return [self.proc.pid] if self.proc is not None else []

    def _ping(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> PrivateRedis:
        """Start it and wait until it answers PING."""
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--daemonize", "no",
            "--loglevel", "warning",
            "--maxclients", str(self.maxclients),
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._ping, timeout=10, what=f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        """Stop it (by PID) and remove its directory."""
        if self.proc is not None:
            _stop(self.proc, signal.SIGTERM)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


def _redis_command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command to a local Redis and return its raw reply (a bulk or simple string)."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(out)
        data = b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                return data
            data += chunk
            if data[:1] in (b"+", b"-", b":") and data.endswith(b"\r\n"):
                return data
            if data[:1] == b"$":
                head, _, body = data.partition(b"\r\n")
                if int(head[1:]) < 0 or len(body) >= int(head[1:]) + 2:
                    return data


class PrivateRedisCluster:
    """
    A private Redis Cluster of ``masters`` ``redis-server`` processes (no replicas).

    Each node gets a free loopback port and bus port, its own directory and
    ``nodes.conf``; ``redis-cli --cluster create --cluster-yes`` joins them and the
    cluster counts as up once every node reports ``cluster_state:ok`` with all 16,384
    slots served and every node known. Nodes are stopped by the PIDs we started.
    """

    def __init__(self, masters: int = 3, maxclients: int = 12_000) -> None:
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError(
                "redis-server and redis-cli are not on PATH (apt-get install redis-server)"
            )
        self.binary, self.cli = binary, cli
        self.masters = masters
        self.maxclients = maxclients
        self.root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
        self.ports = [free_port() for _ in range(masters)]
        self.bus_ports = [free_port() for _ in range(masters)]
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the first node (any node will do for discovery)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def pids(self) -> list[int]:
        """PIDs of the running nodes."""
        return [p.pid for p in self.procs]

    def _node_argv(self, i: int) -> list[str]:
        d = self.root / f"node{i}"
        d.mkdir(exist_ok=True)
        return [
            self.binary,
            "--port", str(self.ports[i]),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(d / "nodes.conf"),
            "--cluster-port", str(self.bus_ports[i]),
            "--cluster-node-timeout", "5000",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(d),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--maxclients", str(self.maxclients),
        ]  # fmt: skip

    def _pings(self, i: int) -> bool:
        if self.procs[i].poll() is not None:
            raise RuntimeError(f"redis-server on port {self.ports[i]} exited")
        try:
            return _redis_command(self.ports[i], "PING").startswith(b"+PONG")
        except OSError:
            return False

    def _ok(self) -> bool:
        for port in self.ports:
            try:
                text = _redis_command(port, "CLUSTER", "INFO").decode(errors="replace")
            except OSError:
                return False
            fields = dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)
            if (
                fields.get("cluster_state") != "ok"
                or fields.get("cluster_slots_ok") != "16384"
                or fields.get("cluster_known_nodes") != str(self.masters)
            ):
                return False
        return True

    def start(self) -> PrivateRedisCluster:
        """Start the nodes, create the cluster and wait until every node says it is ok."""
        try:
            for i in range(self.masters):
                self.procs.append(
                    subprocess.Popen(
                        self._node_argv(i), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                    )
                )
            for i in range(self.masters):
                ping = functools.partial(self._pings, i)
                wait_until(ping, timeout=10, what=f"node on {self.ports[i]}")
            argv = [self.cli, "--cluster", "create"]
            argv += [f"127.0.0.1:{p}" for p in self.ports]
            argv += ["--cluster-replicas", "0", "--cluster-yes"]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}")
            wait_until(self._ok, timeout=30, what="cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every node (by PID) and remove their directories."""
        for proc in self.procs:
            _stop(proc, signal.SIGTERM)
        self.procs.clear()
        shutil.rmtree(self.root, ignore_errors=True)


class ServerProcess:
    """A server under test, started from ``argv`` (``{port}`` is substituted)."""

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None):
        self.name = name
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.env = {**os.environ, **(env or {})}
        fd, log = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the process we started."""
        return self.proc.pid if self.proc is not None else None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's output."""
        return self.log_path.read_text(errors="replace")[-chars:]

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} server exited with {self.proc.returncode}; its output:\n"
                + self.log_tail()
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Start it and wait until ``GET /health`` answers 200."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )
        wait_until(self._healthy, timeout=timeout, what=f"{self.name} server on port {self.port}")
        return self

    def stop(self) -> None:
        """SIGTERM by PID (SIGKILL if it lingers)."""
        if self.proc is not None:
            _stop(self.proc, signal.SIGTERM)
            self.proc = None


def listening_pids(port: int) -> list[int]:
    """PIDs listening on a TCP port, when the OS lets us see them (same user)."""
    pids: set[int] = set()
    with contextlib.suppress(psutil.AccessDenied):
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                pids.add(c.pid)
    return sorted(pids)


def process_tree(pids: Sequence[int]) -> list[psutil.Process]:
    """The given processes and all their descendants (e.g. uvicorn workers)."""
    procs: dict[int, psutil.Process] = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            procs[p.pid] = p
            for child in p.children(recursive=True):
                procs[child.pid] = child
    return list(procs.values())


def rss_bytes(procs: Sequence[psutil.Process]) -> int:
    """Sum of resident set sizes (processes that have exited count as zero)."""
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


@dataclass
class CpuSnapshot:
    """CPU seconds (user + system) per process at one instant."""

    at: float
    seconds: dict[int, float]

    @classmethod
    def take(cls, procs: Sequence[psutil.Process]) -> CpuSnapshot:
        """Read the CPU times of ``procs`` now."""
        seconds: dict[int, float] = {}
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                seconds[p.pid] = t.user + t.system
        return cls(time.monotonic(), seconds)

    def percent_since(self, earlier: CpuSnapshot) -> dict[int, float]:
        """Per-process CPU use between two snapshots, in % of one core."""
        wall = max(1e-9, self.at - earlier.at)
        return {
            pid: 100.0 * (s - earlier.seconds.get(pid, 0.0)) / wall
            for pid, s in self.seconds.items()
        }

    def seconds_since(self, earlier: CpuSnapshot) -> float:
        """Total CPU seconds used by all processes between two snapshots."""
        return sum(s - earlier.seconds.get(pid, 0.0) for pid, s in self.seconds.items())


def python_argv(*args: str) -> list[str]:
    """argv running this interpreter."""
    return [sys.executable, *args]
