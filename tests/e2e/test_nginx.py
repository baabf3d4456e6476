"""
The shipped nginx snippets (deploy/nginx/), installed as on a distribution's nginx
(conf.d and snippets under a minimal main config), run by the distribution's nginx in
front of two quotes-server processes on one private Redis: the contract works through
it, over ws:// and, with a generated certificate, over wss://.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from quotes_client import QuotesClient
from quotes_client.events import ConnectionEvent, Disconnected, Recovered
from quotes_core.testing import upstream_message
from tests.helpers.processes import (
    ROOT,
    RedisServer,
    ServerProcess,
    eventually,
    free_port,
    wait_until,
)
from tests.helpers.publishing import publishing
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.sse import SseReader
from tests.helpers.tls import make_pki
from tests.helpers.ws import collect_until, handshake_rejection, open_ws

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
NGINX_DIR = ROOT / "deploy" / "nginx"
SNIPPET = NGINX_DIR / "quotes.conf"
"""The conf.d snippet: map, log format, upstream, the plain-HTTP server."""
TLS_SNIPPET = NGINX_DIR / "quotes_tls.conf"
"""The second conf.d snippet: the TLS server."""
LOCATIONS = NGINX_DIR / "quotes-locations.conf"
"""The locations both servers include (from /etc/nginx/snippets/)."""
UPSTREAMS = ("server 127.0.0.1:8001 ", "server 127.0.0.1:8002 ")
"""The snippet's upstream servers: quotes-server@1 and @2 of the template unit."""
GOOD_ORIGIN = "http://quotes.example"
HINT = "X-Forwarded-For from"
"""The start of the server's hint about an ignored X-Forwarded-For."""

pytestmark = pytest.mark.anyio


def edited(path: Path, edits: dict[str, str]) -> str:
    """``path``'s text with each edit applied; each must apply exactly once."""
    text = path.read_text()
    for old, new in edits.items():
        assert text.count(old) == 1, f"{path.name} no longer has {old!r} exactly once"
        text = text.replace(old, new)
    return text


@dataclass(frozen=True)
class Certificate:
    """A server certificate for 127.0.0.1 and ``localhost``, and the CA that signed it."""

    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only (host names checked)."""
        return ssl.create_default_context(cafile=str(self.ca))


def make_certificate(folder: Path) -> Certificate:
    """A throwaway CA and a server certificate it signs, valid for one day
    (:func:`tests.helpers.tls.make_pki`)."""
    pki = make_pki(folder)
    return Certificate(pki.ca, pki.server_cert, pki.server_key)


def nginx_config(
    folder: Path,
    listen: int,
    upstreams: tuple[int, int],
    tls: tuple[int, Certificate] | None = None,
) -> Path:
    """
    Install the shipped snippets under ``folder`` as a distribution's nginx has them
    (``conf.d/quotes.conf``, with ``tls`` also ``conf.d/quotes_tls.conf``, and
    ``snippets/quotes-locations.conf``), with loopback ports and private paths, and
    write the minimal main config that includes them; return the main config's path.
    Every edit must apply exactly once, so a change to the snippets shows here.
    """
    (folder / "conf.d").mkdir(exist_ok=True)
    (folder / "snippets").mkdir(exist_ok=True)
    (folder / "conf.d" / SNIPPET.name).write_text(
        edited(
            SNIPPET,
            {
                UPSTREAMS[0]: f"server 127.0.0.1:{upstreams[0]} ",
                UPSTREAMS[1]: f"server 127.0.0.1:{upstreams[1]} ",
                "listen 80;": f"listen 127.0.0.1:{listen};",
            },
        )
    )
    (folder / "snippets" / "quotes-locations.conf").write_text(
        edited(
            LOCATIONS,
            {
                "access_log /var/log/nginx/access.log quotes;": (
                    f"access_log {folder}/access.log quotes;"
                )
            },
        )
    )
    if tls is not None:
        port, certificate = tls
        (folder / "conf.d" / TLS_SNIPPET.name).write_text(
            edited(
                TLS_SNIPPET,
                {
                    "listen 443 ssl;": f"listen 127.0.0.1:{port} ssl;",
                    "/etc/ssl/quotes/fullchain.pem;": f"{certificate.cert};",
                    "/etc/ssl/quotes/privkey.pem;": f"{certificate.key};",
                },
            )
        )
    temp_paths = "".join(
        f"    {kind}_temp_path {folder}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = folder / "nginx.conf"
    # what a distribution's nginx.conf amounts to here: a pid file, an error log and
    # an http block that includes conf.d/*.conf (relative includes resolve from here)
    main.write_text(
        "daemon off;\n"
        "worker_processes 1;\n"
        f"pid {folder}/nginx.pid;\n"
        f"error_log {folder}/error.log warn;\n"
        "events {\n    worker_connections 1024;\n}\n"
        "http {\n"
        f"{temp_paths}"
        f"    include {folder}/conf.d/*.conf;\n"
        "}\n"
    )
    return main


@dataclass(frozen=True)
class Front:
    """A running nginx: its plain-HTTP port, and its TLS port when it has one."""

    port: int
    tls_port: int | None = None


@contextlib.contextmanager
def nginx(
    folder: Path, upstreams: tuple[int, int], certificate: Certificate | None = None
) -> Iterator[Front]:
    """Run nginx (foreground, own prefix and pid file) on free ports; stop it by PID."""
    if NGINX is None:
        hint = "nginx not found: install it with `apt-get install nginx`"
        if os.environ.get("CI"):
            pytest.fail(hint, pytrace=False)
        pytest.skip(hint)
    front = Front(free_port(), free_port() if certificate is not None else None)
    tls = (front.tls_port, certificate) if front.tls_port and certificate else None
    conf = nginx_config(folder, front.port, upstreams, tls)
    argv = [NGINX, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:

        def up() -> bool:
            if proc.poll() is not None:
                log = (folder / "error.log").read_text(errors="replace")
                raise AssertionError(f"nginx exited with {proc.returncode}:\n{log}")
            try:
                url = f"http://127.0.0.1:{front.port}/health"
                with urllib.request.urlopen(url, timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_until(up, timeout=15, what="nginx answering /health")
        yield front
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)  # fast shutdown: open tunnels are cut
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)


def connections(server: ServerProcess) -> float:
    return server.metric("quotes_ws_connections")


async def poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Await ``condition`` (it reads other processes), failing at the deadline."""
    await eventually(condition, timeout=timeout, interval=0.05, what=what)


