"""Starting quotes-server under test, and building upstream quotes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from tests.helpers.processes import RedisServer, ServerProcess, TestSetupError, python_module

CHANNEL = "quotes.realtime"

StartServer = Callable[..., ServerProcess]


@contextmanager
def server_factory() -> Iterator[StartServer]:
    """A ``start_server`` factory; every server it started is stopped by PID on exit."""
    started: list[ServerProcess] = []

    def start(
        redis: RedisServer | None,
        *,
        port: int | None = None,
        wait_ready: bool = True,
        **settings: object,
    ) -> ServerProcess:
        env = {"QUOTES_LOG_LEVEL": "info"}
        if redis is not None:
            env["QUOTES_REDIS_URL"] = redis.url
            env.setdefault("QUOTES_GRACE_PERIOD", "2")
        elif "redis_url" not in settings:
            env["QUOTES_DEMO"] = "1"  # no upstream given: the demo feed, asked for
        env.update({f"QUOTES_{k.upper()}": str(v) for k, v in settings.items()})
        server = ServerProcess(
            python_module("quotes_server", "--port", "{port}"), port=port, env=env
        )
        started.append(server)
        try:
            server.start()
            if wait_ready:
                server.wait_ready()
        except (TestSetupError, TimeoutError) as exc:
            pytest.fail(f"{exc}\nserver log:\n{server.log()[-3000:]}", pytrace=False)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
