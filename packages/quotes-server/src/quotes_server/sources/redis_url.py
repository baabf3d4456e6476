"""
The Redis URL: read once, by redis-py's own parser, for every connection to Redis.

:func:`parse_redis_url` reads ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs
with :func:`redis.connection.parse_url`, keeps what the server honours and refuses
everything else with a :class:`RedisUrlError` naming the option, so that no part of
a URL is dropped silently. Honoured:

- the address (host and port, or the socket path of ``unix://``), the credentials in
  the user-info part (``redis://user:password@host``) and the database number (the
  path ``/0`` or ``db=0``; Pub/Sub channels do not depend on it);
- with ``rediss://``, the TLS options of redis-py's ``SSLConnection`` (see
  :data:`TLS_OPTIONS`), which become one :class:`ssl.SSLContext` for the bulk
  readers (the single-channel source, the shard links) and the same keyword
  arguments for the redis-py clients (``CLUSTER SLOTS``, ``quotes-publish``), so
  both verify the server the same way.

Refused: TLS options on a ``redis://`` or ``unix://`` URL, OCSP checks, redis-py's
socket, liveness, retry and protocol options (the server has its own settings for those,
named in the message), options given twice or without a value, and any other option.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from redis.asyncio import Redis
from redis.connection import parse_url

__all__ = [
    "SHARDED_NEEDS_TCP",
    "TLS_OPTIONS",
    "RedisUrl",
    "RedisUrlError",
    "TlsOptions",
    "command_client",
    "parse_redis_url",
]


class RedisUrlError(ValueError):
    """The Redis URL asks for something the server does not do; the message names it."""


TLS_OPTIONS = (
    "ssl_cert_reqs",
    "ssl_check_hostname",
    "ssl_ca_certs",
    "ssl_ca_path",
    "ssl_ca_data",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_password",
    "ssl_min_version",
    "ssl_ciphers",
    "ssl_include_verify_flags",
    "ssl_exclude_verify_flags",
)
"""The ``rediss://`` query options honoured (redis-py's ``SSLConnection`` arguments)."""

SHARDED_NEEDS_TCP = (
    "upstream sharded needs a redis:// or rediss:// URL: its links connect to the "
    "masters by host and port, not to a unix socket"
)
"""Why the sharded source refuses a ``unix://`` URL."""

_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_MIN_VERSIONS = {int(v): v for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)}

_TIMEOUT = "the server's Redis timeouts are QUOTES_REDIS_TIMEOUT"
_LIVENESS = (
    "the server checks the connection with its own PING "
    "(QUOTES_REDIS_PING_INTERVAL, QUOTES_REDIS_PONG_TIMEOUT)"
)
_RETRY = "the server reconnects with its own backoff and grace period (QUOTES_GRACE_PERIOD)"
_REFUSED = {
    "socket_timeout": _TIMEOUT,
    "socket_connect_timeout": _TIMEOUT,
    "timeout": _TIMEOUT,
    "health_check_interval": _LIVENESS,
    "socket_keepalive": _LIVENESS,
    "retry_on_timeout": _RETRY,
    "retry_on_error": _RETRY,
    "protocol": "the server speaks RESP2 to Redis",
    "username": "give the credentials in the URL's user-info part (redis://user:password@host)",
    "password": "give the credentials in the URL's user-info part (redis://user:password@host)",
    "ssl_validate_ocsp": "OCSP checks are not supported",
    "ssl_validate_ocsp_stapled": "OCSP checks are not supported",
    "ssl_ocsp_context": "OCSP checks are not supported",
    "ssl_ocsp_expected_cert": "OCSP checks are not supported",
}
"""Options redis-py reads that the server refuses, and why."""


