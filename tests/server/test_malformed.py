"""Malformed upstream messages are dropped, counted and logged; nobody is disconnected."""

from __future__ import annotations

import json
import weakref

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotes_core.testing import (
    MalformedPayload,
    UpstreamPayload,
    malformed_payloads,
    upstream_message,
    upstream_payloads,
)
from tests.helpers.processes import RedisServer, ServerProcess
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import collect_until, open_ws

pytestmark = pytest.mark.anyio

REASONS = ("json", "encoding", "schema", "ticker", "non_finite", "too_large")

GOOD = json.loads(upstream_message("AAPL"))

BAD: list[tuple[bytes, str]] = [
    (b"not json at all", "json"),
    (b'{"ticker": "AAPL", "close": ', "json"),
    (b"\xff\xfe\xfa garbage", "encoding"),
    (b"x" * 100_000, "too_large"),
    (b"[1, 2, 3]", "schema"),
    (json.dumps({**GOOD, "volume": "1000"}).encode(), "schema"),
    (json.dumps({**GOOD, "volume": True}).encode(), "schema"),
    (json.dumps({**GOOD, "close": "150.9"}).encode(), "schema"),
    (json.dumps({**GOOD, "timestamp": "2026-02-12T10:30:00"}).encode(), "schema"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "open"}).encode(), "schema"),
    (json.dumps({**GOOD, "ticker": "AAPL;DROP"}).encode(), "ticker"),
    (json.dumps({**GOOD, "close": float("nan")}).encode(), "non_finite"),
    (json.dumps({**GOOD, "high": float("inf")}).encode(), "non_finite"),
]


async def test_malformed_payloads_never_reach_or_close_clients(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Every kind of bad payload is dropped and counted while a healthy client keeps going."""
    server = start_server(redis_server)
    messages: list[bytes] = []
    for i, (bad, _reason) in enumerate(BAD):
        messages += [upstream_message("AAPL", i), bad]
    messages.append(upstream_message("AAPL", 999))
    async with open_ws(f"{server.ws_url}/ws/quotes") as ws:
        redis_server.publish_many(CHANNEL, messages)
        got = await collect_until(ws, lambda q: q["volume"] == 999)
    assert [q["volume"] for q in got] == [*range(len(BAD)), 999]
    reasons: dict[str, int] = {}
    for _, reason in BAD:
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in reasons.items():
        assert server.metric("quotes_upstream_invalid_total", f'reason="{reason}"') == n, reason
    assert server.metric("quotes_upstream_messages_total") == len(messages)
    log = server.log()
    assert "dropped invalid upstream message (json" in log
    assert "x" * 1000 not in log  # payloads are truncated in logs


_servers: weakref.WeakKeyDictionary[StartServer, ServerProcess] = weakref.WeakKeyDictionary()


def invalid_counts(server: ServerProcess) -> dict[str, float]:
    counts = {}
    for reason in REASONS:
        try:
            counts[reason] = server.metric("quotes_upstream_invalid_total", f'reason="{reason}"')
        except KeyError:
            counts[reason] = 0.0
    return counts


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=st.lists(upstream_payloads() | malformed_payloads(), min_size=1, max_size=12))
async def test_generated_payloads_are_forwarded_or_counted_by_reason(
    redis_server: RedisServer,
    start_server: StartServer,
    batch: list[UpstreamPayload | MalformedPayload],
) -> None:
    """
    Through real Redis, every generated valid payload reaches the client canonically, in
    order, and every malformed one is dropped and counted under exactly its reason.
    """
    server = _servers.get(start_server) or _servers.setdefault(
        start_server, start_server(redis_server)
    )  # one server for all the examples: Hypothesis reuses the test's fixtures
    before = invalid_counts(server)
    end = upstream_message("ZZZZ", 999)
    async with open_ws(f"{server.ws_url}/ws/quotes") as ws:
        redis_server.publish_many(CHANNEL, [p.raw for p in batch] + [end])
        got = await collect_until(ws, lambda q: q["ticker"] == "ZZZZ")
    valid = [p.quote for p in batch if isinstance(p, UpstreamPayload)]
    assert got[:-1] == [json.loads(q.to_json()) for q in valid]
    after = invalid_counts(server)
    for reason in REASONS:
        expected = sum(isinstance(p, MalformedPayload) and p.reason == reason for p in batch)
        assert after[reason] - before[reason] == expected, reason
