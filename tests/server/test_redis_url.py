"""
The Redis URL (:mod:`quotes_server.sources.redis_url`), without a network: what a
URL's options turn into (the address, the credentials, an ``ssl.SSLContext`` equal
to the one redis-py builds from the same options), and every refusal with the
message naming the option, at the settings, the sources and ``quotes-publish``.
The TLS connections themselves are tried in ``test_redis_tls.py``.
"""

from __future__ import annotations

import re
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import ValidationError
from redis.asyncio.connection import SSLConnection

from quotes_server import publish
from quotes_server.settings import Settings
from quotes_server.sources.redis import RedisSource
from quotes_server.sources.redis_url import RedisUrlError, parse_redis_url
from quotes_server.sources.sharded import ShardedRedisSource
from tests.helpers.processes import ROOT
from tests.helpers.tls import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def context_of(url: str) -> ssl.SSLContext:
    context = parse_redis_url(url).ssl_context()
    assert context is not None
    return context


def ca_subjects(context: ssl.SSLContext) -> list[Any]:
    return [cert["subject"] for cert in context.get_ca_certs()]


def test_a_plain_url_gives_the_address_credentials_and_database_and_no_tls() -> None:
    """redis://user:password@host:port/db is read by redis-py's parser; no TLS context."""
    url = parse_redis_url("redis://reader:s%40cret@10.0.0.5:7000/3")
    assert (url.host, url.port, url.db, url.unix_path) == ("10.0.0.5", 7000, 3, None)
    assert (url.username, url.password) == ("reader", "s@cret")
    assert url.tls is None
    assert url.ssl_context() is None
    assert "s@cret" not in repr(url)
    assert url.client_kwargs() == {"db": 3, "username": "reader", "password": "s@cret"}


def test_a_unix_url_gives_the_socket_path() -> None:
    """unix:///path?db=n: the socket and the database."""
    url = parse_redis_url("unix:///run/redis.sock?db=2")
    assert (url.unix_path, url.db, url.tls) == ("/run/redis.sock", 2, None)


def test_rediss_defaults_verify_the_certificate_and_the_host() -> None:
    """rediss:// alone: certificate required, host name checked, the system's CAs."""
    context = context_of("rediss://redis.example:6380/0")
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_ssl_ca_certs_loads_that_ca(pki: Pki) -> None:
    """ssl_ca_certs: the CA file is loaded into the context (and verification stays on)."""
    context = context_of(f"rediss://127.0.0.1:6380/0?ssl_ca_certs={pki.ca}")
    assert ((("commonName", "quotes test CA"),),) in ca_subjects(context)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_ssl_ca_path_and_ssl_ca_data_are_loaded_too(pki: Pki) -> None:
    """ssl_ca_data (PEM text) loads the CA; ssl_ca_path names a directory OpenSSL accepts."""
    pem = quote(pki.ca.read_text(), safe="")  # newlines and "+" percent-encoded
    context = context_of(f"rediss://h?ssl_ca_data={pem}")
    assert ((("commonName", "quotes test CA"),),) in ca_subjects(context)
    context_of(f"rediss://h?ssl_ca_path={pki.ca.parent}")  # a directory: no error


@pytest.mark.parametrize(
    ("query", "verify_mode", "check_hostname"),
    [
        ("ssl_cert_reqs=none", ssl.CERT_NONE, False),
        ("ssl_cert_reqs=optional", ssl.CERT_OPTIONAL, True),
        ("ssl_cert_reqs=required&ssl_check_hostname=false", ssl.CERT_REQUIRED, False),
        ("ssl_cert_reqs=none&ssl_check_hostname=false", ssl.CERT_NONE, False),
    ],
)
def test_cert_reqs_and_check_hostname_set_the_context(
    query: str, verify_mode: ssl.VerifyMode, check_hostname: bool
) -> None:
    """ssl_cert_reqs sets verify_mode; ssl_check_hostname (and none) set check_hostname."""
    context = context_of(f"rediss://h?{query}")
    assert (context.verify_mode, context.check_hostname) == (verify_mode, check_hostname)


