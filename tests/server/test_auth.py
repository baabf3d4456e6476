"""Optional token auth: static tokens and JWTs, ticker grants, expiry, and tokens kept secret."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from quotes_core.testing import upstream_message
from tests.helpers.processes import ROOT, RedisServer, free_port, python_module
from tests.helpers.server import CHANNEL, StartServer
from tests.helpers.ws import handshake_rejection, open_ws, recv_json, wait_closed

pytestmark = pytest.mark.anyio

SECRET = "test-secret-0123456789-0123456789-abcdef"
STATIC = "st-4f1d9a0c7e"
LIMITED = "st-limited-77b2"


def hs256(exp_in: float = 600, **claims: object) -> str:
    return jwt.encode({"exp": int(time.time() + exp_in), **claims}, SECRET, algorithm="HS256")


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# comment\n{LIMITED} aapl,MSFT\n\n")
    return path


async def _stream_one(redis: RedisServer, url: str, **kwargs: object) -> None:
    async with open_ws(url, **kwargs) as ws:
        redis.publish(CHANNEL, upstream_message("AAPL", 1))
        assert (await recv_json(ws))["ticker"] == "AAPL"


async def test_static_tokens_by_header_or_query(
    redis_server: RedisServer, start_server: StartServer, tokens_file: Path
) -> None:
    """A configured token opens the stream by header or query; none or a wrong one is 401."""
    server = start_server(redis_server, auth_tokens=f"{STATIC},other", auth_tokens_file=tokens_file)
    base = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    await _stream_one(redis_server, base, additional_headers={"Authorization": f"Bearer {STATIC}"})
    await _stream_one(redis_server, f"{base}&access_token={STATIC}")
    await _stream_one(redis_server, f"{base}&access_token={LIMITED}")
    status, headers, body = await handshake_rejection(base)
    assert status == 401
    assert headers["WWW-Authenticate"] == "Bearer"
    assert "token is required" in body
    status, headers, body = await handshake_rejection(f"{base}&access_token=wrong-{STATIC}")
    assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer, error="invalid_token"')
    assert STATIC not in body
    status, _h, _b = await handshake_rejection(
        base, additional_headers={"Authorization": "Basic x"}
    )
    assert status == 401
    assert server.metric("quotes_ws_handshakes_total", 'outcome="unauthorized"') == 3


async def test_ticker_grants_limit_what_a_token_subscribes(
    redis_server: RedisServer, start_server: StartServer, tokens_file: Path
) -> None:
    """A token limited to some tickers gets 403 for any other ticker or for everything."""
    server = start_server(redis_server, auth_tokens_file=tokens_file, jwt_secret=SECRET)
    base = f"{server.ws_url}/ws/quotes"
    await _stream_one(redis_server, f"{base}?tickers=aapl,msft&access_token={LIMITED}")
    for token in (LIMITED, hs256(tickers=["AAPL"]), hs256(tickers="AAPL,MSFT")):
        for query in ("tickers=AAPL,TSLA", "tickers=*", ""):
            status, _h, body = await handshake_rejection(f"{base}?{query}&access_token={token}")
            assert status == 403
            assert "does not grant" in body
    await _stream_one(redis_server, f"{base}?tickers=AAPL&access_token={hs256(tickers=['aapl'])}")
    await _stream_one(redis_server, f"{base}?access_token={hs256(tickers='*')}")
    assert server.metric("quotes_ws_handshakes_total", 'outcome="forbidden"') == 9


async def test_an_empty_grant_grants_nothing(
    redis_server: RedisServer, start_server: StartServer, tmp_path: Path
) -> None:
    """JWTs whose tickers claim is empty, and a tokens-file line with an empty list, get 403."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{STATIC} ,\n{LIMITED}\n")
    server = start_server(redis_server, auth_tokens_file=tokens, jwt_secret=SECRET)
    base = f"{server.ws_url}/ws/quotes"
    empty = [hs256(tickers=claim) for claim in ([], "", None, " , ", [" "])]
    for token in [*empty, STATIC]:
        for query in ("tickers=AAPL", "tickers=*", ""):
            status, _h, body = await handshake_rejection(f"{base}?{query}&access_token={token}")
            assert (status, body) == (403, "the token grants no tickers\n")
    assert server.metric("quotes_ws_handshakes_total", 'outcome="forbidden"') == 18
    # absent means every ticker, for a JWT and for a tokens-file line alike
    await _stream_one(redis_server, f"{base}?access_token={hs256()}")
    await _stream_one(redis_server, f"{base}?access_token={LIMITED}")
    for claim in (5, {"AAPL": True}, ["AAPL", 1]):
        status, _h, body = await handshake_rejection(
            f"{base}?tickers=AAPL&access_token={hs256(tickers=claim)}"
        )
        assert status == 401
        assert "tickers claim" in body


