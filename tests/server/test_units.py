"""Pure pieces of the server: settings, origin check, log rate limit, demo feed."""

from __future__ import annotations

import logging

import pytest

from quotes_core import parse_quote
from quotes_server.logs import RateLimitedLog, truncate
from quotes_server.settings import Settings
from quotes_server.sources.demo import SYMBOLS, DemoFeed


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """QUOTES_* variables configure the server; cors origins are a comma list."""
    monkeypatch.setenv("QUOTES_CORS_ORIGINS", " https://a.example/ , http://localhost:3000 ")
    monkeypatch.setenv("QUOTES_REDIS_URL", "redis://127.0.0.1:7000/0")
    monkeypatch.setenv("QUOTES_GRACE_PERIOD", "2.5")
    s = Settings()
    assert s.cors_origins == ["https://a.example", "http://localhost:3000"]
    assert (s.redis_url, s.grace_period, s.channel, s.demo) == (
        "redis://127.0.0.1:7000/0", 2.5, "quotes.realtime", False,
    )  # fmt: skip


def test_blank_redis_url_is_no_url_and_no_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty QUOTES_REDIS_URL is no URL: the server then needs --demo to start."""
    monkeypatch.setenv("QUOTES_REDIS_URL", "  ")
    monkeypatch.delenv("QUOTES_DEMO", raising=False)
    settings = Settings()
    assert settings.redis_url is None
    assert not settings.demo
    assert settings.upstream_missing
    monkeypatch.setenv("QUOTES_DEMO", "1")
    assert not Settings().upstream_missing


@pytest.mark.parametrize(
    ("origins", "origin", "allowed"),
    [
        (["*"], "https://anything.example", True),
        (["*"], None, True),
        (["https://app.example"], None, True),
        (["https://app.example"], "https://app.example", True),
        (["https://app.example"], "https://app.example/", True),
        (["https://app.example"], "http://app.example", False),
        (["https://app.example"], "https://app.example:8443", False),
        (["https://app.example"], "https://evil.example", False),
        ([], "https://app.example", False),
    ],
)
def test_origin_check(origins: list[str], origin: str | None, allowed: bool) -> None:
    """Origins match exactly on scheme://host[:port]; no Origin header is always allowed."""
    assert Settings(cors_origins=origins).origin_allowed(origin) is allowed


def test_rate_limited_log(caplog: pytest.LogCaptureFixture) -> None:
    """Past the burst, records are counted and summarised in the next period."""
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("t"), burst=2, period=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="t"):
        for i in range(5):
            limited(logging.WARNING, "bad %d", i)
        assert [r.getMessage() for r in caplog.records] == ["bad 0", "bad 1"]
        assert limited.suppressed == 3
        now[0] = 10.0
        limited(logging.WARNING, "bad %d", 5)
    assert [r.getMessage() for r in caplog.records][2:] == [
        "(3 similar messages suppressed)",
        "bad 5",
    ]


def test_truncate_bounds_payloads() -> None:
    """Logged payloads are bounded and say how long they were."""
    assert truncate(b"abc") == "b'abc'"
    assert truncate(b"x" * 1000, 10) == "b'xxxxxxxxxx'... (1000 bytes)"


def test_demo_feed_produces_valid_distinct_symbols() -> None:
    """The demo feed's messages are valid quotes over distinct, valid symbols."""
    assert len(set(SYMBOLS)) == len(SYMBOLS) >= 300
    feed = DemoFeed(tickers=400, seed=7)
    assert len(set(feed.tickers)) == 400
    for _ in range(2000):
        q = parse_quote(feed.next_message()).quote
        assert q.low <= q.close <= q.high
        assert q.bid is not None
        assert q.ask is not None
        assert q.bid < q.ask