def test_min_version_ciphers_and_verify_flags_set_the_context() -> None:
    """ssl_min_version (772 = TLS 1.3), ssl_ciphers (a "+" written %2B) and the verify flags."""
    context = context_of(
        "rediss://h?ssl_min_version=772&ssl_ciphers=ECDHE%2BAESGCM"
        "&ssl_include_verify_flags=VERIFY_X509_STRICT"
        "&ssl_exclude_verify_flags=VERIFY_X509_PARTIAL_CHAIN"
    )
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    assert context.verify_flags & ssl.VERIFY_X509_STRICT
    assert not context.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    tls12 = {c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12
    assert all("ECDHE" in name and "GCM" in name for name in tls12)


def test_a_client_certificate_is_loaded_and_a_missing_one_is_named(pki: Pki) -> None:
    """ssl_certfile/ssl_keyfile load the client certificate; an unreadable one names the option."""
    context_of(f"rediss://h?ssl_certfile={pki.client_cert}&ssl_keyfile={pki.client_key}")
    with pytest.raises(RedisUrlError, match=re.escape("ssl_keyfile='/nonexistent.key'")):
        context_of(f"rediss://h?ssl_certfile={pki.client_cert}&ssl_keyfile=/nonexistent.key")
    with pytest.raises(RedisUrlError, match=r"ssl_keyfile='.*': .*PEM"):
        # the CA's certificate is no key
        context_of(f"rediss://h?ssl_certfile={pki.client_cert}&ssl_keyfile={pki.ca}")


@pytest.mark.parametrize(
    "query",
    [
        "",
        "ssl_cert_reqs=none",
        "ssl_cert_reqs=optional&ssl_check_hostname=false",
        "ssl_ca_certs={ca}&ssl_min_version=771",
        "ssl_ca_certs={ca}&ssl_certfile={cert}&ssl_keyfile={key}",
        "ssl_include_verify_flags=VERIFY_X509_STRICT,VERIFY_CRL_CHECK_LEAF",
    ],
)
def test_redis_py_clients_get_the_same_verification(pki: Pki, query: str) -> None:
    """client_kwargs() make redis-py build the context the bulk readers use, field for field."""
    query = query.format(ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    url = parse_redis_url(f"rediss://u:p@127.0.0.1:6380/1?{query}")
    ours = url.ssl_context()
    assert ours is not None
    kwargs = url.client_kwargs()
    assert kwargs.pop("ssl") is True
    theirs = SSLConnection(host="127.0.0.1", port=6380, **kwargs).ssl_context.get()
    for field in ("verify_mode", "check_hostname", "minimum_version", "verify_flags", "options"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert ca_subjects(ours) == ca_subjects(theirs)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:6379", "must start with redis://, rediss:// or unix://"),
        ("redis://h?socket_timeout=1", "socket_timeout is not supported: .*QUOTES_REDIS_TIMEOUT"),
        ("redis://h?socket_connect_timeout=1", "socket_connect_timeout is not supported"),
        ("redis://h?health_check_interval=3", "health_check_interval .*PING_INTERVAL"),
        ("redis://h?socket_keepalive=true", "socket_keepalive is not supported"),
        ("redis://h?retry_on_timeout=true", "retry_on_timeout .*QUOTES_GRACE_PERIOD"),
        ("redis://h?protocol=3", "protocol is not supported: .*RESP2"),
        ("redis://h?password=x", "password is not supported: .*user-info"),
        ("redis://h?client_name=q", "unknown Redis URL option client_name"),
        ("rediss://h?ssl_ca_cert=/ca.pem", "unknown Redis URL option ssl_ca_cert$"),
        ("redis://h?ssl_ca_certs=/ca.pem", "ssl_ca_certs needs a rediss:// URL .* redis://"),
        ("unix:///s.sock?ssl_cert_reqs=none", "ssl_cert_reqs needs a rediss:// URL"),
        ("rediss://h?ssl_validate_ocsp=true", "ssl_validate_ocsp .*OCSP"),
        ("rediss://h?ssl_ca_certs=", "ssl_ca_certs has no value"),
        ("rediss://h?ssl_cert_reqs=none&ssl_cert_reqs=required", "ssl_cert_reqs is given more"),
        ("rediss://h?ssl_cert_reqs=CERT_NONE", "none, optional or required, not 'CERT_NONE'"),
        ("rediss://h?ssl_cert_reqs=none&ssl_check_hostname=true", "exclude each other"),
        ("rediss://h?ssl_min_version=769", r"771 \(TLSv1_2\) or 772 \(TLSv1_3\)"),
        ("rediss://h?ssl_min_version=TLSv1_2", "Invalid value for 'ssl_min_version'"),
        ("rediss://h?ssl_keyfile=/k.pem", "ssl_keyfile needs ssl_certfile"),
        ("rediss://h?ssl_password=x", "ssl_password needs ssl_certfile"),
        ("rediss://h?ssl_include_verify_flags=NOPE", "Invalid value for 'ssl_include_verify"),
        ("rediss://h?ssl_ca_certs=/nonexistent/ca.pem", "ssl_ca_certs='/nonexistent/ca.pem': "),
        ("rediss://h?ssl_ciphers=NO-SUCH-CIPHER", "ssl_ciphers='NO-SUCH-CIPHER': "),
        ("redis://h/cache", r"database number \(/0\), not /cache"),
        ("redis://h/1?db=2", "database twice"),
        ("redis://h?db=x", "Invalid value for 'db'"),
    ],
)
def test_what_is_not_honoured_is_refused_by_name(url: str, message: str) -> None:
    """Every option is honoured or refused: the message names it (and says why)."""
    with pytest.raises(RedisUrlError, match=message):
        context_of(url)


def test_settings_refuse_the_url_at_start_up_naming_the_option() -> None:
    """QUOTES_REDIS_URL is checked with the settings: option refused, file unreadable."""
    with pytest.raises(ValidationError, match="socket_timeout is not supported"):
        Settings(redis_url="redis://127.0.0.1:6379/0?socket_timeout=1")
    with pytest.raises(ValidationError, match=re.escape("ssl_ca_certs='/nonexistent/ca.pem'")):
        Settings(redis_url="rediss://127.0.0.1:6379/0?ssl_ca_certs=/nonexistent/ca.pem")
    with pytest.raises(ValidationError, match="upstream sharded needs a redis:// or rediss://"):
        Settings(redis_url="unix:///run/redis.sock", upstream="sharded")
    Settings(redis_url="unix:///run/redis.sock")  # the single-channel source reads a socket


def test_the_server_command_stops_with_the_option_named(tmp_path: Path) -> None:
    """`quotes-server --redis-url ...?foo=1` exits at once with one clear line."""
    done = subprocess.run(
        [sys.executable, "-m", "quotes_server", "--redis-url", "rediss://u:hidden@h:1/0?foo=1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert done.stderr.strip() == (
        "quotes-server: invalid settings: redis_url: Value error, unknown Redis URL option foo"
    )
    assert "hidden" not in done.stderr


def test_the_sources_refuse_what_the_settings_refuse() -> None:
    """Built without Settings, both sources still refuse (and the sharded one a unix socket)."""
    with pytest.raises(RedisUrlError, match="socket_timeout"):
        RedisSource("redis://h?socket_timeout=1")
    with pytest.raises(RedisUrlError, match="socket_timeout"):
        ShardedRedisSource("redis://h?socket_timeout=1")
    with pytest.raises(RedisUrlError, match="not to a unix socket"):
        ShardedRedisSource("unix:///run/redis.sock")


def test_the_sharded_source_hands_the_tls_options_to_its_redis_py_clients(pki: Pki) -> None:
    """CLUSTER SLOTS goes through redis-py with the URL's TLS options, and the links' context."""
    source = ShardedRedisSource(f"rediss://u:p@127.0.0.1:6380/0?ssl_ca_certs={pki.ca}")
    assert source.ssl_context is not None
    assert ((("commonName", "quotes test CA"),),) in ca_subjects(source.ssl_context)
    client = source.node_client(("127.0.0.1", 6380))
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class is SSLConnection
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_cert_reqs"]) == (str(pki.ca), ssl.CERT_REQUIRED)
    assert (kwargs["username"], kwargs["password"]) == ("u", "p")


def test_quotes_publish_refuses_the_same_urls() -> None:
    """quotes-publish checks its --redis-url as the server does, before connecting."""
    with pytest.raises(SystemExit) as exc:
        publish.main(["--redis-url", "redis://127.0.0.1:1/0?socket_timeout=1", "--count", "1"])
    assert str(exc.value.code).startswith("quotes-publish: invalid --redis-url: Redis URL option")
    assert "socket_timeout" in str(exc.value.code)
