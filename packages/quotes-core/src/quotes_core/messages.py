"""
The stream's messages as pydantic models: what a client sends and what a server
answers, for documents and validators (the AsyncAPI document is built from them).

The server does not build its frames through these models (the ``*_event``
functions of :mod:`quotes_core.actions` write them directly, once per message);
the tests check that every frame those functions write validates here, so the two
cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from quotes_core.errors import ActionErrorCode
from quotes_core.query import EPOCH_PATTERN
from quotes_core.schema import wire_json_schema
from quotes_core.tickers import MAX_FILTER_TICKERS

__all__ = [
    "ACTIONS",
    "EVENTS",
    "ClosedEvent",
    "ErrorEvent",
    "PingAction",
    "PongEvent",
    "RecoveredEvent",
    "SetAction",
    "SubscribeAction",
    "SubscribedEvent",
    "UnsubscribeAction",
    "batch_json_schema",
    "positioned_quote_json_schema",
]

_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SubscribedEvent(_Message):
    """The answer to ``subscribe``, ``unsubscribe`` and ``set``: the whole filter now."""

    event: Literal["subscribed"]
    tickers: list[str] | Literal["*"] = Field(
        description="The filter's tickers, upper case and sorted, or ``*`` for every ticker."
    )


class PongEvent(_Message):
    """The answer to ``ping``: its ``id`` as sent, and the server's clock."""

    event: Literal["pong"]
    id: Any = Field(description="The ping's ``id``, as sent (any JSON value).")
    server_time: str = Field(
        pattern=_TIMESTAMP, description="The server's clock, UTC, microseconds."
    )


class ErrorEvent(_Message):
    """A client message the server cannot act on; the connection stays open."""

    event: Literal["error"]
    code: ActionErrorCode = Field(description="Machine-readable: why the message was refused.")
    message: str = Field(max_length=200, description="For humans.")


class RecoveredEvent(_Message):
    """The first frame of a connection opened with ``since=``."""

    event: Literal["recovered"]
    recovered: bool = Field(
        description="True: exactly the missed quotes follow. False: they cannot be "
        "replayed (the snapshot follows when asked for)."
    )
    epoch: str = Field(pattern=f"^{EPOCH_PATTERN}$", description="The stream's epoch now.")
    seq: int = Field(ge=0, description="The stream's position now: every later quote is live.")


class _TickersAction(_Message):
    tickers: list[str] = Field(
        max_length=MAX_FILTER_TICKERS,
        description="Symbols in any case (``*``: every ticker).",
    )


class SubscribeAction(_TickersAction):
    """Add tickers to the filter."""

    action: Literal["subscribe"]


class UnsubscribeAction(_TickersAction):
    """Remove tickers from the filter."""

    action: Literal["unsubscribe"]


class SetAction(_TickersAction):
    """Replace the filter."""

    action: Literal["set"]


class PingAction(_Message):
    """Ask for the server's clock."""

    action: Literal["ping"]
    id: Any = Field(
        default=None, description="Any JSON value of at most 100 bytes, echoed in the pong."
    )


class ClosedEvent(_Message):
    """
    The last event of a Server-Sent Events stream the server ends (named ``error``):
    the WebSocket close code and reason of the same end.
    """

    event: Literal["error"]
    code: Literal["closed"]
    close_code: int = Field(
        description="1001 shutdown, 1008 token expired, 1011 upstream lost, 1013 slow consumer: "
        "what a WebSocket client would have been closed with (reconnect, or not, alike)."
    )
    message: str = Field(description="The close reason.")


EVENTS: dict[str, type[_Message]] = {
    "subscribed": SubscribedEvent,
    "pong": PongEvent,
    "error": ErrorEvent,
    "recovered": RecoveredEvent,
}
"""The control frames a server sends, by ``event``."""

ACTIONS: dict[str, type[_Message]] = {
    "subscribe": SubscribeAction,
    "unsubscribe": UnsubscribeAction,
    "set": SetAction,
    "ping": PingAction,
}
"""The actions a client may send, by ``action``."""


def positioned_quote_json_schema() -> dict[str, Any]:
    """JSON Schema of a quote frame with ``seq=1``: the quote, then ``seq`` and ``epoch``."""
    schema = wire_json_schema()
    schema.pop("$schema", None)
    schema["properties"] = {
        **schema["properties"],
        "seq": {
            "type": "integer",
            "minimum": 1,
            "description": "The quote's position in the stream (all tickers, publication order).",
        },
        "epoch": {
            "type": "string",
            "pattern": f"^{EPOCH_PATTERN}$",
            "description": "The stream epoch the position belongs to.",
        },
    }
    schema["required"] = [*schema.get("required", []), "seq", "epoch"]
    schema["title"] = "QuoteWithPosition"
    schema["description"] = "A quote frame with seq=1 (or since=): the contract's fields first."
    return schema


def batch_json_schema(item: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema of a ``batch=1`` frame: a non-empty JSON array of ``item``."""
    return {
        "type": "array",
        "minItems": 1,
        "items": item,
        "title": "QuoteBatch",
        "description": "With batch=1: the quotes of one write as one JSON array, never empty.",
    }
