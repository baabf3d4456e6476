"""
``quotes-server``: run the WebSocket server.

Every option is also an environment variable (``--redis-url`` is
``QUOTES_REDIS_URL``, and so on); options given here are exported as those
variables before uvicorn starts, so all worker processes share one configuration.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn
from pydantic import ValidationError
from uvicorn.config import LOGGING_CONFIG

from quotes_server import __version__
from quotes_server.settings import NO_UPSTREAM, Settings

__all__ = ["build_parser", "main"]

# option -> (environment variable, help); every one maps 1:1 to a Settings field
_OPTIONS: dict[str, tuple[str, str]] = {
    "host": ("QUOTES_HOST", "interface to listen on (default 127.0.0.1)"),
    "port": ("QUOTES_PORT", "TCP port (default 8000)"),
    "redis_url": (
        "QUOTES_REDIS_URL",
        "Redis URL to subscribe to (default none: then --demo is needed)",
    ),
    "channel": (
        "QUOTES_CHANNEL",
        "Redis Pub/Sub channel, the shard channels' prefix when sharded (default quotes.realtime)",
    ),
    "upstream": (
        "QUOTES_UPSTREAM",
        "single: SUBSCRIBE to the channel; sharded: SSUBSCRIBE to <channel>.{n} shard channels "
        "on a Redis Cluster or a Redis 7 (default single)",
    ),
    "shards": ("QUOTES_SHARDS", "shard channels of --upstream sharded (default 16)"),
    "cors_origins": (
        "QUOTES_CORS_ORIGINS",
        "comma-separated browser origins allowed to connect, or * (default *)",
    ),
    "workers": ("QUOTES_WORKERS", "worker processes (default 1; needs --redis-url when > 1)"),
    "log_level": ("QUOTES_LOG_LEVEL", "critical|error|warning|info|debug|trace (default info)"),
    "grace_period": (
        "QUOTES_GRACE_PERIOD",
        "seconds Redis may be unreachable before clients are closed with 1011 (default 5)",
    ),
    "slow_client_timeout": (
        "QUOTES_SLOW_CLIENT_TIMEOUT",
        "seconds without progress before a slow client is closed with 1013 (default 30)",
    ),
    "buffer_size": (
        "QUOTES_BUFFER_SIZE",
        "quotes buffered per client before conflation (default 1000)",
    ),
    "flush_window": (
        "QUOTES_FLUSH_WINDOW",
        "seconds a busy server may hold frames to batch socket writes, 0 for none (default 0.005)",
    ),
    "history": (
        "QUOTES_HISTORY",
        "memory: positions and resume window per process; redis: per deployment, kept in "
        "the Redis of --redis-url, so any instance answers since= (default memory)",
    ),
    "history_lease": (
        "QUOTES_HISTORY_LEASE",
        "seconds the sequencing instance's lease lasts unrenewed with --history redis (default 3)",
    ),
    "history_size": (
        "QUOTES_HISTORY_SIZE",
        "quotes kept for clients resuming with since= (default 100000)",
    ),
    "history_age": (
        "QUOTES_HISTORY_AGE",
        "seconds a quote stays resumable (default 120)",
    ),
    "replay_limit": (
        "QUOTES_REPLAY_LIMIT",
        "most quotes one since= resume replays; past it recovered:false (default 2000)",
    ),
    "client_queue_limit": (
        "QUOTES_CLIENT_QUEUE_LIMIT",
        "bytes queued per client besides its live buffer: replay, snapshot, replies "
        "(default 4194304)",
    ),
    "sse_keepalive": (
        "QUOTES_SSE_KEEPALIVE",
        "seconds an SSE stream may stay silent before a keepalive comment, at most 15 (default 10)",
    ),
    "ws_max_size": ("QUOTES_WS_MAX_SIZE", "largest client frame in bytes (default 65536)"),
    "ws_per_message_deflate": (
        "QUOTES_WS_PER_MESSAGE_DEFLATE",
        "offer per-message-deflate: true|false (default false)",
    ),
    "max_connections": (
        "QUOTES_MAX_CONNECTIONS",
        "WebSocket connections per process, 0 for no cap (default 10000)",
    ),
    "max_connections_per_ip": (
        "QUOTES_MAX_CONNECTIONS_PER_IP",
        "WebSocket connections per client address, 0 for no cap (default 100)",
    ),
    "ipv6_prefix": (
        "QUOTES_IPV6_PREFIX",
        "bits of an IPv6 client address counted as one client by the per-address cap, "
        "32-128 (default 64: one /64; 128: the exact address)",
    ),
    "trusted_proxies": (
        "QUOTES_TRUSTED_PROXIES",
        "comma-separated proxy IPs/CIDRs whose X-Forwarded-For is honoured (default none)",
    ),
    "handshake_timeout": (
        "QUOTES_HANDSHAKE_TIMEOUT",
        "seconds a connection has to send its request head (default 10)",
    ),
    "http_request_timeout": (
        "QUOTES_HTTP_REQUEST_TIMEOUT",
        "seconds a connection has to send a whole request, body included (default 30)",
    ),
    "http_max_connections": (
        "QUOTES_HTTP_MAX_CONNECTIONS",
        "open plain-HTTP connections per process, 0 for no cap (default 1000)",
    ),
    "auth_tokens_file": (
        "QUOTES_AUTH_TOKENS_FILE",
        "file of static tokens, turns auth on (default none; secrets: QUOTES_AUTH_TOKENS, "
        "QUOTES_JWT_SECRET)",
    ),
    "jwt_public_key_file": (
        "QUOTES_JWT_PUBLIC_KEY_FILE",
        "PEM public key of RS256 JWTs, turns auth on (default none)",
    ),
    "internal_port": (
        "QUOTES_INTERNAL_PORT",
        "serve /metrics and /ready (and /health) on this port only, not on --port (default "
        "unset: on --port); needs --workers 1",
    ),
    "internal_host": (
        "QUOTES_INTERNAL_HOST",
        "interface of --internal-port (default 127.0.0.1)",
    ),
    "api_docs": (
        "QUOTES_API_DOCS",
        "serve /docs, /redoc and /openapi.json: true|false (default false; /docs and /redoc "
        "load Swagger UI and ReDoc from a public CDN)",
    ),
    "demo_rate": ("QUOTES_DEMO_RATE", "demo feed quotes per second (default 200)"),
    "demo_tickers": ("QUOTES_DEMO_TICKERS", "demo feed symbols (default 300)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quotes-server",
        description="Serve real-time quotes over WebSockets at /ws/quotes, /ws, /v1/ws/quotes "
        "and /v1/ws. Every option is also a QUOTES_* environment variable.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for name, (env, help_text) in _OPTIONS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, help=f"{help_text} [{env}]")
    parser.add_argument(
        "--demo",
        action="store_true",
        default=None,
        help="serve the built-in demo feed of synthetic quotes, never real prices; without "
        "--redis-url the server does not start unless this is given (default off) [QUOTES_DEMO]",
    )
    return parser


def _log_config(level: str) -> dict[str, Any]:
    # the redaction of client text on these handlers is installed by create_app
    # itself (quotes_server.logs.install_safe_logging), however the app is started
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["quotes_server"] = {
        "handlers": ["default"],
        "level": level.upper() if level != "trace" else "DEBUG",
        "propagate": False,
    }
    return config


def main(argv: Sequence[str] | None = None) -> None:
    """Parse options, validate settings and run uvicorn."""
    args = build_parser().parse_args(argv)
    for name, (env, _) in _OPTIONS.items():
        value = getattr(args, name)
        if value is not None:
            os.environ[env] = value
    if args.demo:
        os.environ["QUOTES_DEMO"] = "1"
    try:
        settings = Settings()
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        sys.exit(f"quotes-server: invalid settings: {errors}")
    if settings.upstream_missing:
        sys.exit(f"quotes-server: {NO_UPSTREAM}")
    if settings.demo and settings.workers > 1:
        sys.exit(
            "quotes-server: the demo feed runs once per process, so several workers would "
            "stream different prices; give --redis-url (or QUOTES_REDIS_URL) or use --workers 1"
        )
    logging.getLogger("quotes_server").setLevel(logging.INFO)
    uvicorn.run(
        "quotes_server.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        http="quotes_server.http_protocol:QuotesHttpProtocol",
        ws="quotes_server.protocol:QuotesWebSocketProtocol",
        ws_max_size=settings.ws_max_size,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        lifespan="on",
        # X-Forwarded-For is honoured only from the configured proxies (uvicorn's own
        # default trusts 127.0.0.1, which would let any local peer pick its address)
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=settings.trusted_proxies or None,
        log_level=settings.log_level,
        log_config=_log_config(settings.log_level),
        timeout_graceful_shutdown=max(1, int(settings.close_timeout) + 1),
    )


if __name__ == "__main__":
    main()
