"""
Shared fixtures: private Redis instances and servers under test, as real processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.helpers.processes import RedisServer, ServerProcess, TestSetupError
from tests.helpers.server import StartServer, server_factory


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, killed by PID afterwards."""
    try:
        server = RedisServer().start()
    except TestSetupError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_process() -> Iterator[Callable[..., ServerProcess]]:
    """Factory: start a server process (see ``ServerProcess``); all are stopped afterwards."""
    started: list[ServerProcess] = []

    def start(*args: object, **kwargs: object) -> ServerProcess:
        proc = ServerProcess(*args, **kwargs)  # type: ignore[arg-type]
        started.append(proc)
        try:
            return proc.start()
        except TestSetupError as exc:
            pytest.fail(str(exc), pytrace=False)

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def start_server() -> Iterator[StartServer]:
    """
    Factory: run ``python -m quotes_server`` on a free port with ``QUOTES_*`` settings.

    ``start_server(redis, slow_client_timeout=2)`` subscribes to a private Redis and
    waits until /ready; ``start_server(None)`` runs the demo feed. Every server is
    stopped by PID afterwards.
    """
    with server_factory() as start:
        yield start
