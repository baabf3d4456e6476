"""
Optional token authentication of WebSocket handshakes.

Off unless a token source is configured (``auth_tokens``, ``auth_tokens_file``,
``jwt_secret`` or ``jwt_public_key_file``). When on, a handshake must carry a
token, as ``Authorization: Bearer <token>`` or, for browsers that cannot set
headers on a WebSocket, the ``access_token`` query parameter (weaker: URLs end up
in proxy logs and browser history). Tokens are:

- **static**: compared by SHA-256 digest, each optionally limited to a set of
  tickers (``token AAPL,MSFT`` in the tokens file);
- **JWTs** (PyJWT), HS256 with ``jwt_secret`` or RS256 with ``jwt_public_key_file``:
  ``exp`` is required, ``exp``/``nbf``/``iat`` are checked with ``jwt_leeway`` seconds
  of tolerance, ``aud``/``iss`` are checked when configured, and an optional
  ``tickers`` claim (a list, or a comma-separated string) limits what the token may
  subscribe to.

Grants are exact (:func:`parse_grant`): a ticker list that is present grants what it
lists and nothing else, so an empty one (``[]``, ``""``, ``null``, ``" , "``) grants
nothing; only an absent list or ``"*"`` grants every ticker.

A missing or invalid token is a ``401``; a valid token asking for tickers outside
its grant, or granting none, is a ``403``. Neither answer nor any log line repeats
the token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jwt

from quotes_core import ClientError, InvalidTickers, TickerFilter, normalize_ticker
from quotes_server.settings import Settings

__all__ = [
    "AccessDenied",
    "Authenticator",
    "Grant",
    "InvalidGrant",
    "Unauthorized",
    "parse_grant",
]

TOKEN_QUERY_PARAM = "access_token"
"""The query parameter browsers use to pass their token."""

_MAX_TOKEN_LENGTH = 8192


class Unauthorized(ClientError):
    """No usable token: the handshake gets ``401``."""

    http_status = 401


class AccessDenied(ClientError):
    """A valid token that does not grant what was asked: the handshake gets ``403``."""

    http_status = 403


class InvalidGrant(ValueError):
    """A ticker list of a token that is not a list of valid symbols."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What an accepted token allows."""

    subject: str
    """Who the token names, for logs (a JWT's ``sub``, or ``static token N``)."""
    tickers: frozenset[str] | None = None
    """The tickers it may subscribe to; ``None`` means every ticker, an empty set none."""
    expires_at: float | None = None
    """When the token stops being accepted (Unix time: a JWT's ``exp`` plus the leeway),
    if ever: the connection is closed with 1008 then."""

    def allows(self, wanted: TickerFilter) -> bool:
        """
        Tell whether a subscription to ``wanted`` stays inside this grant: every
        wanted ticker is listed. A grant of no tickers allows no subscription.
        """
        if self.tickers is None:
            return True
        return bool(self.tickers) and wanted.tickers is not None and wanted.tickers <= self.tickers


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_grant(tickers: object) -> frozenset[str] | None:
    """
    The tickers a token's ticker list grants, when the list is present.

    ``tickers`` is a JWT's ``tickers`` claim (a list of symbols, a comma-separated
    string, or ``null``) or the second column of a tokens-file line (a string).
    ``"*"``, alone or anywhere in the list, grants every ticker (``None``). Anything
    else grants exactly the symbols listed (normalised; blanks between commas
    ignored), so an empty list (``[]``, ``""``, ``null``, ``" , "``) grants nothing
    (an empty set). An absent list is the caller's business: it grants every ticker.

    Raises:
        InvalidGrant: neither a string, a list of strings nor ``null``, or a symbol
            that breaks the ticker grammar.
    """
    items: list[str]
    if tickers is None:
        return frozenset()
    if isinstance(tickers, str):
        items = tickers.split(",")
    elif isinstance(tickers, list) and all(isinstance(t, str) for t in tickers):
        items = tickers
    else:
        raise InvalidGrant(
            "the tickers claim must be a list of symbols or a comma-separated string"
        )
    stripped = [item.strip() for item in items]
    if "*" in stripped:
        return None
    try:
        return frozenset(normalize_ticker(item) for item in stripped if item)
    except InvalidTickers as exc:
        raise InvalidGrant(f"bad tickers claim ({exc})") from None


