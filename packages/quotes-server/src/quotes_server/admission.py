"""
Admission: what a stream request is answered before anything streams, and the
life of an admitted client around its transport.

Both transports ask the same :class:`Admission`: the WebSocket handshake
(:class:`~quotes_server.app.QuotesEndpoint`, a refusal sent with the ASGI
denial-response extension) and the Server-Sent Events request
(:class:`~quotes_server.sse.SseEndpoint`, a refusal as an ordinary response). The
checks run in this order, each refusal an HTTP status with its reason as
``text/plain``: Origin (403), the process's connection cap (503) and the client
address's (429), the token when auth is on (401), the query string, and for SSE the
``Last-Event-ID`` header (400), the token's ticker grant (403), the upstream (503).
A 429 or 503 carries ``Retry-After``, a 401 ``WWW-Authenticate``. Refusals are
counted by outcome in the transport's handshake counter (``quotes_ws_handshakes``,
``quotes_sse_handshakes``).

:meth:`Admission.serve` runs an admitted client: it waits for a resume's position,
subscribes it and registers it with the runtime (no ``await`` between the cap
checks and the registration, but for that rare wait), lets the transport accept and
serve it, and removes it on every path, with the token's expiry timer and the
connect and disconnect log lines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse

from quotes_core import TOKEN_EXPIRED_REASON, ClientError, CloseCode, Mode, StreamOptions
from quotes_core.query import (
    STREAM_PARAMS,
    parse_mode_param,
    parse_stream_options,
    parse_tickers_param,
)
from quotes_core.sse import sse_options
from quotes_core.tickers import TickerFilter
from quotes_server.addresses import address_key
from quotes_server.auth import AccessDenied, Authenticator, Grant, Unauthorized
from quotes_server.clients import Client
from quotes_server.logs import safe
from quotes_server.metrics import disconnect_label
from quotes_server.runtime import Runtime

__all__ = ["Admission", "Admitted", "Refusal"]

log = logging.getLogger("quotes_server")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request answered with an HTTP status before streaming."""

    status: int
    reason: str
    outcome: str
    """The ``outcome`` label of the handshake counters."""
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> PlainTextResponse:
        return PlainTextResponse(self.reason + "\n", self.status, headers=self.headers)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request that may stream: what it asked for, and who asked."""

    ticker_filter: TickerFilter
    mode: Mode
    options: StreamOptions
    grant: Grant | None
    remote: str
    """The client's address and port, as logged."""
    host: str
    """The key it counts under for the per-address cap."""


