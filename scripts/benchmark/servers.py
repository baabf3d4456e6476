"""
Processes the benchmark starts and watches: a private Redis, the servers under test.

Everything listens on 127.0.0.1 on a free port, is waited for by polling with a
deadline, and is stopped by the PID we started (never by name). The shared Redis
on 6379 is never started, flushed or stopped here.
"""

from __future__ import annotations

import contextlib
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