class Authenticator:
    """
    Checks handshake tokens against the configured sources.

    Args:
        settings: the server settings (token sources and JWT options).
    """

    def __init__(self, settings: Settings) -> None:
        self._static: dict[bytes, Grant] = {}
        for n, token in enumerate(settings.auth_tokens, 1):
            self._static[_digest(token)] = Grant(f"static token {n}")
        if settings.auth_tokens_file is not None:
            self._load_file(settings.auth_tokens_file)
        self._jwt_keys: list[tuple[str | bytes, str]] = []
        if settings.jwt_secret is not None:
            self._jwt_keys.append((settings.jwt_secret.get_secret_value(), "HS256"))
        if settings.jwt_public_key_file is not None:
            self._jwt_keys.append((settings.jwt_public_key_file.read_bytes(), "RS256"))
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway

    def _load_file(self, path: Path) -> None:
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            # "token" alone grants every ticker; "token AAPL,MSFT" those; "token ," none
            token, *rest = text.split(None, 1)
            try:
                grant = parse_grant(rest[0]) if rest else None
            except InvalidGrant as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
            self._static[_digest(token)] = Grant(f"{path.name}:{lineno}", grant)

    @property
    def enabled(self) -> bool:
        """True when handshakes must carry a token."""
        return bool(self._static or self._jwt_keys)

    @property
    def sources(self) -> list[str]:
        """What is configured, for the start-up log (never the tokens themselves)."""
        out = [f"{len(self._static)} static token(s)"] if self._static else []
        out += [f"{alg} JWTs" for _, alg in self._jwt_keys]
        return out

    def authenticate(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Grant | None:
        """
        The grant of the handshake's token, or ``None`` when auth is off.

        Raises:
            Unauthorized: no token, or one that no source accepts.
            AccessDenied: a valid token that grants no ticker at all.
        """
        if not self.enabled:
            return None
        token = _presented(headers, query)
        grant = self._static.get(_digest(token))
        if grant is None:
            if not (self._jwt_keys and token.count(".") == 2):
                raise Unauthorized("invalid token")
            grant = self._decode_jwt(token)
        if grant.tickers is not None and not grant.tickers:
            raise AccessDenied("the token grants no tickers")
        return grant

    def _decode_jwt(self, token: str) -> Grant:
        error = "invalid token"
        for key, alg in self._jwt_keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[alg],
                    audience=self._audience,
                    issuer=self._issuer,
                    leeway=self._leeway,
                    options={"require": ["exp"]},
                )
            except jwt.ExpiredSignatureError:
                raise Unauthorized("invalid token: expired") from None
            except jwt.InvalidTokenError as exc:
                # PyJWT's messages name claims and checks, never the token's content
                error = f"invalid token: {exc}"
                continue
            sub = claims.get("sub")
            subject = f"jwt sub={sub[:64]!r}" if isinstance(sub, str) else "jwt"
            try:
                # a claim that is present grants exactly what it lists, even nothing
                tickers = parse_grant(claims["tickers"]) if "tickers" in claims else None
            except InvalidGrant as exc:
                raise Unauthorized(f"invalid token: {exc}") from None
            # the connection ends when a new handshake with this token would be refused
            return Grant(subject, tickers, float(claims["exp"]) + self._leeway)
        raise Unauthorized(error)


def _presented(headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    header = headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        token = token.strip()
    else:
        token = query.get(TOKEN_QUERY_PARAM, "")
        if not token:
            raise Unauthorized(
                "a token is required: send 'Authorization: Bearer <token>' "
                f"or the {TOKEN_QUERY_PARAM} query parameter"
            )
    if len(token) > _MAX_TOKEN_LENGTH:
        raise Unauthorized("invalid token")
    return token
