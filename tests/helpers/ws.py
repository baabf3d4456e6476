"""Small helpers around the ``websockets`` client for tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus

__all__ = [
    "ConnectionClosed",
    "collect_until",
    "handshake_rejection",
    "open_ws",
    "recv_json",
    "wait_closed",
]


def open_ws(url: str, **kwargs: Any) -> connect:
    """``websockets.connect`` with test-friendly defaults (short open timeout)."""
    kwargs.setdefault("open_timeout", 10)
    return connect(url, **kwargs)


async def recv_json(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    """The next message, which must be a text frame of a JSON object."""
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str), f"expected a text frame, got {type(raw).__name__}"
    doc = json.loads(raw)
    assert isinstance(doc, dict)
    return doc


async def collect_until(
    ws: ClientConnection,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 20.0,
) -> list[dict[str, Any]]:
    """Read quotes until ``done(quote)`` is true for one; return all, that one included."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            q = await recv_json(ws, timeout)
            out.append(q)
            if done(q):
                return out


async def handshake_rejection(url: str, **kwargs: Any) -> tuple[int, Headers, str]:
    """Open ``url`` expecting an HTTP rejection; return status, headers (any case) and body."""
    try:
        async with open_ws(url, **kwargs):
            pass
    except InvalidStatus as exc:
        resp = exc.response
        return resp.status_code, resp.headers, resp.body.decode()
    raise AssertionError(f"handshake to {url} was accepted")


async def wait_closed(ws: ClientConnection, timeout: float = 30.0) -> ConnectionClosed:
    """Read until the server closes the connection; return the close exception."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc
