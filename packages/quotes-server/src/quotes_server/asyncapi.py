"""
The stream's AsyncAPI 3.0 document, generated from the code: what ``GET
/asyncapi.json`` serves and ``docs/asyncapi.json`` holds (``make asyncapi``).

Every payload schema comes from the models (the quote's from
:func:`quotes_core.wire_json_schema`, the control frames' and actions' from
:mod:`quotes_core.messages`), the endpoints and close codes from
:mod:`quotes_core.wire`, the query parameters' ranges from the core's limits; the
handshake's HTTP answers are described in each channel. A test fails when the
committed file and the generated one differ, and CI validates the file with the
official AsyncAPI parser.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from quotes_core import (
    INBOUND_RATE_REASON,
    INTERNAL_ERROR_REASON,
    MAX_FILTER_TICKERS,
    MAX_HZ_RANGE,
    QUEUE_FULL_REASON,
    SHUTDOWN_REASON,
    SLOW_CONSUMER_REASON,
    TOKEN_EXPIRED_REASON,
    WS_PATHS,
    wire_json_schema,
)
from quotes_core.messages import (
    ACTIONS,
    EVENTS,
    ClosedEvent,
    batch_json_schema,
    positioned_quote_json_schema,
)
from quotes_core.query import EPOCH_PATTERN
from quotes_core.sse import KEEPALIVE_SECONDS, SSE_PATHS
from quotes_server import __version__

__all__ = ["asyncapi_document", "asyncapi_markdown", "main"]


def _channel_id(path: str) -> str:
    """``/v1/ws/quotes`` -> ``v1WsQuotes``."""
    first, *rest = path.strip("/").split("/")
    return first + "".join(part.title() for part in rest)


_HANDSHAKE = """\
The handshake is answered before the stream starts: 101 to switch protocols; 400
with the reason as text/plain for a bad query parameter (each may be given once);
401 without a valid token when authentication is on (`Authorization: Bearer` or
`access_token`), 403 for an `Origin` outside the allowlist or tickers the token does
not grant; 429 past the per-address connection cap and 503 past the process's cap
or while the upstream is down, both with `Retry-After`."""

_CLOSES = f"""\
Close codes the server sends: 1000 normal; 1001 "{SHUTDOWN_REASON}"; 1007 invalid
UTF-8 in a text message; 1008 "{INBOUND_RATE_REASON}" (or "{TOKEN_EXPIRED_REASON}"); 1009 a
client frame over 64 KiB; 1011 "{INTERNAL_ERROR_REASON}" (upstream down past the
grace period) or "keepalive ping timeout"; 1013 "{SLOW_CONSUMER_REASON}" (no
progress for the slow-client timeout) or "{QUEUE_FULL_REASON}" (a client that sends
actions without reading, over its byte budget). Reconnect with backoff on 1001,
1011 and 1013; fix the client on 1002, 1007, 1008 and 1009."""


_SSE = f"""\
The same stream over Server-Sent Events, for networks that break the WebSocket
upgrade: `GET` with the WebSocket endpoints' query parameters (`Last-Event-ID`
header: resume like `since=`, and it wins over it), answered before streaming exactly
as the WebSocket handshake is (same statuses, `text/plain` reasons). Then `200`,
`Content-Type: text/event-stream`, `Cache-Control: no-cache`, `X-Accel-Buffering: no`;
first a `retry:` field (milliseconds), then one event per quote: `id: <epoch>:<seq>`
and `data:` the quote as `quoteWithPosition` (positions are always on); with
`batch=1` one event per write whose `data` is a `quoteBatch` and whose `id` is its
last quote's position. Control frames are named events (`event: recovered`,
`event: error`) with the WebSocket's JSON as `data`. A `: keepalive` comment follows
every {KEEPALIVE_SECONDS:g} s of silence. A stream the server ends (1001 shutdown,
1011 upstream lost, 1013 slow consumer, 1008 token expired) ends with `event: error`
whose data is the `closed` message: the close code and reason a WebSocket client
would have got.
One-way: a client changes its tickers by reconnecting with a new query."""


def _query_schema() -> dict[str, Any]:
    low, high = MAX_HZ_RANGE
    flag = {"type": "string", "enum": ["1", "0", "true", "false"]}
    return {
        "type": "object",
        "properties": {
            "tickers": {
                "type": "string",
                "description": "Comma-separated symbols, any case; omitted, empty or `*`: "
                f"every ticker; at most {MAX_FILTER_TICKERS}.",
            },
            "mode": {
                "type": "string",
                "enum": ["fifo", "latest"],
                "default": "fifo",
                "description": "fifo: lossless up to the buffer, then conflation; latest: "
                "only the newest pending quote per ticker.",
            },
            "snapshot": {**flag, "description": "The latest quote of every matching ticker first."},
            "seq": {**flag, "description": "Quote frames carry seq and epoch."},
            "since": {
                "type": "string",
                "pattern": f"^{EPOCH_PATTERN}:[0-9]+$",
                "description": "<epoch>:<seq>: resume after that position (implies seq=1); "
                "the first frame is `recovered`.",
            },
            "max_hz": {
                "type": "number",
                "minimum": low,
                "maximum": high,
                "description": "At most this many quote frames per second per ticker.",
            },
            "batch": {**flag, "description": "One JSON array text frame per write."},
            "access_token": {
                "type": "string",
                "description": "A static token or a JWT, when authentication is on "
                "(browsers cannot set headers).",
            },
        },
    }


def _message(name: str, title: str, summary: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "payload": payload,
    }


def _schema(model: Any) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema()
    return schema


def _messages() -> dict[str, dict[str, Any]]:
    quote = wire_json_schema()
    quote.pop("$schema", None)
    positioned = positioned_quote_json_schema()
    messages = {
        "quote": _message(
            "quote", "Quote", "One quote per text frame: the contract's stream.", quote
        ),
        "quoteWithPosition": _message(
            "quoteWithPosition", "Quote with position", "With seq=1 or since=.", positioned
        ),
        "quoteBatch": _message(
            "quoteBatch",
            "Quote batch",
            "With batch=1: the quotes of one write (with seq and epoch when asked).",
            batch_json_schema({"oneOf": [quote, positioned]}),
        ),
    }
    summaries = {
        "subscribed": "The whole filter after subscribe, unsubscribe or set.",
        "pong": "The answer to ping.",
        "error": "A message the server cannot act on; the connection stays open.",
        "recovered": "First frame of a connection opened with since=.",
        "subscribe": "Add tickers.",
        "unsubscribe": "Remove tickers.",
        "set": "Replace the filter.",
        "ping": "Ask for the server's clock.",
    }
    for name, model in {**EVENTS, **ACTIONS}.items():
        title = f"{name} {'event' if name in EVENTS else 'action'}"
        messages[name] = _message(name, title, summaries[name], _schema(model))
    messages["closed"] = _message(
        "closed",
        "closed event (SSE)",
        "The last event (event: error) of a Server-Sent Events stream the server ends.",
        _schema(ClosedEvent),
    )
    return messages


def asyncapi_document(host: str = "127.0.0.1:8000") -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the stream, for a server at ``host``."""
    messages = _messages()
    ref = {name: {"$ref": f"#/components/messages/{name}"} for name in messages}
    sent = ["quote", "quoteWithPosition", "quoteBatch", *EVENTS]
    ws_messages = [*sent, *ACTIONS]
    received = list(ACTIONS)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for path in WS_PATHS:
        cid = _channel_id(path)
        channels[cid] = {
            "address": path,
            "title": f"Quotes at {path}",
            "description": f"The stream (all four endpoints behave alike).\n\n{_HANDSHAKE}"
            f"\n\n{_CLOSES}",
            "messages": {name: ref[name] for name in ws_messages},
            "bindings": {
                "ws": {"method": "GET", "query": _query_schema(), "bindingVersion": "0.1.0"}
            },
        }
        suffix = cid[0].upper() + cid[1:]
        operations[f"send{suffix}"] = {
            "action": "send",
            "title": f"Quotes and control frames on {path}",
            "summary": "What the server sends: quotes (their shape by the query's "
            "options) and control frames.",
            "channel": {"$ref": f"#/channels/{cid}"},
            "messages": [{"$ref": f"#/channels/{cid}/messages/{name}"} for name in sent],
        }
        operations[f"receive{suffix}"] = {
            "action": "receive",
            "title": f"Client actions on {path}",
            "summary": "What a client may send: actions, each answered by a control frame.",
            "channel": {"$ref": f"#/channels/{cid}"},
            "messages": [{"$ref": f"#/channels/{cid}/messages/{name}"} for name in received],
        }
    ws_server = [{"$ref": "#/servers/local"}]
    for channel in channels.values():
        channel["servers"] = ws_server
    sse_sent = ["quoteWithPosition", "quoteBatch", "recovered", "closed"]
    for path in SSE_PATHS:
        cid = _channel_id(path)
        channels[cid] = {
            "address": path,
            "title": f"Quotes over Server-Sent Events at {path}",
            "description": _SSE,
            "servers": [{"$ref": "#/servers/localSse"}],
            "messages": {name: ref[name] for name in sse_sent},
        }
        suffix = cid[0].upper() + cid[1:]
        operations[f"send{suffix}"] = {
            "action": "send",
            "title": f"Events on {path}",
            "summary": "What the server sends, each as one event of text/event-stream.",
            "channel": {"$ref": f"#/channels/{cid}"},
            "messages": [{"$ref": f"#/channels/{cid}/messages/{name}"} for name in sse_sent],
            "bindings": {
                "http": {"method": "GET", "query": _query_schema(), "bindingVersion": "0.3.0"}
            },
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "quotes",
            "version": __version__,
            "description": "Real-time quotes over WebSockets: the contract's stream of one "
            "JSON quote per text frame, filtered by `?tickers=`, and the opt-in stream "
            "protocol (snapshot, positions and resume, per-ticker rate, batches, live "
            "filter changes); the same stream over Server-Sent Events where WebSockets are "
            "blocked.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": host,
                "protocol": "ws",
                "description": "quotes-server as `make run` starts it (wss:// behind TLS).",
            },
            "localSse": {
                "host": host,
                "protocol": "http",
                "description": "The same server's Server-Sent Events endpoints (https:// "
                "behind TLS).",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def asyncapi_markdown(document: dict[str, Any]) -> str:
    """The document as a Markdown page for the docs site (no script, no CDN)."""
    info = document["info"]
    out = [
        "# AsyncAPI document",
        "",
        "<!-- generated by `make asyncapi` from quotes_server.asyncapi: do not edit -->",
        "",
        f"{info['description']}",
        "",
        f"The machine-readable document ([AsyncAPI {document['asyncapi']}]"
        "(https://www.asyncapi.com/docs/reference/specification/v3.0.0)) is "
        "[asyncapi.json](asyncapi.json) here, and every server serves its own at "
        "`GET /asyncapi.json`. Load it into AsyncAPI Studio, a generator or a validator; "
        "CI checks it with the official parser.",
        "",
        "## Channels",
        "",
        "| channel | address |",
        "|---|---|",
    ]
    channels = document["channels"]
    out += [f"| `{cid}` | `{ch['address']}` |" for cid, ch in channels.items()]
    first = next(iter(channels.values()))
    out += ["", first["description"], "", "### Query parameters", "", "| name | schema | |"]
    out.append("|---|---|---|")
    for name, schema in first["bindings"]["ws"]["query"]["properties"].items():
        shown = {k: v for k, v in schema.items() if k != "description"}
        out.append(f"| `{name}` | `{json.dumps(shown)}` | {schema['description']} |")
    for channel in channels.values():
        if "bindings" not in channel:  # the SSE channels: no ws binding, one description
            out += ["", "### Server-Sent Events", "", channel["description"]]
            break
    out += ["", "## Operations", "", "| operation | action | channel | messages |"]
    out.append("|---|---|---|---|")
    for oid, op in document["operations"].items():
        names = ", ".join(f"`{m['$ref'].rsplit('/', 1)[1]}`" for m in op["messages"])
        channel = op["channel"]["$ref"].rsplit("/", 1)[1]
        out.append(f"| `{oid}` | {op['action']} | `{channel}` | {names} |")
    out += ["", "## Messages", ""]
    for name, message in document["components"]["messages"].items():
        out += [f"### `{name}`", "", f"{message['title']}: {message['summary']}", ""]
        out += ["```json", json.dumps(message["payload"], indent=2), "```", ""]
    return "\n".join(out)


def main() -> None:
    """
    Write the document: ``python -m quotes_server.asyncapi`` prints it;
    ``--docs DIR`` writes ``DIR/asyncapi.json`` and ``DIR/asyncapi.md`` (``make asyncapi``).
    """
    document = asyncapi_document()
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if len(sys.argv) == 3 and sys.argv[1] == "--docs":
        docs = Path(sys.argv[2])
        (docs / "asyncapi.json").write_text(text)
        (docs / "asyncapi.md").write_text(asyncapi_markdown(document))
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