@pytest.mark.slow
async def test_contract_through_nginx(
    redis_server: RedisServer, start_server: StartServer, tmp_path: Path
) -> None:
    """Through nginx: handshake, filter, X-Forwarded-For, 403 bad origin, 1001 and failover."""
    settings = {"cors_origins": GOOD_ORIGIN, "trusted_proxies": "127.0.0.1"}
    one = start_server(redis_server, **settings)
    two = start_server(redis_server, **settings)
    with publishing(redis_server, ["AAPL", "MSFT"]), nginx(tmp_path, (one.port, two.port)) as front:
        base = f"ws://127.0.0.1:{front.port}/ws/quotes"

        # handshake and filtering (MSFT is published too), with the client's address forwarded
        first = 0
        async with open_ws(
            f"{base}?tickers=AAPL",
            origin=GOOD_ORIGIN,
            additional_headers={"X-Forwarded-For": "203.0.113.9"},
        ) as ws:
            quotes = await collect_until(ws, lambda _q: True, timeout=20)
            first = quotes[0]["volume"]
            quotes += await collect_until(ws, lambda q: q["volume"] >= first + 5, timeout=20)
        assert {q["ticker"] for q in quotes} == {"AAPL"}
        assert "connected from 203.0.113.9" in one.log() + two.log()

        # origin policy: nginx passes Origin through untouched
        status, _headers, body = await handshake_rejection(base, origin="http://evil.example")
        assert status == 403
        assert "not allowed" in body

        # rolling restart: SIGTERM the instance holding the client; it reconnects to the other
        events: list[ConnectionEvent] = []
        client = QuotesClient(base, tickers=["AAPL"], origin=GOOD_ORIGIN, on_event=events.append)
        async with client:
            await client.wait_connected()
            await poll(lambda: connections(one) + connections(two) == 1, 15, "one connection")
            holder, other = (one, two) if connections(one) == 1 else (two, one)
            before = client.stats.received
            await asyncio.to_thread(holder.stop)  # SIGTERM by PID, as systemd or compose would
            await poll(lambda: any(isinstance(e, Disconnected) for e in events), 20, "a disconnect")
            codes = [e.code for e in events if isinstance(e, Disconnected)]
            assert codes == [1001]
            await poll(lambda: connections(other) == 1, 30, "reconnected to the other instance")
            after = client.stats.received
            await poll(lambda: client.stats.received > after, 20, "quotes after the failover")
            assert after >= before
    # nginx is trusted: no hint about an ignored X-Forwarded-For
    assert HINT not in one.log() + two.log()


