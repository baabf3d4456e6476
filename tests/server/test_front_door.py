"""QuotesApp's front door alone: stream paths skip the middleware stack, all else takes it."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from quotes_server.app import QuotesApp
from quotes_server.guard import ProtectionGuard
from quotes_server.settings import Settings

pytestmark = pytest.mark.anyio


class _Endpoint:
    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)


class _Guard(ProtectionGuard):
    def __init__(self, refusal: str | None) -> None:
        super().__init__(_Endpoint(), Settings())
        self._refusal = refusal

    def refusal(self, scope: Scope) -> str | None:
        return self._refusal


class _Stack:
    """Stands for the middleware stack: records what reached it."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)


def _app(refusal: str | None) -> tuple[QuotesApp, _Endpoint, _Endpoint, _Stack]:
    app = QuotesApp()
    ws, sse, stack = _Endpoint(), _Endpoint(), _Stack()
    app.front = {("websocket", "/ws/quotes"): ws, ("http", "/sse/quotes"): sse}
    app.front_guard = _Guard(refusal)
    app.middleware_stack = stack
    return app, ws, sse, stack


async def _call(app: QuotesApp, **scope: Any) -> None:
    async def receive() -> Any:
        raise AssertionError("not read here")

    async def send(_message: Any) -> None:
        raise AssertionError("not written here")

    await app({"root_path": "", **scope}, receive, send)


async def test_stream_paths_go_straight_to_their_endpoint() -> None:
    app, ws, sse, stack = _app(refusal=None)
    await _call(app, type="websocket", path="/ws/quotes")
    await _call(app, type="http", path="/sse/quotes", method="GET")
    assert [s["path"] for s in ws.scopes] == ["/ws/quotes"]
    assert [s["path"] for s in sse.scopes] == ["/sse/quotes"]
    assert ws.scopes[0]["app"] is app
    assert stack.scopes == []


async def test_everything_else_and_a_refused_request_take_the_stack() -> None:
    app, ws, sse, stack = _app(refusal=None)
    await _call(app, type="http", path="/ws/quotes", method="GET")  # not a WebSocket
    await _call(app, type="websocket", path="/sse/quotes")  # not HTTP
    await _call(app, type="http", path="/health", method="GET")
    await _call(app, type="websocket", path="/ws/quotes", root_path="/prefix")
    refused, ws_refused, _, refused_stack = _app(refusal="started without its protections")
    await _call(refused, type="websocket", path="/ws/quotes")
    assert ws.scopes == sse.scopes == ws_refused.scopes == []
    assert [s["path"] for s in stack.scopes] == [
        "/ws/quotes",
        "/sse/quotes",
        "/health",
        "/ws/quotes",
    ]
    assert [s["path"] for s in refused_stack.scopes] == ["/ws/quotes"]
