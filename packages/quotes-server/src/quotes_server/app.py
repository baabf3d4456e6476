"""
The FastAPI application: four identical WebSocket endpoints, the two
Server-Sent Events endpoints (:mod:`quotes_server.sse`), health, readiness
and metrics. Build it with :func:`create_app` (also the uvicorn factory).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, disable_created_metrics, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp
from starlette.websockets import WebSocket

from quotes_core import WS_PATHS
from quotes_core.sse import SSE_PATHS
from quotes_server import __version__
from quotes_server.admission import Admission, Admitted, Refusal
from quotes_server.asyncapi import asyncapi_document
from quotes_server.auth import Authenticator
from quotes_server.connection import Connection
from quotes_server.dashboard import add_dashboard
from quotes_server.frames import FRAMES_EXTENSION
from quotes_server.guard import ProtectionGuard, install_protections
from quotes_server.internal import InternalServer
from quotes_server.limits import INBOUND_EXTENSION, LIMITS_STATE_KEY, ProtocolLimits
from quotes_server.logs import RateLimitedLog
from quotes_server.metrics import Metrics
from quotes_server.runtime import Runtime
from quotes_server.settings import NO_UPSTREAM, Settings
from quotes_server.sources import FollowsInterest, QuoteSource
from quotes_server.sources.demo import DemoSource
from quotes_server.sources.redis import RedisSource
from quotes_server.sources.sequenced import SequencedSource
from quotes_server.sources.sharded import ShardedRedisSource
from quotes_server.sse import SseEndpoint

__all__ = ["SSE_PATHS", "WS_PATHS", "QuotesApp", "create_app", "make_source"]

log = logging.getLogger("quotes_server")

# the *_created series double the size of /metrics and say nothing useful here
disable_created_metrics()  # type: ignore[no-untyped-call]

HEALTH = {"status": "ok", "version": __version__, "repository": "opa-quotes-api"}


def make_source(settings: Settings) -> QuoteSource:
    """
    The Redis source when a URL is configured (single channel, or sharded with
    ``upstream="sharded"``), the demo feed when ``demo`` asks for it.

    Raises:
        ValueError: neither is configured (:data:`~quotes_server.settings.NO_UPSTREAM`).
    """
    if settings.redis_url is None:
        if not settings.demo:
            raise ValueError(NO_UPSTREAM)
        return DemoSource(rate=settings.demo_rate, tickers=settings.demo_tickers)
    if settings.history == "redis":
        return SequencedSource(
            settings.redis_url,
            settings.channel,
            history_size=settings.history_size,
            history_age=settings.history_age,
            lease=settings.history_lease,
            grace_period=settings.grace_period,
            timeout=settings.redis_timeout,
            ping_interval=settings.redis_ping_interval,
            pong_timeout=settings.redis_pong_timeout,
        )
    if settings.upstream == "sharded":
        return ShardedRedisSource(
            settings.redis_url,
            settings.channel,
            settings.shards,
            grace_period=settings.grace_period,
            timeout=settings.redis_timeout,
            ping_interval=settings.redis_ping_interval,
            pong_timeout=settings.redis_pong_timeout,
        )
    return RedisSource(
        settings.redis_url,
        settings.channel,
        grace_period=settings.grace_period,
        timeout=settings.redis_timeout,
        ping_interval=settings.redis_ping_interval,
        pong_timeout=settings.redis_pong_timeout,
    )


class QuotesEndpoint:
    """
    The ASGI app behind every WebSocket path: :class:`~quotes_server.admission.Admission`'s
    checks, each refusal an HTTP status sent before the upgrade (the ASGI
    denial-response extension), then a :class:`~quotes_server.connection.Connection`
    until the socket closes.
    """

    def __init__(self, runtime: Runtime, admission: Admission) -> None:
        self.runtime = runtime
        self.admission = admission

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        ws = WebSocket(scope, receive, send)
        runtime = self.runtime
        result = self.admission.admit(ws, "ws")
        if isinstance(result, Refusal):
            await ws.send_denial_response(result.response())
            return
        admitted: Admitted = result
        conn: Connection | None = None

        def open_connection() -> Connection:
            nonlocal conn
            conn = runtime.open(
                admitted.ticker_filter,
                admitted.mode,
                admitted.options,
                send,
                receive,
                client_id=runtime.next_client_id(),
                remote=admitted.remote,
                host=admitted.host,
                frames=scope.get("extensions", {}).get(FRAMES_EXTENSION),
                inbound=scope.get("extensions", {}).get(INBOUND_EXTENSION),
                ticker_grant=admitted.grant.tickers if admitted.grant is not None else None,
            )
            return conn

        async def serve() -> int | None:
            assert conn is not None
            return await conn.serve()

        await self.admission.serve(admitted, scope["path"], open_connection, ws.accept, serve)


class QuotesApp(FastAPI):
    """
    FastAPI, with the stream's paths answered at the front door.

    A WebSocket request for one of :data:`~quotes_core.WS_PATHS`, or an HTTP request
    for one of :data:`~quotes_core.sse.SSE_PATHS`, goes straight to its endpoint
    (:class:`QuotesEndpoint`, :class:`~quotes_server.sse.SseEndpoint`) once
    :class:`~quotes_server.guard.ProtectionGuard`'s check passes, instead of through
    Starlette's middleware stack and router: that stack is a dozen coroutines and
    their closures for as long as the stream lives (an idle WebSocket's task was 19
    coroutines deep, 10 without it), about 30 objects per connection that the garbage
    collector walks in every full collection. Every other request, and any that the
    check refuses (its answer comes from the stack), takes the usual way. Nothing in
    the stack acts on these requests: the guard is the only middleware, the routes
    match the path exactly and take every method, and the endpoints answer their own
    errors.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.front: dict[tuple[str, str], ASGIApp] = {}
        """(scope type, path) -> endpoint of the stream's paths (set by :func:`create_app`)."""
        self.front_guard: ProtectionGuard | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not scope.get("root_path"):
            endpoint = self.front.get((scope["type"], scope.get("path", "")))
            guard = self.front_guard
            if endpoint is not None and guard is not None and guard.refusal(scope) is None:
                scope["app"] = self
                await endpoint(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


PROXY_HINT_PERIOD = 300.0
"""Seconds between two hints about an ``X-Forwarded-For`` from an untrusted peer."""


def _proxy_hint(settings: Settings) -> Callable[[str], None]:
    """
    The hint for a handshake whose ``X-Forwarded-For`` was ignored: its peer is not a
    trusted proxy. Behind a reverse proxy that is the misconfiguration that makes every
    client count as the proxy's address (the per-address cap then answers 429), so say
    which setting fixes it; at most once per :data:`PROXY_HINT_PERIOD`, since any
    client can send the header.
    """
    hint = RateLimitedLog(log, burst=1, period=PROXY_HINT_PERIOD)
    trusted = ",".join(settings.trusted_proxies) or "none"
    cap = settings.max_connections_per_ip
    effect = f"; past {cap} of them (max_connections_per_ip) they get HTTP 429" if cap else ""

    def untrusted_forward(peer: str) -> None:
        hint(
            logging.WARNING,
            "X-Forwarded-For from %s ignored: that peer is not a trusted proxy "
            "(QUOTES_TRUSTED_PROXIES / --trusted-proxies: %s). If it is your reverse proxy, "
            "add its address there: until then every client behind it counts as %s%s "
            "(this hint: at most once per %d s)",
            peer,
            trusted,
            peer,
            effect,
            PROXY_HINT_PERIOD,
        )

    return untrusted_forward


def _loop_name() -> str:
    """The running event loop's implementation (``uvloop`` when uvicorn picked it)."""
    loop_type = type(asyncio.get_running_loop())
    return loop_type.__module__.split(".")[0] if loop_type.__module__ else loop_type.__name__


def create_app(settings: Settings | None = None, source: QuoteSource | None = None) -> QuotesApp:
    """
    Build the application.

    Args:
        settings: defaults to :class:`Settings` read from the environment.
        source: defaults to :func:`make_source` of the settings.
    """
    settings = settings or Settings()
    source = source or make_source(settings)
    metrics = Metrics()
    metrics.demo_feed.set(1 if isinstance(source, DemoSource) else 0)
    runtime = Runtime(settings, source, metrics)
    sharded = source.interest
    if sharded is not None:
        metrics.watch_shards(sharded.shard_health)
    metrics.watch_history(runtime.history_status)
    auth = Authenticator(settings)
    limits = ProtocolLimits(
        close_timeout=settings.close_timeout,
        handshake_timeout=settings.handshake_timeout,
        max_url_length=settings.http_max_url_length,
        max_header_size=settings.http_max_header_size,
        max_headers=settings.http_max_headers,
        max_head_size=settings.http_max_head_size,
        request_timeout=settings.http_request_timeout,
        max_body_size=settings.http_max_body_size,
        max_http_connections=settings.http_max_connections,
        retry_after=settings.retry_after,
        inbound_rate=settings.ws_inbound_rate,
        inbound_burst=settings.ws_inbound_burst,
        on_limit=lambda event: metrics.limit_hits.labels(event).inc(),
        on_untrusted_forward=_proxy_hint(settings),
    )

    # /ready and /metrics tell connection counts, tasks and shard health: on the internal
    # port when one is set, and then only there
    operator_routes = _operator_routes(runtime, metrics, sharded)
    internal: InternalServer | None = None
    if settings.internal_port is not None:
        internal_app = Starlette(
            routes=[*operator_routes, Route("/health", _health, methods=["GET"])]
        )
        internal = InternalServer(
            internal_app, settings.internal_host, settings.internal_port, limits
        )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        log.info("effective cors_origins: %s", settings.cors_origins)
        log.info(
            "limits: max_connections=%d max_connections_per_ip=%d trusted_proxies=%s auth=%s",
            settings.max_connections,
            settings.max_connections_per_ip,
            settings.trusted_proxies or "none",
            ", ".join(auth.sources) or "off",
        )
        if settings.demo:
            log.warning(
                "serving the built-in DEMO feed (%d synthetic quotes/s over %d symbols), not "
                "real prices; drop --demo and set --redis-url or QUOTES_REDIS_URL to stream "
                "real quotes from channel %r",
                settings.demo_rate,
                settings.demo_tickers,
                settings.channel,
            )
        else:
            log.info("subscribing to Redis channel %r", settings.channel)
        if internal is not None:
            await internal.start()  # first: a port in use fails the start-up before anything runs
        await runtime.start()
        yield {LIMITS_STATE_KEY: limits}
        if internal is not None:
            await internal.stop()
        await runtime.stop()

    # the interactive API pages are off unless asked for: they describe only the HTTP
    # routes, and /docs and /redoc pull their scripts from a CDN onto the dashboard's origin
    api_docs = settings.api_docs
    app = QuotesApp(
        title="quotes-server",
        version=__version__,
        summary="Real-time quotes over WebSockets",
        lifespan=lifespan,
        docs_url="/docs" if api_docs else None,
        redoc_url="/redoc" if api_docs else None,
        openapi_url="/openapi.json" if api_docs else None,
    )
    # log redaction, and a refusal to serve without our uvicorn protocols and proxy rule
    install_protections(app, settings)
    app.state.runtime = runtime
    admission = Admission(runtime, auth)
    endpoint = QuotesEndpoint(runtime, admission)
    for path in WS_PATHS:
        app.router.routes.append(WebSocketRoute(path, endpoint))
    sse = SseEndpoint(runtime, admission, settings.sse_keepalive)
    for path in SSE_PATHS:
        app.router.routes.append(Route(path, sse))
    app.front = {("websocket", path): endpoint for path in WS_PATHS}
    app.front.update({("http", path): sse for path in SSE_PATHS})
    app.front_guard = ProtectionGuard(endpoint, settings)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return HEALTH

    # public and fixed for the process's life: the dashboard's banner reads it
    info = {"demo": isinstance(source, DemoSource)}

    @app.get("/info")
    async def server_info() -> dict[str, bool]:
        """What a page should say about this server: ``demo`` is true on the demo feed."""
        return info

    document = asyncapi_document(f"{settings.host}:{settings.port}")

    @app.get("/asyncapi.json")
    async def asyncapi(request: Request) -> JSONResponse:
        """The stream's AsyncAPI 3.0 document, with this server as its servers."""
        host = request.headers.get("host", "")
        if not _HOST_HEADER.fullmatch(host):
            return JSONResponse(document)
        servers = {name: {**server, "host": host} for name, server in document["servers"].items()}
        return JSONResponse({**document, "servers": servers})

    if internal is None:
        app.router.routes.extend(operator_routes)

    add_dashboard(app)
    return app


_HOST_HEADER = re.compile(
    r"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?"
)
"""A ``Host`` header that may name the server in the served AsyncAPI document."""


async def _health(_request: Request) -> JSONResponse:
    """Liveness on the internal port: the process answers."""
    return JSONResponse(HEALTH)


def _operator_routes(
    runtime: Runtime, metrics: Metrics, sharded: FollowsInterest | None
) -> list[Route]:
    """``/ready`` and ``/metrics``: on the public port, or on the internal one when it is set."""

    async def ready(_request: Request) -> JSONResponse:
        """Readiness: 200 while new WebSocket handshakes are accepted, else 503."""
        state = runtime.source.state
        body: dict[str, object] = {
            "status": "ready" if state.accepting else "unavailable",
            "source": runtime.source.name,
            "upstream": state.value,
            "connections": len(runtime.connections),
            "subscriptions": len(runtime.stream),
            "tasks": len(asyncio.all_tasks()),
            # Python's live small-object allocations: flat while RSS grows means
            # fragmentation (memory the allocator keeps), growing means a leak
            "python_blocks": sys.getallocatedblocks(),
            "loop": _loop_name(),
        }
        body["history"] = runtime.history_status()
        if sharded is not None:
            body["shards"] = sharded.shard_health()
        return JSONResponse(body, status_code=200 if state.accepting else 503)

    async def prometheus_metrics(_request: Request) -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", prometheus_metrics, methods=["GET"]),
    ]
