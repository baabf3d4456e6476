"""The test infrastructure itself: private Redis and server processes."""

from __future__ import annotations

import shutil
import signal
import urllib.request
from collections.abc import Callable

import pytest

from tests.helpers.processes import (
    REDIS_INSTALL_HINT,
    RedisServer,
    ServerProcess,
    TestSetupError,
    python_module,
)


def test_private_redis_is_not_the_shared_one(redis_server: RedisServer) -> None:
    """The fixture's Redis answers PING on its own port, never 6379."""
    assert redis_server.port != 6379
    assert redis_server.ping()
    assert redis_server.publish("quotes.realtime", b"{}") == 0


def test_private_redis_can_be_killed_and_restarted(redis_server: RedisServer) -> None:
    """stop() kills the instance by PID; restart() brings it back on the same port."""
    port = redis_server.port
    redis_server.stop()
    assert not redis_server.ping()
    redis_server.restart()
    assert redis_server.port == port
    assert redis_server.ping()


def test_missing_redis_server_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without redis-server on PATH the error says how to install it."""
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(TestSetupError) as info:
        RedisServer()
    assert str(info.value) == REDIS_INSTALL_HINT
    assert "apt-get install redis-server" in REDIS_INSTALL_HINT


def test_server_process_waits_for_readiness(
    server_process: Callable[..., ServerProcess],
) -> None:
    """A real uvicorn on a free port is ready (GET /health = 200) when start() returns."""
    argv = python_module(
        "uvicorn", "tests.helpers.tiny_app:app", "--port", "{port}", "--log-level", "warning"
    )
    server = server_process(argv)
    with urllib.request.urlopen(server.http_url + "/health", timeout=5) as resp:
        assert resp.status == 200
        assert resp.read() == b"ok"
    # uvicorn re-raises SIGTERM after a graceful shutdown, so -SIGTERM is a clean exit too
    assert server.stop() in (0, -signal.SIGTERM)
