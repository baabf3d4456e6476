"""
The AsyncAPI document is generated from the code and says what the server does:
the committed files are current, every frame the core writes fits its message's
schema, and a server serves it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest

from quotes_client.protocol import encode_action, encode_ping
from quotes_core import (
    INTERNAL_ERROR_REASON,
    WS_PATHS,
    ActionError,
    TickerFilter,
    encode_quote,
    error_event,
    pong_event,
    recovered_event,
    subscribed_event,
    with_position,
)
from quotes_core.sse import SSE_PATHS, closing
from quotes_core.testing import make_quote, upstream_message
from quotes_server.asyncapi import asyncapi_document, asyncapi_markdown
from tests.helpers.processes import ROOT
from tests.helpers.server import StartServer
from tests.helpers.sse import parse_events

DOC = asyncapi_document()
MESSAGES: dict[str, Any] = DOC["components"]["messages"]
NOW = datetime(2026, 2, 12, 10, 30, tzinfo=UTC)


def test_the_committed_document_and_page_are_current() -> None:
    """docs/asyncapi.json and docs/asyncapi.md are what `make asyncapi` writes now."""
    committed = json.loads((ROOT / "docs" / "asyncapi.json").read_text())
    assert committed == DOC, "stale docs/asyncapi.json: run `make asyncapi`"
    page = (ROOT / "docs" / "asyncapi.md").read_text()
    assert page == asyncapi_markdown(DOC), "stale docs/asyncapi.md: run `make asyncapi`"


def test_every_endpoint_is_a_channel_with_both_operations() -> None:
    addresses = sorted(ch["address"] for ch in DOC["channels"].values())
    assert addresses == sorted([*WS_PATHS, *SSE_PATHS])
    actions = sorted(op["action"] for op in DOC["operations"].values())
    assert actions == ["receive"] * 4 + ["send"] * 6  # SSE is one-way
    query = next(iter(DOC["channels"].values()))["bindings"]["ws"]["query"]["properties"]
    assert set(query) == {
        "tickers", "mode", "snapshot", "seq", "since", "max_hz", "batch", "access_token",
    }  # fmt: skip


def valid(name: str, text: str) -> None:
    jsonschema.validate(json.loads(text), MESSAGES[name]["payload"])


def test_every_frame_the_core_writes_fits_its_message() -> None:

    quote = encode_quote(make_quote("AAPL", 7))
    valid("quote", quote)
    valid("quoteWithPosition", with_position(quote, 42, "e1"))
    valid("quoteBatch", f"[{quote},{with_position(quote, 43, 'e1')}]")
    valid("subscribed", subscribed_event(TickerFilter(frozenset({"AAPL", "MSFT"}))))
    valid("subscribed", subscribed_event(TickerFilter()))
    valid("pong", pong_event({"any": ["json"]}, NOW))
    valid("error", error_event(ActionError("forbidden", "x" * 500)))
    valid("recovered", recovered_event(False, "e1", 0))
    for action in ("subscribe", "unsubscribe", "set"):
        valid(action, encode_action(action, frozenset({"AAPL"})))
    valid("ping", encode_ping(7))
    (closed,) = parse_events(closing(1011, INTERNAL_ERROR_REASON))
    valid("closed", closed["data"])


def test_the_schemas_refuse_what_is_not_the_shape() -> None:
    """The schemas are tight: a raw upstream message, an unknown error code, an extra key."""
    upstream = json.loads(upstream_message("AAPL", 1))  # "+00:00", not the frame's "...Z" form
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(upstream, MESSAGES["quote"]["payload"])
    with pytest.raises(jsonschema.ValidationError):
        valid("error", '{"event":"error","code":"teapot","message":""}')
    with pytest.raises(jsonschema.ValidationError):
        valid("subscribe", '{"action":"subscribe","tickers":["A"],"extra":1}')
    with pytest.raises(jsonschema.ValidationError):
        valid("quoteBatch", "[]")


def test_a_server_serves_the_document_naming_itself(start_server: StartServer) -> None:
    server = start_server(None)
    status, body = server.get("/asyncapi.json")
    assert status == 200
    served = json.loads(body)
    assert served["channels"] == DOC["channels"]
    assert {name: s["host"] for name, s in served["servers"].items()} == {
        "local": f"127.0.0.1:{server.port}",
        "localSse": f"127.0.0.1:{server.port}",
    }
