"""
Basic connectivity check from the contract (``scripts/validation/test_websocket_health.py``).

Checks ``GET /health``, then opens the WebSocket (handshake timeout 10 s) and waits
up to 30 s for the first message. Exit status 0 when both pass, 1 otherwise.

    python scripts/validation/test_websocket_health.py [--url ws://localhost:8000/ws]

Written against the current ``websockets`` asyncio API (the contract's sample uses
an older one: ``InvalidStatusCode`` became ``InvalidStatus``, ``timeout`` became
``open_timeout``). Not a pytest module: the test suite runs it as a script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

import websockets
from websockets.exceptions import InvalidStatus

EXPECTED_HEALTH = {"status": "ok", "version": "0.1.0", "repository": "opa-quotes-api"}


def health_url(ws_url: str) -> str:
    """``ws://host:port/anything`` -> ``http://host:port/health``."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, "/health", "", ""))


def check_health(ws_url: str, timeout: float) -> bool:
    url = health_url(ws_url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"✗ Health check failed: {url}: {exc}")
        return False
    if body != EXPECTED_HEALTH:
        print(f"✗ Unexpected health body: {body}")
        return False
    print(f"✓ Health check OK: {body}")
    return True


async def check_websocket(uri: str, open_timeout: float, message_timeout: float) -> bool:
    try:
        async with websockets.connect(uri, open_timeout=open_timeout) as ws:
            print("✓ WebSocket handshake successful")
            message = await asyncio.wait_for(ws.recv(), timeout=message_timeout)
            text = message if isinstance(message, str) else message.decode(errors="replace")
            print(f"✓ Received first message: {text[:100]}...")
            return True
    except InvalidStatus as exc:
        print(f"✗ Handshake failed: {exc.response.status_code} {dict(exc.response.headers)}")
    except TimeoutError:
        print("✗ Timeout waiting for data")
    except OSError as exc:
        print(f"✗ Connection failed: {exc}")
    except websockets.exceptions.ConnectionClosed as exc:
        print(f"✗ Connection closed: {exc}")
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://localhost:8000/ws", help="WebSocket URL to check")
    parser.add_argument("--open-timeout", type=float, default=10.0, help="handshake timeout (s)")
    parser.add_argument(
        "--message-timeout", type=float, default=30.0, help="wait for the first message (s)"
    )
    args = parser.parse_args(argv)
    healthy = check_health(args.url, args.open_timeout)
    streaming = asyncio.run(check_websocket(args.url, args.open_timeout, args.message_timeout))
    return 0 if healthy and streaming else 1


if __name__ == "__main__":
    sys.exit(main())