@pytest.mark.slow
async def test_a_rolling_restart_behind_nginx_resumes_exactly_with_history_redis(
    redis_server: RedisServer, start_server: StartServer, tmp_path: Path
) -> None:
    """
    ``--history redis`` behind nginx: a ``QuotesClient(resume=True)`` of every ticker
    is cut off by a rolling restart (SIGTERM, 1001), nginx sends it to the other
    instance, and its resume there is ``recovered: true`` with no quote missed (on
    a stream of every ticker a missed quote shows as a ``Gap``). The client changes
    nothing: the positions are the deployment's.
    """
    settings = {"trusted_proxies": "127.0.0.1", "history": "redis", "history_lease": "1"}
    one = start_server(redis_server, **settings)
    two = start_server(redis_server, **settings)
    wait_until(
        lambda: any('"sequencing"' in s.get("/ready")[1] for s in (one, two)),
        what="an instance sequencing",
    )
    with publishing(redis_server, ["AAPL", "MSFT"]), nginx(tmp_path, (one.port, two.port)) as front:
        events: list[ConnectionEvent] = []
        base = f"ws://127.0.0.1:{front.port}/ws/quotes"
        client = QuotesClient(base, resume=True, on_event=events.append)
        async with client:
            await client.wait_connected()
            await poll(lambda: client.stats.received >= 10, 20, "quotes before the restart")
            await poll(lambda: connections(one) + connections(two) == 1, 15, "one connection")
            holder, other = (one, two) if connections(one) == 1 else (two, one)
            await asyncio.to_thread(holder.stop)  # SIGTERM by PID, as systemd would
            await poll(lambda: connections(other) == 1, 30, "reconnected to the other instance")
            after = client.stats.received
            await poll(lambda: client.stats.received >= after + 10, 20, "quotes after it")
        assert [e.code for e in events if isinstance(e, Disconnected)] == [1001]
        recovered = [e for e in events if isinstance(e, Recovered)]
        assert [r.recovered for r in recovered] == [True]
        assert client.stats.gaps == 0
        assert client.stats.missed == 0


