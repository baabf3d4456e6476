"""
A pytest plugin with the ``scripted_server`` fixture.

Enable it in a test module or the root ``conftest.py``::

    pytest_plugins = ["quotes_client.testing.pytest_plugin"]

The server must listen in the event loop the test runs in, and each async test
runner owns its loop, so ``scripted_server`` is a plain fixture that hands the
test the server started by the runner's own kind of fixture:

- anyio's pytest plugin (``@pytest.mark.anyio``, asyncio backend): a plain async
  fixture, which anyio runs in the test's loop;
- pytest-asyncio, in strict mode (``@pytest.mark.asyncio``) or auto mode: a
  ``pytest_asyncio.fixture`` on the loop scope of the test (its marker's
  ``loop_scope``, else ``asyncio_default_test_loop_scope``). pytest-asyncio is
  optional: without it only anyio's fixture is defined.

A test that neither runner handles fails with a message that says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from quotes_client.testing.server import ScriptedServer

try:
    import pytest_asyncio
except ImportError:  # optional: anyio's plugin needs nothing from it
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = ["scripted_server"]

_ANYIO = "_quotes_scripted_server_anyio"
_ASYNCIO = "_quotes_scripted_server_asyncio_{}"
_LOOP_SCOPES = ("function", "class", "module", "package", "session")
_NO_RUNNER = (
    "scripted_server needs an async test on the asyncio event loop: mark the test "
    "@pytest.mark.anyio (anyio's pytest plugin) or @pytest.mark.asyncio (pytest-asyncio)"
)


async def _started() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer() as server:
        yield server


@pytest.fixture(name=_ANYIO)
async def _scripted_server_anyio(anyio_backend: Any) -> AsyncIterator[ScriptedServer]:
    async for server in _started():
        yield server


def _asyncio_fixture(loop_scope: str) -> Callable[[], AsyncIterator[ScriptedServer]]:
    async def fixture() -> AsyncIterator[ScriptedServer]:
        async for server in _started():
            yield server

    name = _ASYNCIO.format(loop_scope)
    fixture.__name__ = name
    return pytest_asyncio.fixture(fixture, name=name, loop_scope=loop_scope)  # type: ignore[call-overload,no-any-return]


if pytest_asyncio is not None:
    # one fixture per loop scope: the server must live in the loop the test runs in
    for _scope in _LOOP_SCOPES:
        globals()[_ASYNCIO.format(_scope)] = _asyncio_fixture(_scope)


def _asyncio_loop_scope(request: pytest.FixtureRequest) -> str | None:
    """The loop scope of a test that pytest-asyncio runs, or None if it does not run it."""
    if pytest_asyncio is None or not request.config.pluginmanager.has_plugin("asyncio"):
        return None
    if not pytest_asyncio.is_async_test(request.node):
        return None
    marker = request.node.get_closest_marker("asyncio")
    scope = marker.kwargs.get("loop_scope") if marker is not None else None
    return str(scope or request.config.getini("asyncio_default_test_loop_scope"))


@pytest.fixture
def scripted_server(request: pytest.FixtureRequest) -> ScriptedServer:
    """
    A started :class:`~quotes_client.testing.ScriptedServer` with default settings.

    Started in the test's event loop by whichever runner runs the test (anyio's
    plugin or pytest-asyncio), and closed after it.
    """
    loop_scope = _asyncio_loop_scope(request)
    if loop_scope is not None:
        server = request.getfixturevalue(_ASYNCIO.format(loop_scope))
    elif "anyio_backend" in request.fixturenames:
        # a name or a (name, options) pair; the server is asyncio-only
        backend = request.getfixturevalue("anyio_backend")
        name = backend if isinstance(backend, str) else backend[0]
        if name != "asyncio":
            pytest.fail(f"scripted_server runs on asyncio, not on anyio's {name} backend")
        server = request.getfixturevalue(_ANYIO)
    else:
        pytest.fail(_NO_RUNNER, pytrace=False)
    if not isinstance(server, ScriptedServer):  # pragma: no cover - a fixture overridden
        raise TypeError(f"scripted_server: expected a ScriptedServer, got {server!r}")
    return server
