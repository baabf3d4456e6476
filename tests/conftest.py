"""
Shared fixtures: private Redis instances and servers under test, as real processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.helpers.processes import RedisServer, ServerProcess, TestSetupError


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