@dataclass(frozen=True)
class TlsOptions:
    """
    How to verify a ``rediss://`` server (and which client certificate to show it);
    the defaults are redis-py's: the certificate is required and must name the host.
    """

    cert_reqs: ssl.VerifyMode = ssl.CERT_REQUIRED
    check_hostname: bool = True
    ca_certs: str | None = None
    ca_path: str | None = None
    ca_data: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    password: str | None = field(default=None, repr=False)
    min_version: ssl.TLSVersion | None = None
    ciphers: str | None = None
    include_verify_flags: tuple[ssl.VerifyFlags, ...] = ()
    exclude_verify_flags: tuple[ssl.VerifyFlags, ...] = ()

    def context(self) -> ssl.SSLContext:
        """
        A client context built the way redis-py builds its own (same steps, same order).

        Raises:
            RedisUrlError: a file cannot be loaded or a value is refused by OpenSSL;
                the message names the option.
        """
        context = ssl.create_default_context()
        context.check_hostname = self.check_hostname
        context.verify_mode = self.cert_reqs
        for flag in self.include_verify_flags:
            context.verify_flags |= flag
        for flag in self.exclude_verify_flags:
            context.verify_flags &= ~flag
        if self.certfile is not None:
            with _loading(ssl_certfile=self.certfile, ssl_keyfile=self.keyfile):
                context.load_cert_chain(self.certfile, self.keyfile, self.password)
        if self.ca_certs is not None or self.ca_path is not None or self.ca_data is not None:
            data = "" if self.ca_data is not None else None  # named, never shown
            with _loading(ssl_ca_certs=self.ca_certs, ssl_ca_path=self.ca_path, ssl_ca_data=data):
                context.load_verify_locations(self.ca_certs, self.ca_path, self.ca_data)
        if self.min_version is not None:
            context.minimum_version = self.min_version
        if self.ciphers is not None:
            with _loading(ssl_ciphers=self.ciphers):
                context.set_ciphers(self.ciphers)
        return context

    def client_kwargs(self) -> dict[str, Any]:
        """The same options as keyword arguments of a redis-py client (``ssl=True`` and all)."""
        return {
            "ssl": True,
            "ssl_cert_reqs": self.cert_reqs,
            "ssl_check_hostname": self.check_hostname,
            "ssl_ca_certs": self.ca_certs,
            "ssl_ca_path": self.ca_path,
            "ssl_ca_data": self.ca_data,
            "ssl_certfile": self.certfile,
            "ssl_keyfile": self.keyfile,
            "ssl_password": self.password,
            "ssl_min_version": self.min_version,
            "ssl_ciphers": self.ciphers,
            "ssl_include_verify_flags": list(self.include_verify_flags) or None,
            "ssl_exclude_verify_flags": list(self.exclude_verify_flags) or None,
        }


@contextlib.contextmanager
def _loading(**given: str | None) -> Iterator[None]:
    """Name the options given (and their values, but ``ssl_ca_data``'s) in an error."""
    try:
        yield
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        named = ", ".join(f"{k}={v!r}" if v else k for k, v in given.items() if v is not None)
        raise RedisUrlError(f"Redis URL option {named}: {exc}") from None


@dataclass(frozen=True)
class RedisUrl:
    """What the server connects to, from a URL :func:`parse_redis_url` accepted."""

    host: str = "localhost"
    port: int = 6379
    unix_path: str | None = None
    """The socket of a ``unix://`` URL (then ``host`` and ``port`` are unused)."""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsOptions | None = None
    """The TLS options of a ``rediss://`` URL; None for ``redis://`` and ``unix://``."""

    def ssl_context(self) -> ssl.SSLContext | None:
        """A new client context for a ``rediss://`` URL (see :meth:`TlsOptions.context`)."""
        return self.tls.context() if self.tls is not None else None

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of a redis-py client besides its address: db, credentials, TLS."""
        kwargs: dict[str, Any] = {
            "db": self.db,
            "username": self.username,
            "password": self.password,
        }
        if self.tls is not None:
            kwargs.update(self.tls.client_kwargs())
        return kwargs


def parse_redis_url(url: str) -> RedisUrl:
    """
    Read a Redis URL with redis-py's parser; refuse what the server does not honour.

    Raises:
        RedisUrlError: the message names the option refused, and why.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise RedisUrlError("the Redis URL must start with redis://, rediss:// or unix://")
    names = _query_names(parts.query)
    for name in names:
        if name in TLS_OPTIONS:
            if scheme != "rediss":
                raise RedisUrlError(
                    f"Redis URL option {name} needs a rediss:// URL (TLS); this one is {scheme}://"
                )
        elif name in _REFUSED:
            raise RedisUrlError(f"Redis URL option {name} is not supported: {_REFUSED[name]}")
        elif name != "db":
            raise RedisUrlError(f"unknown Redis URL option {name}")
    path_db = unquote(parts.path).strip("/") if scheme != "unix" else ""
    if path_db and not path_db.isdigit():
        raise RedisUrlError(f"the path of a Redis URL is the database number (/0), not /{path_db}")
    if path_db and "db" in names:
        raise RedisUrlError("the Redis URL gives the database twice: in its path and as db=")
    try:
        options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:  # a value redis-py cannot read, e.g. db=x
        raise RedisUrlError(f"Redis URL: {exc}") from None
    return RedisUrl(
        host=options.get("host", "localhost"),
        port=options.get("port", 6379),
        unix_path=options.get("path"),
        db=options.get("db", 0),
        username=options.get("username"),
        password=options.get("password"),
        tls=_tls(options) if scheme == "rediss" else None,
    )


