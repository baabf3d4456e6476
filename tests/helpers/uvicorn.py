"""The app under a plain ``uvicorn --factory``, as someone might run it instead of quotes-server."""

from __future__ import annotations

from tests.helpers.processes import ServerProcess, python_module

PROTECTED = [
    "--http",
    "quotes_server.http_protocol:QuotesHttpProtocol",
    "--ws",
    "quotes_server.protocol:QuotesWebSocketProtocol",
    "--no-proxy-headers",
    "--ws-max-size",
    "65536",
    "--ws-per-message-deflate",
    "false",
]
"""The options the Security page gives for the default settings (no trusted proxy)."""


def uvicorn_factory(*options: str) -> list[str]:
    """argv of ``uvicorn quotes_server.app:create_app --factory`` on ``{port}`` with ``options``."""
    return python_module(
        "uvicorn", "quotes_server.app:create_app", "--factory", "--port", "{port}", *options
    )


class AnsweringServer(ServerProcess):
    """A server process that is ready once its health path answers, whatever the status."""

    ready_on_any_status = True