def fetch(url: str) -> tuple[int, bytes]:
    """``GET url``: the status and body (errors included)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def test_nginx_hides_operator_endpoints_and_tokens(
    redis_server: RedisServer, start_server: StartServer, tmp_path: Path
) -> None:
    """
    Through nginx, /metrics and /ready answer 404 (the servers behind it serve both on
    their own port here), and a token in the query string never reaches the access log.
    These servers do not trust nginx with X-Forwarded-For, and they say so.
    """
    one = start_server(redis_server)
    two = start_server(redis_server)
    assert one.get("/metrics")[0] == 200  # so a 404 below is nginx's doing
    with nginx(tmp_path, (one.port, two.port)) as front:
        base = f"http://127.0.0.1:{front.port}"
        for path in ("/metrics", "/ready", "/metrics?x=1"):
            status, body = await asyncio.to_thread(fetch, base + path)
            assert status == 404, path
            assert b"nginx" in body  # nginx's own page: never sent upstream
        status, _body = await asyncio.to_thread(fetch, f"{base}/health?access_token=SECRET-1")
        assert status == 200
        ws_url = f"ws://127.0.0.1:{front.port}/ws/quotes?tickers=AAPL&access_token=SECRET-2"
        async with open_ws(ws_url):
            pass
        access = tmp_path / "access.log"

        def logged() -> bool:
            text = access.read_text() if access.exists() else ""
            return any("/ws/quotes" in line and '" 101 ' in line for line in text.splitlines())

        # nginx writes a tunnel's line when it closes
        await poll(logged, 15, "the WebSocket request in the access log")
        text = access.read_text()
        # these servers do not trust nginx: the one that took the handshake says so
        await poll(lambda: HINT in one.log() + two.log(), 15, "the trusted-proxies hint")
        assert "QUOTES_TRUSTED_PROXIES" in one.log() + two.log()
    assert '"GET /health HTTP/1.1" 200' in text
    assert '"GET /metrics HTTP/1.1" 404' in text
    assert "SECRET" not in text
    assert "access_token" not in text
    assert '"GET /ws/quotes HTTP/1.1" 101' in text
    assert (
        one.metric("quotes_ws_handshakes_total", 'outcome="accepted"')
        + two.metric("quotes_ws_handshakes_total", 'outcome="accepted"')
        == 1
    )


@pytest.mark.slow
async def test_wss_through_nginx(
    redis_server: RedisServer, start_server: StartServer, tmp_path: Path
) -> None:
    """
    nginx terminates TLS with quotes_tls.conf and a generated certificate: a plain
    ``websockets`` client and ``QuotesClient`` (``connect_options={"ssl": ...}``) get
    quotes over ``wss://``; a client that does not trust the CA is refused the connection.
    """
    certificate = make_certificate(tmp_path)
    context = certificate.client_context()
    settings = {"cors_origins": GOOD_ORIGIN, "trusted_proxies": "127.0.0.1"}
    one = start_server(redis_server, **settings)
    two = start_server(redis_server, **settings)
    with (
        publishing(redis_server, ["AAPL", "MSFT"]),
        nginx(tmp_path, (one.port, two.port), certificate) as front,
    ):
        base = f"wss://127.0.0.1:{front.tls_port}/ws/quotes"
        async with open_ws(
            f"{base}?tickers=AAPL",
            ssl=context,
            origin=GOOD_ORIGIN,
            additional_headers={"X-Forwarded-For": "203.0.113.7"},
        ) as ws:
            quotes = await collect_until(ws, lambda _q: True, timeout=20)
            quotes += await collect_until(
                ws, lambda q: q["volume"] >= quotes[0]["volume"] + 3, timeout=20
            )
        assert {q["ticker"] for q in quotes} == {"AAPL"}
        # the address nginx forwarded over TLS reached the server, as over plain HTTP
        assert "connected from 203.0.113.7" in one.log() + two.log()

        # the same URL, with the system's trust store only: the certificate is refused
        with pytest.raises(ssl.SSLCertVerificationError):
            async with open_ws(base, ssl=ssl.create_default_context()):
                pass

        received: list[str] = []
        client = QuotesClient(
            base, tickers=["MSFT"], origin=GOOD_ORIGIN, connect_options={"ssl": context}
        )
        async with client:
            with anyio.fail_after(20):
                async for quote in client:
                    received.append(quote.ticker)
                    if len(received) == 3:
                        break
        assert received == ["MSFT"] * 3
        assert client.url.startswith("wss://")
    assert HINT not in one.log() + two.log()


async def test_sse_through_nginx_streams_each_event_as_it_comes(
    redis_server: RedisServer, start_server: StartServer, tmp_path: Path
) -> None:
    """Through nginx's SSE location: unbuffered events, Last-Event-ID resume, client address."""
    settings = {"trusted_proxies": "127.0.0.1"}
    one = start_server(redis_server, **settings)
    two = start_server(redis_server, **settings)
    with nginx(tmp_path, (one.port, two.port)) as front:
        async with await SseReader.open(
            front.port, "/sse/quotes?tickers=AAPL", {"X-Forwarded-For": "203.0.113.9"}
        ) as sse:
            assert sse.status == 200
            assert sse.headers["content-type"] == "text/event-stream"
            assert await sse.event() == {"retry": "1000"}
            await poll(
                lambda: one.metric("quotes_sse_streams") + two.metric("quotes_sse_streams") == 1,
                timeout=10,
                what="the stream registered",
            )
            # one quote at a time, each read before the next is published: a buffering
            # proxy would hold them back
            for n in (1, 2):
                redis_server.publish(CHANNEL, upstream_message("AAPL", n))
                event = await sse.event()
                assert json.loads(event["data"])["volume"] == n
            last_id = event["id"]
        redis_server.publish(CHANNEL, upstream_message("AAPL", 3))
        target = "/v1/sse/quotes?tickers=AAPL"
        async with await SseReader.open(front.port, target, {"Last-Event-ID": last_id}) as again:
            await again.event()  # retry
            recovered = await again.event()
            assert recovered["event"] == "recovered"
            # the window is per process (--history memory): whichever instance nginx
            # picked, it answers the resume; the other says it cannot recover
            if json.loads(recovered["data"])["recovered"]:
                assert json.loads((await again.event())["data"])["volume"] == 3
    assert "connected from 203.0.113.9" in one.log() + two.log()
