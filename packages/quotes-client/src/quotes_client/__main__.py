"""
The ``quotes-client`` command: print the live stream (a ``websocat`` for this API).

Usage::

    quotes-client ws://127.0.0.1:8000/v1/ws/quotes --tickers AAPL,MSFT
    quotes-client ws://127.0.0.1:8000/v1/ws/quotes --format json | jq .close
    quotes-client wss://quotes.example/v1/ws/quotes --token-command "vault read -field=token ..."
    quotes-client https://quotes.example/v1/sse/quotes --tickers AAPL   # WebSockets blocked

One line per quote on standard output (``text``: ticker, close, timestamp,
latency; ``json``: the canonical quote plus ``latency_ms``); connection events
on standard error. It reconnects like the library does.

Exit status: 0 after Ctrl-C or SIGTERM (the connection is closed with 1000);
1 when ``--max-retries`` is exhausted; 2 on a fatal error (HTTP 400/401/403/404
at the handshake, close code 1008/1009) or invalid arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from quotes_client.buffer import DEFAULT_BUFFER_SIZE
from quotes_client.client import DEFAULT_OPEN_TIMEOUT, QuotesClient
from quotes_client.errors import FatalError, RetriesExhausted, StreamError
from quotes_client.loop import TokenProvider
from quotes_core import InvalidTickers, Quote, format_timestamp

__all__ = ["EXIT_FATAL", "EXIT_GAVE_UP", "format_quote", "main"]

EXIT_GAVE_UP = 1
"""Exit status when ``--max-retries`` consecutive attempts failed."""

EXIT_FATAL = 2
"""Exit status on a fatal error (rejected handshake, fatal close code, bad arguments)."""


def format_quote(quote: Quote, fmt: str, now: float) -> str:
    """
    One output line for ``quote`` (without the newline).

    Args:
        quote: the quote to show.
        fmt: ``"text"`` or ``"json"``.
        now: the current POSIX time, for the latency.
    """
    latency_ms = (now - quote.timestamp.timestamp()) * 1000
    if fmt == "json":
        return f'{quote.to_json()[:-1]},"latency_ms":{latency_ms:.3f}}}'
    return (
        f"{quote.ticker:<10} {quote.close!r:>14}  {format_timestamp(quote.timestamp)}"
        f"  {latency_ms:9.1f} ms"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quotes-client",
        description="Print the live quote stream of a quotes server; reconnects on its own.",
    )
    parser.add_argument(
        "url",
        help="WebSocket URL, e.g. ws://127.0.0.1:8000/v1/ws/quotes, or where WebSockets are "
        "blocked the Server-Sent Events one, http://127.0.0.1:8000/v1/sse/quotes",
    )
    parser.add_argument(
        "--tickers",
        nargs="+",
        metavar="TICKER",
        help="tickers to receive, space- or comma-separated (default: all)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="one line per quote, or each quote's JSON (default: text)",
    )
    parser.add_argument("--origin", help="Origin header to send (default: none)")
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="extra handshake header (repeatable; default: none)",
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument(
        "--token",
        default=os.environ.get("QUOTES_TOKEN"),
        help="access token, sent as 'Authorization: Bearer' (default: $QUOTES_TOKEN)",
    )
    token.add_argument(
        "--token-command",
        metavar="COMMAND",
        help="shell command printing a fresh token, run before each connection (an expired "
        "token then means a new one and a reconnect, not an exit; default: none)",
    )
    parser.add_argument(
        "--open-timeout",
        type=float,
        default=DEFAULT_OPEN_TIMEOUT,
        help=f"seconds a connection attempt may take (default: {DEFAULT_OPEN_TIMEOUT:g})",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        help="give up after N failed reconnects (default: never give up)",
    )
    parser.add_argument(
        "--stale-timeout",
        type=float,
        help="reconnect after N seconds without a message (default: never)",
    )
    parser.add_argument(
        "--buffer-size",
        type=int,
        default=DEFAULT_BUFFER_SIZE,
        help=f"quotes held for a slow reader before the oldest are dropped "
        f"(default: {DEFAULT_BUFFER_SIZE})",
    )
    parser.add_argument(
        "--snapshot", action="store_true", help="start with the latest quote of every ticker"
    )
    parser.add_argument(
        "--max-hz",
        type=float,
        metavar="N",
        help="at most N quotes per second per ticker (default: every quote)",
    )
    parser.add_argument("--batch", action="store_true", help="ask for one JSON array per flush")
    parser.add_argument(
        "--resume", action="store_true", help="resume after reconnects (seq=1, since=)"
    )
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="no connection events")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _headers(parser: argparse.ArgumentParser, raw: list[str]) -> dict[str, str]:
    headers = {}
    for item in raw:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            parser.error(f"--header expects NAME:VALUE, got {item!r}")
        headers[name.strip()] = value.strip()
    return headers


def command_token(command: str) -> TokenProvider:
    """A token provider that runs ``command`` in a shell and takes what it prints."""

    async def token() -> str:
        proc = await asyncio.create_subprocess_shell(
            command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        if proc.returncode != 0:
            detail = err.decode(errors="replace").strip()[:200]
            raise RuntimeError(f"--token-command exited with {proc.returncode}: {detail}")
        return out.decode().strip()

    return token


def _configure_logging(quiet: bool, verbose: bool) -> None:
    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("quotes_client", "websockets"):
        log = logging.getLogger(name)
        log.addHandler(handler)
        log.setLevel(level if name == "quotes_client" or verbose else logging.WARNING)
        log.propagate = False


async def _stream(client: QuotesClient, fmt: str, out: TextIO) -> int:
    loop = asyncio.get_running_loop()
    closing: list[asyncio.Task[None]] = []
    with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
        # Ctrl-C and SIGTERM (docker stop, kill) close cleanly with 1000. Both are
        # handled here, not left to Python's default: a program started from a
        # background job inherits SIGINT ignored, and would never stop on Ctrl-C.
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(
                signum, lambda: closing.append(loop.create_task(client.aclose()))
            )
    try:
        async with client:
            async for quote in client:
                out.write(format_quote(quote, fmt, time.time()) + "\n")
                out.flush()
    except FatalError as exc:
        print(f"quotes-client: error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except RetriesExhausted as exc:
        print(f"quotes-client: error: {exc}", file=sys.stderr)
        return EXIT_GAVE_UP
    except StreamError as exc:
        print(f"quotes-client: error: {exc}", file=sys.stderr)
        return EXIT_FATAL
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command (``argv`` defaults to ``sys.argv[1:]``) and exit."""
    parser = _parser()
    args = parser.parse_args(argv)
    headers = _headers(parser, args.header)
    try:
        client = QuotesClient(
            args.url,
            tickers=[t for item in args.tickers for t in item.split(",")] if args.tickers else None,
            origin=args.origin,
            headers=headers,
            token=command_token(args.token_command) if args.token_command else args.token,
            open_timeout=args.open_timeout,
            max_retries=args.max_retries,
            stale_timeout=args.stale_timeout,
            buffer_size=args.buffer_size,
            snapshot=args.snapshot,
            max_hz=args.max_hz,
            batch=args.batch,
            resume=args.resume,
        )
    except (ValueError, InvalidTickers) as exc:
        parser.error(str(exc))
    _configure_logging(args.quiet, args.verbose)
    try:
        status = asyncio.run(_stream(client, args.format, sys.stdout))
    except KeyboardInterrupt:
        status = 0
    except BrokenPipeError:
        # the reader of our output went away (e.g. `| head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = 0
    sys.exit(status)


if __name__ == "__main__":
    main()
