"""
Test an application that consumes the stream, against a scripted server.

:class:`ScriptedServer` is a real WebSocket server on a loopback port that speaks
the contract (the same handshake checks, filter semantics and quote frames as
``quotes-server``, built from the same :mod:`quotes_core` pieces) without Redis.
The test publishes quotes and makes the stream misbehave on cue: close with any
code, drop TCP, refuse handshakes with 503, stall, send malformed frames::

    async with ScriptedServer() as server, QuotesClient(server.url, tickers=["AAPL"]) as client:
        await server.wait_connections(1)
        server.publish(quote)
        await server.close_all(1011, "Internal server error")   # the client reconnects
        await server.wait_connections(1)

For pytest, list the plugin to get the ``scripted_server`` fixture (it needs an
async test on the asyncio event loop, run by anyio's pytest plugin or by
pytest-asyncio in strict or auto mode)::

    pytest_plugins = ["quotes_client.testing.pytest_plugin"]

For generated quotes and streams, see :mod:`quotes_core.testing` (extra
``quotes-core[testing]``).
"""

from quotes_client.testing.connection import ScriptedConnection
from quotes_client.testing.server import WS_PATHS, Handshake, ScriptedServer

__all__ = ["WS_PATHS", "Handshake", "ScriptedConnection", "ScriptedServer"]
