"""
A pytest plugin with the ``scripted_server`` fixture.

Enable it in a test module or the root ``conftest.py``::

    pytest_plugins = ["quotes_client.testing.pytest_plugin"]

The fixture is async: run the tests with an async plugin on the asyncio backend
(anyio's ``@pytest.mark.anyio``, or pytest-asyncio).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from quotes_client.testing.server import ScriptedServer

__all__ = ["scripted_server"]


@pytest.fixture
async def scripted_server() -> AsyncIterator[ScriptedServer]:
    """A started :class:`~quotes_client.testing.ScriptedServer` with default settings."""
    async with ScriptedServer() as server:
        yield server
