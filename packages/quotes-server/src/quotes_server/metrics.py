"""
Prometheus metrics of one server process (``GET /metrics``).

With ``--workers N`` every worker has its own registry: ``/metrics`` answers for
the worker that served the request (scrape each instance, or run one worker per
container).
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from quotes_server.limits import LIMIT_EVENTS
from quotes_server.sources import ShardHealth, SourceState

__all__ = [
    "DISCONNECT_CODES",
    "HANDSHAKE_OUTCOMES",
    "GcTimer",
    "HotCounters",
    "Metrics",
    "disconnect_label",
]

HANDSHAKE_OUTCOMES = (
    "accepted",
    "bad_request",
    "unauthorized",
    "origin_forbidden",
    "forbidden",
    "ip_limit",
    "over_capacity",
    "upstream_unavailable",
)
"""Label values of ``quotes_ws_handshakes`` and ``quotes_sse_handshakes``."""

DISCONNECT_CODES = range(1000, 1016)
"""Close codes kept as their own ``quotes_ws_disconnects`` label: those RFC 6455 and the
IANA registry define (1000-1015). Any other code is the client's choice (3000-4999 are
free for applications), so it counts as ``other``: a peer cannot grow the series."""


class GcTimer:
    """
    Observes each garbage collection's duration (a :data:`gc.callbacks` entry) into
    ``histogram``, labelled by generation, between :meth:`install` and :meth:`remove`.
    """

    def __init__(self, histogram: Histogram) -> None:
        self._children = [histogram.labels(str(generation)) for generation in range(3)]
        self._start = 0.0

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def remove(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self)

    def __call__(self, phase: str, info: Mapping[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self._children[info["generation"]].observe(time.perf_counter() - self._start)


def disconnect_label(code: int | None) -> str:
    """
    The ``code`` label of ``quotes_ws_disconnects`` for a close code: the code itself
    when it is in :data:`DISCONNECT_CODES`, ``other`` for any other code, ``none``
    when the connection ended without one (e.g. lost before the handshake completed).
    """
    if code is None:
        return "none"
    return str(code) if code in DISCONNECT_CODES else "other"


_GC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


@dataclass
class HotCounters:
    """
    Counters bumped on the hot path (per message, per write batch).

    Plain integers, read by a collector at scrape time: no lock, no label lookup
    per quote.
    """

    received: int = 0
    forwarded: int = 0
    writes: int = 0
    conflated: int = 0
    flushes: int = 0


class _HotCollector(Collector):
    def __init__(self, hot: HotCounters) -> None:
        self.hot = hot

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "quotes_upstream_messages",
            "Messages received from the upstream source.",
            value=self.hot.received,
        )
        yield CounterMetricFamily(
            "quotes_forwarded",
            "Quotes sent to clients (WebSocket frames, SSE events).",
            value=self.hot.forwarded,
        )
        yield CounterMetricFamily(
            "quotes_socket_writes",
            "Socket writes that carried those frames (frames per write = forwarded / writes).",
            value=self.hot.writes,
        )
        yield CounterMetricFamily(
            "quotes_flushes",
            "Write rounds: passes over the clients with new frames (one write each).",
            value=self.hot.flushes,
        )
        yield CounterMetricFamily(
            "quotes_conflated",
            "Quotes not sent because a newer quote of the same ticker replaced them "
            "while a client was behind.",
            value=self.hot.conflated,
        )


class _ShardCollector(Collector):
    def __init__(self, health: Callable[[], ShardHealth]) -> None:
        self.health = health

    def collect(self) -> Iterator[GaugeMetricFamily]:
        h = self.health()
        by_state = GaugeMetricFamily(
            "quotes_upstream_shards",
            "Shards of the sharded upstream by health: healthy, lost (within the grace "
            "period) or down (past it, or never up).",
            labels=["state"],
        )
        by_state.add_metric(["healthy"], h["healthy"])
        by_state.add_metric(["lost"], len(h["lost"]))
        by_state.add_metric(["down"], len(h["down"]))
        yield by_state
        yield GaugeMetricFamily(
            "quotes_upstream_shards_subscribed",
            "Shard channels currently subscribed (the shards some client needs).",
            value=h["subscribed"],
        )


class _HistoryCollector(Collector):
    def __init__(self, status: Callable[[], Mapping[str, object]]) -> None:
        self.status = status

    def collect(self) -> Iterator[Metric]:
        h = self.status()
        yield GaugeMetricFamily(
            "quotes_history_window",
            "Quotes held in this process's resume window (with --history redis, its mirror "
            "of the deployment's).",
            value=_number(h["window"]),
        )
        yield GaugeMetricFamily(
            "quotes_stream_seq",
            "The newest stream position published here.",
            value=_number(h["seq"]),
        )
        info = InfoMetricFamily(
            "quotes_history", "Where positions belong (backend) and the current epoch."
        )
        info.add_metric([], {"backend": str(h["backend"]), "epoch": str(h["epoch"])})
        yield info
        if "role" in h:
            yield GaugeMetricFamily(
                "quotes_history_sequencing",
                "1 while this instance holds the sequencer's lease (--history redis), else 0.",
                value=1 if h["role"] == "sequencing" else 0,
            )
            takeovers = CounterMetricFamily(
                "quotes_history_takeovers",
                "Sequencer leases this instance took, by outcome: continued (the epoch went "
                "on) or new_epoch (continuity not provable).",
                labels=["outcome"],
            )
            new = _number(h["new_epochs"])
            takeovers.add_metric(["continued"], _number(h["takeovers"]) - new)
            takeovers.add_metric(["new_epoch"], new)
            yield takeovers


def _number(value: object) -> float:
    assert isinstance(value, int | float)
    return float(value)


class Metrics:
    """The server's metrics, in a registry of their own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.hot = HotCounters()
        r.register(_HotCollector(self.hot))
        self.connections = Gauge("quotes_ws_connections", "Open WebSocket connections.", registry=r)
        self.handshakes = Counter(
            "quotes_ws_handshakes",
            "WebSocket handshakes by outcome: accepted, bad_request (400), unauthorized (401), "
            "origin_forbidden (403), forbidden (403, token grant), ip_limit (429), "
            "over_capacity (503), upstream_unavailable (503).",
            ["outcome"],
            registry=r,
        )
        self.disconnects = Counter(
            "quotes_ws_disconnects",
            "Closed WebSocket connections by close code: 1000-1015 as is, any other code "
            "as other, none when the connection ended without one.",
            ["code"],
            registry=r,
        )
        # the SSE endpoint's own series, with the WebSocket ones' labels: the answers
        # before streaming are the same, only the transport differs
        self.sse_streams = Gauge(
            "quotes_sse_streams", "Open Server-Sent Events streams.", registry=r
        )
        self.sse_handshakes = Counter(
            "quotes_sse_handshakes",
            "Server-Sent Events requests by outcome, as quotes_ws_handshakes (a refusal is the "
            "same HTTP status, from the same checks).",
            ["outcome"],
            registry=r,
        )
        self.sse_disconnects = Counter(
            "quotes_sse_disconnects",
            "Ended Server-Sent Events streams by the close code the server ended them with "
            "(1001 shutdown, 1011 upstream lost, 1013 slow consumer, 1008 token expired), none "
            "when the client went away.",
            ["code"],
            registry=r,
        )
        self.invalid = Counter(
            "quotes_upstream_invalid",
            "Upstream messages dropped as invalid, by reason.",
            ["reason"],
            registry=r,
        )
        self.slow_closes = Counter(
            "quotes_slow_consumer_closes",
            "Clients closed with 1013 for making no progress.",
            registry=r,
        )
        self.upstream_state = Gauge(
            "quotes_upstream_state",
            "1 for the upstream source's current state, 0 for the others.",
            ["state"],
            registry=r,
        )
        self.upstream_up = Gauge(
            "quotes_upstream_up", "1 while new handshakes are accepted, else 0.", registry=r
        )
        self.demo_feed = Gauge(
            "quotes_demo_feed",
            "1 while this server streams the built-in demo feed's synthetic quotes (never real "
            "prices), else 0.",
            registry=r,
        )
        self.upstream_reconnects = Counter(
            "quotes_upstream_reconnects",
            "Successful re-subscriptions to the upstream after a failure.",
            registry=r,
        )
        self.latency = Histogram(
            "quotes_delivery_latency_seconds",
            "Quote timestamp to the moment its frame was handed to the socket; "
            "sampled once per flush (the newest quote of that event-loop turn, after its writes).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.gc_pause = Histogram(
            "quotes_gc_pause_seconds",
            "How long each of the process's garbage collections took, by generation; the "
            "event loop waits for it. 2 is a full collection, which walks every object "
            "the process holds (each open connection's among them).",
            ["generation"],
            buckets=_GC_BUCKETS,
            registry=r,
        )
        self.gc_timer = GcTimer(self.gc_pause)
        """Times the collections while installed (the runtime, from start to stop)."""
        self.limit_hits = Counter(
            "quotes_limit_hits",
            "Connections refused or closed by a protocol limit: handshake_timeout (408 or "
            "close), url_too_long (414), headers_too_large (431), invalid_request (400), "
            "request_timeout (408 or close), body_too_large (413), http_connections (503), "
            "inbound_rate (1008), token_expired (1008), client_queue (1013).",
            ["limit"],
            registry=r,
        )
        for outcome in HANDSHAKE_OUTCOMES:
            self.handshakes.labels(outcome)
            self.sse_handshakes.labels(outcome)
        for code in ("none", "1001", "1008", "1011", "1013"):  # every end an SSE stream has
            self.sse_disconnects.labels(code)
        self.open = {"ws": self.connections, "sse": self.sse_streams}
        """The open-client gauge of each transport (a client's ``kind``)."""
        self.outcomes = {"ws": self.handshakes, "sse": self.sse_handshakes}
        self.ended = {"ws": self.disconnects, "sse": self.sse_disconnects}
        for limit in (*LIMIT_EVENTS, "token_expired", "client_queue"):
            self.limit_hits.labels(limit)
        for reason in ("json", "encoding", "schema", "ticker", "non_finite", "too_large"):
            self.invalid.labels(reason)
        self.set_state(SourceState.CONNECTING)

    def watch_shards(self, health: Callable[[], ShardHealth]) -> None:
        """Export a sharded source's per-shard health, read at scrape time."""
        self.registry.register(_ShardCollector(health))

    def watch_history(self, status: Callable[[], Mapping[str, object]]) -> None:
        """Export the stream's positions and the history's status, read at scrape time."""
        self.registry.register(_HistoryCollector(status))

    def set_state(self, state: SourceState) -> None:
        """Record the upstream source's state."""
        for s in SourceState:
            self.upstream_state.labels(s.value).set(1 if s is state else 0)
        self.upstream_up.set(1 if state.accepting else 0)