class Admission:
    """The checks before streaming and an admitted client's life, for every transport."""

    def __init__(self, runtime: Runtime, auth: Authenticator) -> None:
        self.runtime = runtime
        self.auth = auth

    def admit(self, conn: HTTPConnection, kind: str) -> Admitted | Refusal:
        """
        Check a request of transport ``kind`` (``"ws"`` or ``"sse"``); a refusal is
        counted and logged here, the caller sends :meth:`Refusal.response`.
        """
        result = self._check(conn, kind)
        if isinstance(result, Refusal):
            self.runtime.metrics.outcomes[kind].labels(result.outcome).inc()
            log.info(
                "%s from %s rejected with %d: %s",
                "SSE request" if kind == "sse" else "handshake",
                _remote(conn),
                result.status,
                safe(result.reason),
            )
        return result

    def _check(self, conn: HTTPConnection, kind: str) -> Admitted | Refusal:
        runtime = self.runtime
        settings = runtime.settings
        retry = {"Retry-After": str(settings.retry_after)}
        origin = conn.headers.get("origin")
        if not settings.origin_allowed(origin):
            reason = f"Origin {safe(origin or '', 100)!r} is not allowed"
            return Refusal(403, reason, "origin_forbidden")
        if settings.max_connections and len(runtime.connections) >= settings.max_connections:
            reason = "Server at its connection limit; retry later"
            return Refusal(503, reason, "over_capacity", retry)
        cap = settings.max_connections_per_ip
        host = _host(conn, settings.ipv6_prefix)
        if cap and runtime.connections_from(host) >= cap:
            reason = f"Too many connections from this address (at most {cap})"
            return Refusal(429, reason, "ip_limit", retry)
        params = conn.query_params
        try:
            grant = self.auth.authenticate(conn.headers, params)
            ticker_filter = parse_tickers_param(params.getlist("tickers"))
            mode = parse_mode_param(params.get("mode"))
            options = parse_stream_options({k: params.getlist(k) for k in STREAM_PARAMS})
            if kind == "sse":
                options = sse_options(options, conn.headers.get("last-event-id"))
            if grant is not None and not grant.allows(ticker_filter):
                raise AccessDenied("the token does not grant every requested ticker")
        except Unauthorized as exc:
            auth_error = ', error="invalid_token"' if "invalid" in str(exc) else ""
            challenge = {"WWW-Authenticate": f"Bearer{auth_error}"}
            return Refusal(401, str(exc), "unauthorized", challenge)
        except AccessDenied as exc:
            return Refusal(403, str(exc), "forbidden")
        except ClientError as exc:
            return Refusal(400, str(exc), "bad_request")
        if not runtime.accepts(ticker_filter):
            state = runtime.source.state
            detail = state.value if not state.accepting else "a shard it needs is down"
            reason = f"Upstream quote source unavailable ({detail}); retry later"
            return Refusal(503, reason, "upstream_unavailable", retry)
        return Admitted(ticker_filter, mode, options, grant, _remote(conn), host)

    async def serve(
        self,
        admitted: Admitted,
        path: str,
        open_client: Callable[[], Client],
        accept: Callable[[], Awaitable[None]],
        run: Callable[[], Awaitable[int | None]],
    ) -> None:
        """
        Run an admitted client: ``open_client`` subscribes it (after a resume's
        position is here), ``accept`` starts its response, ``run`` serves it and
        returns the close code it ended with.
        """
        runtime = self.runtime
        metrics = runtime.metrics
        # a resume from a position another instance of the deployment published a
        # moment ago waits (briefly) until this one has it too
        await runtime.wait_position(admitted.options)
        # subscribe before accepting: everything published once the client has seen
        # the response reaches it
        client = open_client()
        runtime.add(client)
        expiry = _expiry_timer(runtime, client, admitted.grant)
        code: int | None = None
        try:
            await runtime.wait_upstream(admitted.ticker_filter)
            await accept()
            metrics.outcomes[client.kind].labels("accepted").inc()
            log.info(
                "client %s connected from %s path=%s tickers=%s mode=%s%s %s%s",
                client.client_id,
                admitted.remote,
                path,
                admitted.ticker_filter,
                admitted.mode.value,
                "".join(f" {k}={v}" for k, v in admitted.options.to_query().items()),
                client.detail,
                f" auth={admitted.grant.subject}" if admitted.grant is not None else "",
            )
            code = await run()
        finally:
            if expiry is not None:
                expiry.cancel()
            runtime.remove(client)
            metrics.ended[client.kind].labels(disconnect_label(code)).inc()
            log.info(
                "client %s disconnected code=%s reason=%r sent=%d conflated=%d",
                client.client_id,
                code,
                safe(client.close_reason),
                client.sent,
                client.sub.conflated,
            )


def _expiry_timer(
    runtime: Runtime, client: Client, grant: Grant | None
) -> asyncio.TimerHandle | None:
    """Close the client with 1008 when its token expires."""
    if grant is None or grant.expires_at is None:
        return None

    def expired() -> None:
        runtime.metrics.limit_hits.labels("token_expired").inc()
        client.close(CloseCode.POLICY_VIOLATION, TOKEN_EXPIRED_REASON)

    return asyncio.get_running_loop().call_later(max(0.0, grant.expires_at - time.time()), expired)


def _remote(conn: HTTPConnection) -> str:
    client = conn.client
    return f"{client.host}:{client.port}" if client else "?"


def _host(conn: HTTPConnection, ipv6_prefix: int) -> str:
    """
    The key the client counts under for the per-address cap: its address (from
    ``X-Forwarded-For`` only behind a trusted proxy), an IPv6 one as its network of
    ``ipv6_prefix`` bits. Logs keep the exact address (:func:`_remote`).
    """
    client = conn.client
    return address_key(client.host, ipv6_prefix) if client else "?"
