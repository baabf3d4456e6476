"""
Server settings, from ``QUOTES_*`` environment variables (and the command line).

The command line sets the same environment variables before uvicorn starts, so
every worker process reads one consistent configuration.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from quotes_core import (
    DEFAULT_FLUSH_WINDOW,
    DEFAULT_MAX_CLIENT_FRAME,
    DEFAULT_MAX_URL_LENGTH,
    DEFAULT_QUEUE_BYTES,
    DEFAULT_REPLAY_LIMIT,
    DEFAULT_SHARDS,
    MAX_SHARDS,
    origin_allowed,
)
from quotes_core.sse import KEEPALIVE_SECONDS
from quotes_server.sources.redis_url import SHARDED_NEEDS_TCP, parse_redis_url

__all__ = ["MIN_JWT_SECRET_BYTES", "NO_UPSTREAM", "Settings"]

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]

MIN_JWT_SECRET_BYTES = 32
"""Shortest HS256 secret accepted: RFC 7518 section 3.2 asks for a key of at least the
hash's size (256 bits); a shorter one invites an offline brute force of any logged token."""


NO_UPSTREAM = (
    "no Redis URL configured: give --redis-url (QUOTES_REDIS_URL) to stream the upstream's "
    "quotes, or --demo (QUOTES_DEMO=1) to serve the built-in feed of synthetic quotes"
)
"""Why a server without an upstream does not start (it never serves demo data by accident)."""


