"""
Real processes for tests: a private ``redis-server`` and a server under test.

Both listen on a free loopback port, are waited for by polling a readiness
condition with a deadline (never a fixed sleep) and are stopped by the PID we
started. Nothing here touches the shared Redis on 6379.
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
from pathlib import Path

import anyio

from quotes_server.sources.resp import command_bytes

REDIS_INSTALL_HINT = (
    "redis-server is not on PATH; the tests start private Redis instances. "
    "Install it with `apt-get install redis-server` (Debian/Ubuntu) "
    "or `brew install redis` (macOS)."
)

ROOT = Path(__file__).resolve().parents[2]


class TestSetupError(RuntimeError):
    """A test dependency could not be started; the message says how to fix it."""

    __test__ = False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    condition: Callable[[], bool], *, timeout: float = 15.0, interval: float = 0.02, what: str = ""
) -> None:
    """Poll ``condition`` until it is true; raise ``TimeoutError`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


async def eventually(
    condition: Callable[[], bool],
    *,
    timeout: float = 15.0,
    interval: float = 0.005,
    what: str = "condition",
) -> None:
    """
    Await ``condition`` by polling it (it reads state nobody signals: another process,
    a socket's buffer), failing the test at the deadline with what it waited for.
    """
    try:
        with anyio.fail_after(timeout):
            while not condition():  # noqa: ASYNC110 (polling a condition nobody signals)
                await anyio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
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


class RedisServer:
    """A private ``redis-server`` on a free loopback port (no persistence)."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise TestSetupError(REDIS_INSTALL_HINT)
        self.binary = binary
        self.port = port or free_port()
        self._port_chosen = port is None
        self.dir = tempfile.mkdtemp(prefix="quotes-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def connect(self, timeout: float) -> socket.socket:
        """A connected socket to the server (a TLS server wraps it)."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def ping(self) -> bool:
        try:
            with self.connect(timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self) -> RedisServer:
        for attempt in range(3):
            try:
                return self._start()
            except TestSetupError:
                # a port we chose can be taken between choosing and binding it (a busy
                # machine's outgoing connections use the same range): choose again, once
                # only before the first start (a restart keeps its clients' URL)
                if attempt == 2 or not self._port_chosen:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def argv(self) -> list[str]:
        """The command line (a TLS server listens on its TLS port instead)."""
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip

    @property
    def stderr_path(self) -> Path:
        return Path(self.dir) / "stderr.log"

    def _start(self) -> RedisServer:
        with self.stderr_path.open("ab") as stderr:
            self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=stderr)
        wait_until(self._ready, timeout=10, what=f"redis-server on port {self.port}")
        self._port_chosen = False  # started: its URL is handed out from now on
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            said = self.stderr_path.read_text(errors="replace")[-2000:]
            raise TestSetupError(f"redis-server exited with {self.proc.returncode}: {said}")
        return self.ping()

    def stop(self) -> None:
        """Kill the server abruptly (SIGKILL by PID), as a crash would."""
        if self.proc is not None:
            _stop(self.proc, signal.SIGKILL)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def command(self, *args: bytes | str) -> bytes:
        """Send one command over a raw RESP connection; return the raw reply."""
        with self.connect(timeout=5) as s:
            s.sendall(resp(*args))
            return s.recv(65536)

    def publish_many(
        self, channel: str, messages: Sequence[bytes | str], command: str = "PUBLISH"
    ) -> None:
        """``PUBLISH`` (or ``command``) every message, pipelined over one connection, in order."""
        with self.connect(timeout=30) as s:
            for i in range(0, len(messages), 1000):
                chunk = messages[i : i + 1000]
                s.sendall(b"".join(resp(command, channel, m) for m in chunk))
                need, got = len(chunk), 0
                buf = b""
                while got < need:
                    data = s.recv(65536)
                    if not data:
                        raise RuntimeError("redis closed the connection during PUBLISH")
                    buf += data
                    got = buf.count(b"\r\n")
                if not all(line.startswith(b":") for line in buf.split(b"\r\n")[:-1]):
                    raise RuntimeError(f"PUBLISH failed: {buf[:200]!r}")

    def publish(self, channel: str, message: bytes | str) -> int:
        """``PUBLISH`` over a raw RESP connection; returns the receiver count."""
        cmd = resp("PUBLISH", channel, message)
        with self.connect(timeout=5) as s:
            s.sendall(cmd)
            reply = s.recv(64)
        if not reply.startswith(b":"):
            raise RuntimeError(f"PUBLISH failed: {reply!r}")
        return int(reply[1:].split(b"\r\n", 1)[0])


def resp(*args: bytes | str) -> bytes:
    """One RESP command, encoded by the server's own encoder (the tests' only one)."""
    return command_bytes([a.encode() if isinstance(a, str) else a for a in args])


class ServerProcess:
    """
    A server under test in its own process, on a free loopback port.

    ``argv`` is run with ``{port}`` replaced; readiness is ``GET health_path``
    answering 200.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        health_path: str = "/health",
        log_path: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.env = {**os.environ, **(env or {})}
        self.health_path = health_path
        self.log_path = log_path or Path(
            tempfile.mkstemp(prefix="quotes-server-", suffix=".log")[1]
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_until(self._ready, timeout=timeout, what=f"{self.argv[:4]} on port {self.port}")
        return self

    ready_on_any_status = False
    """True: ready once the health path answers at all (an error status included)."""

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise TestSetupError(
                f"server exited with {self.proc.returncode}; log:\n{self.log()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(self.http_url + self.health_path, timeout=1) as r:
                return bool(r.status == 200)
        except urllib.error.HTTPError:
            return self.ready_on_any_status
        except (OSError, urllib.error.URLError):
            return False

    def get(self, path: str) -> tuple[int, str]:
        """``GET path``; return the status and body (errors included)."""
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=5) as r:
                return int(r.status), r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Poll ``/ready`` until it answers 200 (the upstream is subscribed)."""
        wait_until(lambda: self.get("/ready")[0] == 200, timeout=timeout, what="/ready = 200")

    def metric(self, name: str, labels: str = "") -> float:
        """One sample of ``/metrics`` (``labels`` as written there, e.g. ``reason="json"``)."""
        key = f"{name}{{{labels}}}" if labels else name
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(key + " "):
                return float(line.split()[-1])
        raise KeyError(key)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Stop the process by PID; return its exit code."""
        if self.proc is None:
            return None
        _stop(self.proc, sig, timeout)
        code = self.proc.returncode
        self.proc = None
        return code


def python_module(module: str, *args: str) -> list[str]:
    """argv that runs ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]