async def test_actions_outside_a_jwt_grant_are_forbidden(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A JWT granting AAPL that subscribes to MSFT gets ``forbidden`` and keeps its filter."""
    server = start_server(redis_server, jwt_secret=SECRET)
    token = hs256(tickers=["AAPL"])
    async with open_ws(f"{server.ws_url}/ws/quotes?tickers=AAPL&seq=1&access_token={token}") as ws:
        await ws.send('{"action":"subscribe","tickers":["MSFT"]}')
        frame = await recv_json(ws)
        assert (frame["event"], frame["code"]) == ("error", "forbidden")
        redis_server.publish_many(
            CHANNEL, [upstream_message("MSFT", 1), upstream_message("AAPL", 2)]
        )
        quote = await recv_json(ws)
        assert (quote["ticker"], quote["volume"]) == ("AAPL", 2)


async def test_jwts_hs256_and_rs256(
    redis_server: RedisServer, start_server: StartServer, tmp_path: Path
) -> None:
    """Signed, unexpired JWTs are accepted; expired, unsigned-by-us or exp-less ones are 401."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "public.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    server = start_server(
        redis_server, jwt_secret=SECRET, jwt_public_key_file=pem, jwt_audience="quotes"
    )
    base = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    good_hs = hs256(aud="quotes", sub="alice")
    good_rs = jwt.encode({"exp": int(time.time()) + 600, "aud": "quotes"}, key, algorithm="RS256")
    await _stream_one(redis_server, base, additional_headers={"Authorization": f"Bearer {good_hs}"})
    await _stream_one(redis_server, f"{base}&access_token={good_rs}")
    other_key = jwt.encode({"exp": int(time.time()) + 600, "aud": "quotes"}, "x" * 40)
    bad = {
        "expired": hs256(-60, aud="quotes"),
        "other key": other_key,
        "no exp": jwt.encode({"aud": "quotes"}, SECRET, algorithm="HS256"),
        "wrong audience": hs256(aud="other"),
        "alg none": jwt.encode({"exp": int(time.time()) + 600, "aud": "quotes"}, None, "none"),
    }
    for name, token in bad.items():
        status, _h, body = await handshake_rejection(f"{base}&access_token={token}")
        assert status == 401, name
        assert token not in body
    assert "auth=jwt sub='alice'" in server.log()


async def test_jwt_leeway_tolerates_an_issuer_clock_ahead(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """With the default 5 s leeway, ``iat``/``nbf`` 2 s ahead pass; ``nbf`` an hour ahead is 401."""
    server = start_server(redis_server, jwt_secret=SECRET)
    base = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    ahead = int(time.time()) + 2
    await _stream_one(redis_server, f"{base}&access_token={hs256(iat=ahead, nbf=ahead)}")
    for claim in ("nbf", "iat"):
        late = hs256(**{claim: int(time.time()) + 3600})
        status, _h, body = await handshake_rejection(f"{base}&access_token={late}")
        assert status == 401
        assert f"not yet valid ({claim})" in body


async def test_jwt_leeway_on_expiry(redis_server: RedisServer, start_server: StartServer) -> None:
    """
    A token expired by less than the leeway opens a stream that is not closed at
    once; one expired by more is 401.
    """
    server = start_server(redis_server, jwt_secret=SECRET, jwt_leeway=60)
    base = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    # closed only at exp + leeway, 50 s from now: long after this quote arrives
    await _stream_one(redis_server, f"{base}&access_token={hs256(exp_in=-10)}")
    status, _h, body = await handshake_rejection(f"{base}&access_token={hs256(exp_in=-120)}")
    assert (status, body) == (401, "invalid token: expired\n")
    assert server.metric("quotes_limit_hits_total", 'limit="token_expired"') == 0


async def test_connection_closed_with_1008_when_its_jwt_expires(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A connection outlives its token by the leeway only: then it is closed with 1008."""
    server = start_server(redis_server, jwt_secret=SECRET, jwt_leeway=1)
    token = hs256(exp_in=2)
    async with open_ws(f"{server.ws_url}/ws/quotes?access_token={token}") as ws:
        closed = await wait_closed(ws, timeout=30)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (1008, "Token expired")
    assert server.metric("quotes_limit_hits_total", 'limit="token_expired"') == 1


async def test_origin_is_checked_before_the_token(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """A valid token from a disallowed Origin is still 403."""
    server = start_server(redis_server, auth_tokens=STATIC, cors_origins="https://app.example")
    url = f"{server.ws_url}/ws/quotes?access_token={STATIC}"
    status, _h, _b = await handshake_rejection(url, origin="https://evil.example")
    assert status == 403
    await _stream_one(redis_server, url, origin="https://app.example")


async def test_tokens_never_reach_the_log(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Accepted or refused, by header or query, no token appears in the server's log."""
    server = start_server(redis_server, auth_tokens=STATIC, jwt_secret=SECRET, log_level="debug")
    base = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    jwt_token = hs256()
    await _stream_one(redis_server, f"{base}&access_token={STATIC}")
    await _stream_one(redis_server, f"{base}&access_token={jwt_token}")
    await _stream_one(redis_server, base, additional_headers={"Authorization": f"Bearer {STATIC}"})
    for token in (f"{STATIC}x", hs256(-5), "a.b.c"):
        status, _h, _b = await handshake_rejection(f"{base}&access_token={token}")
        assert status == 401
    log = server.log()
    assert "access_token=[redacted]" in log
    for secret in (STATIC, jwt_token, SECRET):
        assert secret not in log


@pytest.mark.parametrize(
    "argv",
    [
        python_module("quotes_server", "--port", "{port}"),
        python_module("uvicorn", "quotes_server.app:create_app", "--factory", "--port", "{port}"),
    ],
    ids=["quotes-server", "uvicorn-factory"],
)
def test_short_hs256_secret_is_refused_at_start_up(argv: list[str]) -> None:
    """A QUOTES_JWT_SECRET under 32 bytes stops the server (CLI or factory) with a clear line."""
    short = "s" * 31
    port = str(free_port())
    done = subprocess.run(
        [a.replace("{port}", port) for a in argv],
        env={**os.environ, "QUOTES_JWT_SECRET": short},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    message = (
        "QUOTES_JWT_SECRET must be at least 32 bytes "
        "(HS256 needs a 256-bit key, RFC 7518 section 3.2); it has 31"
    )
    assert message in done.stderr
    assert short not in done.stderr + done.stdout
    if argv[2] == "quotes_server":
        assert (
            done.stderr.strip()
            == f"quotes-server: invalid settings: jwt_secret: Value error, {message}"
        )