class Settings(BaseSettings):
    """
    Every setting of ``quotes-server``; each is also the environment variable
    ``QUOTES_<NAME>`` (e.g. ``QUOTES_REDIS_URL``).
    """

    # hide_input_in_errors: a refused secret must not be echoed in a traceback
    model_config = SettingsConfigDict(
        env_prefix="QUOTES_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port to listen on."""
    workers: int = Field(1, ge=1)
    """Worker processes; each has its own Redis subscription and its own /metrics."""
    log_level: LogLevel = "info"
    """Log level of the server and uvicorn."""

    redis_url: str | None = None
    """Redis to subscribe to; without it the server needs ``demo`` and streams no real prices.
    ``rediss://`` connects with TLS; every query option is honoured or refused at start-up
    (:func:`~quotes_server.sources.redis_url.parse_redis_url`)."""
    demo: bool = False
    """Serve the built-in demo feed of synthetic quotes instead of an upstream (never real
    prices: a server without ``redis_url`` refuses to start unless this is set)."""
    channel: str = Field("quotes.realtime", min_length=1)
    """Redis Pub/Sub channel the upstream streamer publishes on (the prefix of the shard
    channels in the sharded mode)."""
    upstream: Literal["single", "sharded"] = "single"
    """``single``: SUBSCRIBE to ``channel`` (the contract). ``sharded``: SSUBSCRIBE to the
    shard channels ``<channel>.{n}`` clients need, on a Redis Cluster or a single Redis 7."""
    shards: int = Field(DEFAULT_SHARDS, ge=1, le=MAX_SHARDS)
    """Shard channels of the sharded mode (must match the publisher's)."""
    grace_period: float = Field(5.0, ge=0)
    """Seconds Redis may stay unreachable before clients are closed with 1011."""
    redis_timeout: float = Field(3.0, gt=0)
    """Connect and command timeout for Redis, in seconds."""
    redis_ping_interval: float = Field(5.0, gt=0)
    """Seconds of silence on the subscription before we PING Redis."""
    redis_pong_timeout: float = Field(3.0, gt=0)
    """Seconds to wait for the PONG before the subscription counts as dead."""
    retry_after: int = Field(5, ge=1)
    """``Retry-After`` seconds sent with 503 handshake rejections."""

    cors_origins: Annotated[list[str], NoDecode] = ["*"]
    """Browser origins allowed to connect (``scheme://host[:port]``); ``*`` allows all.
    Requests without an ``Origin`` header (non-browser clients) are always allowed."""

    buffer_size: int = Field(1000, ge=1)
    """Quotes buffered losslessly per client before conflation starts."""
    slow_client_timeout: float = Field(30.0, gt=0)
    """Seconds a client with pending quotes may make no progress before it is closed (1013)."""
    flush_window: float = Field(DEFAULT_FLUSH_WINDOW, ge=0, le=0.1)
    """Longest a busy server may hold new frames to write more of them per socket write
    (seconds; 0 writes after every event-loop turn). An idle server never waits."""
    history: Literal["memory", "redis"] = "memory"
    """Where stream positions and the resume window belong: ``memory``, to this process
    (a resume works on the instance that gave the position); ``redis``, to the
    deployment (positions assigned once, the window kept in Redis: any instance or
    worker answers ``since=``, and a restart keeps the window)."""
    history_lease: float = Field(3.0, gt=0)
    """Seconds the sequencing instance's lease lasts without renewal (``history=redis``):
    a standby takes over at most about this long after the sequencer dies."""
    history_size: int = Field(100_000, ge=1)
    """Quotes the resume window holds (``since=``), per process or per deployment."""
    history_age: float = Field(120.0, gt=0)
    """Seconds a quote stays in the resume window."""
    replay_limit: int = Field(DEFAULT_REPLAY_LIMIT, ge=0)
    """Most quotes one resume (``since=``) replays; a resume that would replay more
    answers ``recovered: false`` (then the snapshot, when asked)."""
    client_queue_limit: int = Field(DEFAULT_QUEUE_BYTES, ge=64 * 1024)
    """Most bytes queued for one client besides its buffer of live quotes (a replay, a
    snapshot, control replies); a replay must fit in it, and a client that sends
    actions while its queue is over it is closed with 1013."""
    sse_keepalive: float = Field(KEEPALIVE_SECONDS, gt=0, le=15)
    """Seconds an SSE stream may stay silent before a keepalive comment (``: keepalive``)."""
    close_timeout: float = Field(10.0, gt=0)
    """Seconds to wait for a client to answer our close frame before dropping the socket."""

    ws_max_size: int = Field(DEFAULT_MAX_CLIENT_FRAME, ge=125)
    """Largest client frame in bytes; larger ones close the connection with 1009."""
    ws_ping_interval: float | None = 20.0
    """Seconds between WebSocket keepalive pings (unset disables them)."""
    ws_ping_timeout: float | None = 20.0
    """Seconds to wait for a keepalive pong."""
    ws_per_message_deflate: bool = False
    """Offer per-message-deflate compression (costs CPU per client)."""

    # --- limits (docs: Security and limits) ---
    max_connections: int = Field(10_000, ge=0)
    """Most WebSocket connections per process (0: no cap); past it handshakes get 503."""
    max_connections_per_ip: int = Field(100, ge=0)
    """Most WebSocket connections per client IP (0: no cap); past it handshakes get 429."""
    ipv6_prefix: int = Field(64, ge=32, le=128)
    """Bits of an IPv6 client address that count as one client for the per-address cap
    (64: one ``/64`` network, what one host usually owns; 128: the exact address).
    IPv4 addresses always count one by one."""
    trusted_proxies: Annotated[list[str], NoDecode] = []
    """Proxy addresses (IPs or CIDR networks) whose ``X-Forwarded-For`` names the client;
    from any other peer the header is ignored."""
    handshake_timeout: float = Field(10.0, gt=0)
    """Seconds a new TCP connection has to send a complete request head (else 408 and close)."""
    http_max_url_length: int = Field(DEFAULT_MAX_URL_LENGTH, ge=1024)
    """Longest request target (path and query) in bytes; longer gets 414."""
    http_max_header_size: int = Field(8 * 1024, ge=256, le=8 * 1024)
    """Longest header field (name and value) in bytes; longer gets 431."""
    http_max_headers: int = Field(100, ge=8, le=128)
    """Most header fields per request; more gets 431."""
    http_max_head_size: int = Field(64 * 1024, ge=4096)
    """Most bytes of request line and headers together; more gets 431."""
    http_request_timeout: float = Field(30.0, gt=0)
    """Seconds a request has, body included, from the TCP accept (or its first byte on a
    kept-alive connection) to its end (else 408 and close); at least ``handshake_timeout``.
    It bounds receiving the request, never how long its response streams."""
    http_max_body_size: int = Field(16 * 1024, ge=0)
    """Largest request body in bytes (0: no cap); larger gets 413 (no endpoint takes one)."""
    http_max_connections: int = Field(1000, ge=0)
    """Most open plain-HTTP connections per process (0: no cap), WebSocket handshakes
    included until they upgrade; past it a new connection gets 503 at once."""
    ws_inbound_rate: float = Field(50.0, gt=0)
    """Client frames (messages, pings, pongs) allowed per second on average; past the
    burst the connection is closed with 1008."""
    ws_inbound_burst: int = Field(200, ge=1)
    """Client frames allowed at once above the average rate."""

    # --- authentication (off unless one of these is set) ---
    auth_tokens: Annotated[list[str], NoDecode] = []
    """Static bearer tokens (comma-separated in ``QUOTES_AUTH_TOKENS``)."""
    auth_tokens_file: Path | None = None
    """File of static tokens: one per line, optionally followed by the tickers it grants
    (``token`` alone: every ticker; ``token AAPL,MSFT``: those; ``token ,``: none);
    ``#`` starts a comment."""
    jwt_secret: SecretStr | None = None
    """Shared secret of HS256 JSON Web Tokens."""
    jwt_public_key_file: Path | None = None
    """PEM public key of RS256 JSON Web Tokens."""
    jwt_audience: str | None = None
    """Required ``aud`` claim of JWTs, if set."""
    jwt_issuer: str | None = None
    """Required ``iss`` claim of JWTs, if set."""
    jwt_leeway: float = Field(5.0, ge=0, le=300)
    """Seconds of clock skew tolerated on a JWT's ``exp``, ``nbf`` and ``iat`` (its issuer's
    clock may run ahead of ours); a connection is closed that long after ``exp``."""

    # --- surfaces (docs: Security and limits) ---
    internal_port: int | None = Field(None, ge=1, le=65535)
    """Serve ``/metrics`` and ``/ready`` (and ``/health``) on this port instead of the
    public one, where they then answer 404; unset keeps them on the public port."""
    internal_host: str = "127.0.0.1"
    """Interface of the internal port."""
    api_docs: bool = False
    """Serve FastAPI's ``/docs``, ``/redoc`` and ``/openapi.json`` (off: 404). ``/docs`` and
    ``/redoc`` load their scripts and styles from a public CDN."""

    demo_rate: float = Field(200.0, gt=0)
    """Quotes per second of the built-in demo feed."""
    demo_tickers: int = Field(300, ge=1)
    """How many symbols the demo feed quotes."""

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        return value

    @field_validator("trusted_proxies", "auth_tokens", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # ValueError names the bad entry
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _check_secret_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            size = len(value.get_secret_value().encode())
            if size < MIN_JWT_SECRET_BYTES:
                raise ValueError(
                    f"QUOTES_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes "
                    f"(HS256 needs a 256-bit key, RFC 7518 section 3.2); it has {size}"
                )
        return value

    @field_validator("redis_url", "jwt_audience", "jwt_issuer", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None:
            # every option honoured or refused by name, and the TLS files readable, now
            # rather than at the first connection (RedisUrlError is a ValueError)
            parse_redis_url(value).ssl_context()
        return value

    @model_validator(mode="after")
    def _one_upstream(self) -> Self:
        if self.demo and self.redis_url is not None:
            raise ValueError(
                "demo and redis_url exclude each other: the demo feed would hide the "
                "upstream's quotes; drop --demo (QUOTES_DEMO) to stream from Redis"
            )
        return self

    @model_validator(mode="after")
    def _history_in_redis(self) -> Self:
        if self.history != "redis":
            return self
        if self.redis_url is None:
            raise ValueError(
                "history=redis keeps the deployment's positions in Redis: it needs "
                "redis_url (--redis-url, QUOTES_REDIS_URL)"
            )
        if self.upstream == "sharded":
            raise ValueError(
                "history=redis is not available with upstream=sharded (positions would "
                "have to be kept per shard): use history=memory, where each instance "
                "answers the resumes of the positions it gave"
            )
        return self

    @model_validator(mode="after")
    def _sharded_over_tcp(self) -> Self:
        if (
            self.upstream == "sharded"
            and self.redis_url is not None
            and parse_redis_url(self.redis_url).unix_path is not None
        ):
            raise ValueError(SHARDED_NEEDS_TCP)
        return self

    @model_validator(mode="after")
    def _request_outlasts_head(self) -> Self:
        if self.http_request_timeout < self.handshake_timeout:
            raise ValueError(
                f"http_request_timeout ({self.http_request_timeout:g}) must be at least "
                f"handshake_timeout ({self.handshake_timeout:g}): the request includes its head"
            )
        return self

    @field_validator("internal_port", mode="before")
    @classmethod
    def _blank_port_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("internal_port")
    @classmethod
    def _check_internal_port(cls, value: int | None, info: ValidationInfo) -> int | None:
        # workers and port are declared (so validated) before internal_port
        workers, port = info.data.get("workers", 1), info.data.get("port")
        if value is not None and workers > 1:
            raise ValueError(
                "it serves one process's /metrics and /ready, so it needs workers=1 (got "
                f"{workers}: the workers would compete for the port and each scrape would "
                "reach one of them); run one worker per instance, several instances behind "
                "the proxy, or leave internal_port unset"
            )
        if value is not None and value == port:
            raise ValueError(f"it must differ from port ({port})")
        return value

    @property
    def upstream_missing(self) -> bool:
        """True when neither a Redis URL nor the demo feed is configured."""
        return self.redis_url is None and not self.demo

    def origin_allowed(self, origin: str | None) -> bool:
        """
        Tell whether a handshake's ``Origin`` header passes ``cors_origins``.

        The core's rule (:func:`quotes_core.origin_allowed`): no header (a
        non-browser client) is allowed; otherwise an exact ``scheme://host[:port]``
        match, or ``*`` in the list. ``Origin: null`` is allowed only when ``null``
        itself is listed.
        """
        return origin_allowed(origin, self.cors_origins)
