"""
The per-address cap counts an IPv6 client by its /64 (configurable), an IPv4 client
by its address: the key function's properties, then the real server behind a proxy
and on the IPv6 loopback. Who is trusted with ``X-Forwarded-For`` follows uvicorn's
rule, and a handshake whose header is ignored gets the server to say which setting
is missing, once.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st
from uvicorn.middleware.proxy_headers import _TrustedHosts

from quotes_server.addresses import address_key, trusted_peer
from quotes_server.app import PROXY_HINT_PERIOD
from tests.helpers.processes import RedisServer, ServerProcess, eventually, python_module
from tests.helpers.server import StartServer
from tests.helpers.ws import handshake_rejection, open_ws

pytestmark = pytest.mark.anyio

HALF = st.integers(0, 2**64 - 1)
"""One half of an IPv6 address: its /64 network bits, or its interface id."""


def v6(network: int, interface: int) -> str:
    return str(ipaddress.IPv6Address((network << 64) | interface))


def test_address_keys() -> None:
    """IPv6 keys are /64 networks (or exact at 128), IPv4 and IPv4-mapped keys the address."""
    assert address_key("2001:db8::1") == "2001:db8::/64"
    assert address_key("2001:db8:0:0:ffff::2") == "2001:db8::/64"
    assert address_key("2001:db8:0:1::1") == "2001:db8:0:1::/64"
    assert address_key("2001:db8:0:1::1", 48) == "2001:db8::/48"
    assert address_key("2001:0db8:0::0001", 128) == "2001:db8::1"
    assert address_key("::1") == "::/64"
    assert address_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("203.0.113.9") == "203.0.113.9"
    assert address_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert address_key("?") == "?"


@given(HALF, HALF, HALF)
def test_one_slash_64_is_one_client(network: int, a: int, b: int) -> None:
    """Two addresses in one /64 share a key."""
    assert address_key(v6(network, a)) == address_key(v6(network, b))


@given(HALF, HALF, HALF, HALF)
def test_different_slash_64s_are_different_clients(n1: int, n2: int, a: int, b: int) -> None:
    """Addresses in different /64s never share a key (IPv4-mapped ones are IPv4, below)."""
    first, second = ipaddress.IPv6Address(v6(n1, a)), ipaddress.IPv6Address(v6(n2, b))
    if n1 != n2 and first.ipv4_mapped is None and second.ipv4_mapped is None:
        assert address_key(str(first)) != address_key(str(second))


@given(st.ip_addresses(v=4), st.integers(32, 128))
def test_ipv4_is_untouched(ip: ipaddress.IPv4Address, prefix: int) -> None:
    """An IPv4 address is its own key, written or IPv4-mapped, whatever the IPv6 prefix."""
    assert address_key(str(ip), prefix) == str(ip)
    assert address_key(f"::ffff:{ip}", prefix) == str(ip)


@given(st.ip_addresses(v=6), st.ip_addresses(v=6))
def test_prefix_128_is_the_exact_address(
    a: ipaddress.IPv6Address, b: ipaddress.IPv6Address
) -> None:
    """With ipv6_prefix=128 two IPv6 addresses share a key only when they are equal."""
    if a.ipv4_mapped is None and b.ipv4_mapped is None:
        assert (address_key(str(a), 128) == address_key(str(b), 128)) == (a == b)


def test_trusted_peers() -> None:
    """Addresses, networks, IPv6, ``*`` and literals; nothing trusted by an empty list."""
    assert trusted_peer("127.0.0.1", ["127.0.0.1"])
    assert trusted_peer("10.1.2.3", ["192.0.2.1", "10.0.0.0/8"])
    assert not trusted_peer("10.1.2.3", ["10.0.0.0/16"])
    assert trusted_peer("2001:db8::7", ["2001:db8::/64"])
    assert not trusted_peer("127.0.0.1", ["::1"])
    assert not trusted_peer("127.0.0.1", [])
    assert trusted_peer("203.0.113.9", ["*"])
    assert trusted_peer("/run/quotes.sock", ["/run/quotes.sock"])
    assert not trusted_peer("unknown", ["10.0.0.0/8"])


NETWORKS = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.builds(
        lambda ip, bits: f"{ipaddress.ip_network((ip, bits), strict=False)}",
        st.ip_addresses(v=4),
        st.integers(0, 32),
    ),
    st.builds(
        lambda ip, bits: f"{ipaddress.ip_network((ip, bits), strict=False)}",
        st.ip_addresses(v=6),
        st.integers(0, 128),
    ),
)


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)), st.lists(NETWORKS, max_size=4))
def test_trust_is_uvicorns(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: list[str]
) -> None:
    """The hint's rule agrees with uvicorn's proxy-headers middleware on every peer."""
    assert trusted_peer(str(peer), trusted) == (str(peer) in _TrustedHosts(trusted))


async def test_ignored_forwarded_for_logs_one_hint(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """
    From an untrusted peer, X-Forwarded-For is ignored and one WARNING names the setting,
    however many such handshakes come in a hint period; a trusted proxy gets none.
    """
    hint = "X-Forwarded-For from 127.0.0.1 ignored"
    forwarded = {"additional_headers": {"X-Forwarded-For": "203.0.113.9"}}
    server = start_server(redis_server)
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL"
    async with open_ws(url):  # no header: nothing to say
        pass
    for _ in range(5):
        async with open_ws(url, **forwarded):
            pass
    await eventually(lambda: server.log().count("disconnected code=") == 6, what="six closes")
    lines = [line for line in server.log().splitlines() if hint in line]
    assert len(lines) == 1, lines
    assert "WARNING" in lines[0]
    assert "QUOTES_TRUSTED_PROXIES / --trusted-proxies: none" in lines[0]
    assert "every client behind it counts as 127.0.0.1" in lines[0]
    assert "HTTP 429" in lines[0]
    assert f"at most once per {PROXY_HINT_PERIOD:.0f} s" in lines[0]
    assert "connected from 203.0.113.9" not in server.log()  # the header really was ignored

    # a list that names some other proxy: the same hint, showing the list
    other = start_server(redis_server, trusted_proxies="10.0.0.0/8")
    async with open_ws(f"{other.ws_url}/ws/quotes", **forwarded):
        pass
    await eventually(lambda: hint in other.log(), what="the hint")
    assert "--trusted-proxies: 10.0.0.0/8)" in other.log()

    # the proxy is trusted: the header names the client, and there is nothing to hint
    trusted = start_server(redis_server, trusted_proxies="127.0.0.1")
    for _ in range(3):
        async with open_ws(f"{trusted.ws_url}/ws/quotes", **forwarded):
            pass
    await eventually(lambda: trusted.log().count("disconnected code=") == 3, what="three closes")
    assert trusted.log().count("connected from 203.0.113.9") == 3
    assert "X-Forwarded-For from" not in trusted.log()


async def test_ipv6_clients_count_per_slash_64_behind_a_proxy(
    redis_server: RedisServer, start_server: StartServer
) -> None:
    """Behind a trusted proxy, 2001:db8::2 is refused (429) next to ::1; another /64 passes."""
    server = start_server(redis_server, max_connections_per_ip=1, trusted_proxies="127.0.0.0/8")
    url = f"{server.ws_url}/ws/quotes?tickers=AAPL"

    def forwarded(address: str) -> dict[str, object]:
        return {"additional_headers": {"X-Forwarded-For": address}}

    async with open_ws(url, **forwarded("2001:db8::1")):
        status, headers, body = await handshake_rejection(url, **forwarded("2001:db8::2"))
        assert status == 429, body
        assert "Retry-After" in headers
        async with open_ws(url, **forwarded("2001:db8:0:1::1")):
            pass
    log = server.log()
    # the log names each client exactly, not by its network
    assert "connected from 2001:db8::1:" in log
    assert "handshake from 2001:db8::2:0 rejected with 429" in log
    assert "connected from 2001:db8:0:1::1:" in log

    exact = start_server(
        redis_server, max_connections_per_ip=1, trusted_proxies="127.0.0.0/8", ipv6_prefix=128
    )
    url = f"{exact.ws_url}/ws/quotes?tickers=AAPL"
    async with open_ws(url, **forwarded("2001:db8::1")), open_ws(url, **forwarded("2001:db8::2")):
        pass


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class _V6Server(ServerProcess):
    """A server process reached at [::1] (it listens on the IPv6 loopback only)."""

    @property
    def http_url(self) -> str:
        return f"http://[::1]:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://[::1]:{self.port}"


async def test_ipv6_loopback_peer(redis_server: RedisServer) -> None:
    """A server on ::1 counts its IPv6 peer under the cap and logs the exact address."""
    if not _ipv6_loopback():
        pytest.skip("this machine cannot bind the IPv6 loopback ::1")
    env = {
        "QUOTES_HOST": "::1",
        "QUOTES_REDIS_URL": redis_server.url,
        "QUOTES_MAX_CONNECTIONS_PER_IP": "1",
        "QUOTES_LOG_LEVEL": "info",
    }
    server = _V6Server(python_module("quotes_server", "--port", "{port}"), env=env)
    try:
        server.start()
        server.wait_ready()
        url = f"{server.ws_url}/ws/quotes?tickers=AAPL"
        async with open_ws(url):
            status, _headers, body = await handshake_rejection(url)
            assert status == 429, body
        assert "connected from ::1:" in server.log()
    finally:
        server.stop()
