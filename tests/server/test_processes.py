"""Process-level behaviour: several servers on one Redis, workers, SIGTERM, the CLIs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from quotes_core.testing import upstream_message
from quotes_server.settings import NO_UPSTREAM
from tests.helpers.processes import RedisServer, free_port, python_module, wait_until
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.uvicorn import uvicorn_factory
from tests.helpers.ws import collect_until, open_ws, wait_closed

pytestmark = pytest.mark.anyio


def subscribers(redis: RedisServer) -> int:
    reply = redis.command("PUBSUB", "NUMSUB", CHANNEL)
    return int(reply.split(b"\r\n")[-2][1:])


async def test_two_servers_on_one_redis_deliver_the_same_quotes(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Two server processes, one subscription each, deliver the same quotes."""
    one, two = start_server(redis_server), start_server(redis_server)
    assert subscribers(redis_server) == 2
    async with (
        open_ws(f"{one.ws_url}/ws/quotes?tickers=AAPL,END") as a,
        open_ws(f"{two.ws_url}/v1/ws?tickers=AAPL,END") as b,
    ):
        msgs = [upstream_message("AAPL", i) for i in range(50)] + [upstream_message("END", 50)]
        redis_server.publish_many(CHANNEL, msgs)
        got = await asyncio.gather(
            *(collect_until(ws, lambda q: q["ticker"] == "END") for ws in (a, b))
        )
    assert got[0] == got[1]
    assert [q["volume"] for q in got[0]] == list(range(51))


async def test_workers_each_subscribe(redis_server: RedisServer, start_server: StartServer) -> None:
    """--workers 2 runs two processes, each with its own Redis subscription."""
    server = start_server(redis_server, workers=2)
    wait_until(lambda: subscribers(redis_server) == 2, what="two subscriptions")
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL") as ws:
        redis_server.publish(CHANNEL, upstream_message("AAPL", 1))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["volume"] == 1


def test_no_upstream_is_a_start_up_error_not_demo_data() -> None:
    """Without a Redis URL the server serves nothing rather than synthetic prices."""
    out = subprocess.run(
        python_module("quotes_server"),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode != 0
    assert f"quotes-server: {NO_UPSTREAM}" in out.stderr
    assert "Uvicorn running" not in out.stderr


def test_the_uvicorn_factory_without_an_upstream_says_why() -> None:
    """The same refusal when the app is started by a plain ``uvicorn --factory``."""
    port = str(free_port())
    out = subprocess.run(
        [a.replace("{port}", port) for a in uvicorn_factory()],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode != 0
    assert NO_UPSTREAM in out.stderr


def test_demo_and_a_redis_url_exclude_each_other() -> None:
    """--demo with a Redis URL is refused: demo prices must never hide the upstream's."""
    out = subprocess.run(
        python_module("quotes_server", "--demo", "--redis-url", "redis://127.0.0.1:6379/0"),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode != 0
    assert "demo and redis_url exclude each other" in out.stderr


def test_demo_feed_refuses_several_workers() -> None:
    """The demo feed with --workers 2 is refused with a clear message."""
    out = subprocess.run(
        python_module("quotes_server", "--demo", "--workers", "2"),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode != 0
    assert "several workers would stream different prices" in out.stderr


def test_invalid_setting_is_a_clear_error() -> None:
    """A nonsense option value exits non-zero naming the setting."""
    out = subprocess.run(
        python_module("quotes_server", "--port", "not-a-port"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "invalid settings: port" in out.stderr


async def test_sigterm_closes_clients_with_1001_and_unsubscribes(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """SIGTERM: every client gets 1001, the Redis subscription goes away, the process exits."""
    server = start_server(redis_server)
    assert subscribers(redis_server) == 1
    async with (
        open_ws(f"{server.ws_url}/ws/quotes") as a,
        open_ws(f"{server.ws_url}/ws?tickers=AAPL") as b,
    ):
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        for ws in (a, b):
            closed = await wait_closed(ws, 20)
            assert closed.rcvd is not None
            assert (closed.rcvd.code, closed.rcvd.reason) == (1001, "Server shutting down")
    assert server.stop() in (0, -signal.SIGTERM)
    assert subscribers(redis_server) == 0


def test_quotes_publish_stdin_and_synthetic(redis_server: RedisServer) -> None:
    """quotes-publish sends stdin lines verbatim and a counted synthetic feed."""
    listener = subprocess.Popen(
        ["redis-cli", "-p", str(redis_server.port), "SUBSCRIBE", CHANNEL],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: subscribers(redis_server) == 1, what="listener")
        lines = b'{"ticker":"AAPL"}\nnot json\n\n{"x":1}\n'
        out = subprocess.run(
            python_module("quotes_server.publish", "--redis-url", redis_server.url, "--stdin"),
            input=lines,
            capture_output=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert b"published 3 message(s)" in out.stderr
        out = subprocess.run(
            [
                *python_module("quotes_server.publish"),
                "--redis-url", redis_server.url,
                "--count", "25", "--rate", "1000", "--tickers", "5", "--seed", "1",
            ],
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert b"published 25 message(s)" in out.stderr
    finally:
        listener.terminate()
        received, _ = listener.communicate(timeout=10)
    payloads = [ln for ln in received.splitlines() if ln.startswith("{")]
    assert payloads[:2] == ['{"ticker":"AAPL"}', '{"x":1}']
    assert len(payloads) == 2 + 25
    assert {json.loads(p)["ticker"] for p in payloads[2:]} <= {
        "AAPL", "MSFT", "GOOGL", "GOOG", "AMZN",
    }  # fmt: skip
    assert "not json" in received


def test_server_cli_help_lists_env_vars() -> None:
    """--help names every option's environment variable."""
    out = subprocess.run(
        [sys.executable, "-m", "quotes_server", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0
    for env in ("QUOTES_REDIS_URL", "QUOTES_CHANNEL", "QUOTES_CORS_ORIGINS", "QUOTES_WORKERS"):
        assert env in out.stdout


def test_server_cli_help_states_each_default_as_the_settings_have_it() -> None:
    """Every option's help says its default, and says the one ``Settings`` applies."""
    from quotes_server.__main__ import _OPTIONS
    from quotes_server.settings import Settings

    def shown(value: object) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, list):
            return ",".join(map(str, value)) or "none"
        return str(value)

    for name, (_env, help_text) in _OPTIONS.items():
        match = re.search(r"\(default ([^;:)]*)", help_text)
        assert match is not None, f"--{name} does not state its default"
        default = Settings.model_fields[name].default
        if default is not None:
            assert match.group(1) == shown(default), name


def test_quotes_publish_help_shows_defaults_and_reads_the_server_env(
    redis_server: RedisServer,
) -> None:
    """--help shows every default; QUOTES_REDIS_URL and QUOTES_CHANNEL are its defaults."""
    env = {**os.environ, "QUOTES_REDIS_URL": redis_server.url, "QUOTES_CHANNEL": "from.env"}
    out = subprocess.run(
        python_module("quotes_server.publish", "--help"), capture_output=True, text=True, env=env
    )
    assert out.returncode == 0
    help_text = " ".join(out.stdout.split())
    for shown in ("(default: from.env)", "(default: 200.0)", "(default: single)"):
        assert shown in help_text
    assert redis_server.url in help_text
    out = subprocess.run(
        python_module("quotes_server.publish", "--count", "3", "--rate", "1000"),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "published 3 message(s) to 'from.env'" in out.stderr