def _query_names(query: str) -> list[str]:
    """The query's option names; an option given twice or without a value is refused."""
    names: list[str] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in names:
            raise RedisUrlError(f"Redis URL option {name} is given more than once")
        if not value:
            raise RedisUrlError(f"Redis URL option {name} has no value")
        names.append(name)
    return names


def _tls(options: dict[str, Any]) -> TlsOptions:
    reqs = options.get("ssl_cert_reqs", "required")
    if reqs not in _CERT_REQS:
        raise RedisUrlError(
            f"Redis URL option ssl_cert_reqs must be none, optional or required, not {reqs!r}"
        )
    cert_reqs = _CERT_REQS[reqs]
    check_hostname = options.get("ssl_check_hostname")
    if cert_reqs is ssl.CERT_NONE:
        if check_hostname:
            raise RedisUrlError(
                "Redis URL options ssl_check_hostname=true and ssl_cert_reqs=none exclude "
                "each other: without verifying the certificate there is no name to check"
            )
        check_hostname = False
    min_version: ssl.TLSVersion | None = None
    if "ssl_min_version" in options:
        min_version = _MIN_VERSIONS.get(options["ssl_min_version"])
        if min_version is None:
            raise RedisUrlError(
                "Redis URL option ssl_min_version must be "
                + " or ".join(f"{int(v)} ({v.name})" for v in _MIN_VERSIONS.values())
            )
    if "ssl_keyfile" in options and "ssl_certfile" not in options:
        raise RedisUrlError("Redis URL option ssl_keyfile needs ssl_certfile (the certificate)")
    if "ssl_password" in options and "ssl_certfile" not in options:
        raise RedisUrlError("Redis URL option ssl_password needs ssl_certfile (the key it unlocks)")
    return TlsOptions(
        cert_reqs=cert_reqs,
        check_hostname=True if check_hostname is None else check_hostname,
        ca_certs=options.get("ssl_ca_certs"),
        ca_path=options.get("ssl_ca_path"),
        ca_data=options.get("ssl_ca_data"),
        certfile=options.get("ssl_certfile"),
        keyfile=options.get("ssl_keyfile"),
        password=options.get("ssl_password"),
        min_version=min_version,
        ciphers=options.get("ssl_ciphers"),
        include_verify_flags=tuple(options.get("ssl_include_verify_flags", ())),
        exclude_verify_flags=tuple(options.get("ssl_exclude_verify_flags", ())),
    )


def command_client(url: str, timeout: float) -> Redis:
    """
    A redis-py asyncio client for commands (not Pub/Sub) on ``url``: its address
    (TCP or ``unix://``), database, credentials and TLS options, with ``timeout`` for
    connecting and for each reply.
    """
    parsed = parse_redis_url(url)
    address: dict[str, Any] = (
        {"unix_socket_path": parsed.unix_path}
        if parsed.unix_path is not None
        else {"host": parsed.host, "port": parsed.port}
    )
    return Redis(
        **address,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        **parsed.client_kwargs(),
    )
