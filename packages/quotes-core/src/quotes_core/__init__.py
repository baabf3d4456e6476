"""
quotes-core: the pure heart of the quote stream.

Schema and canonical encoding (:mod:`quotes_core.schema`), ticker filters
(:mod:`quotes_core.tickers`), the sans-I/O fan-out hub (:mod:`quotes_core.hub`),
the handshake's query parameters (:mod:`quotes_core.query`), the stream protocol's
state (history window :mod:`quotes_core.history`, snapshot map
:mod:`quotes_core.snapshot`, per-ticker rate :mod:`quotes_core.throttle`, client
actions and control frames :mod:`quotes_core.actions`), the stream engine that
every transport drives (:mod:`quotes_core.engine`), the wire's constants
(:mod:`quotes_core.wire`), the sharded
upstream's ticker-to-channel mapping (:mod:`quotes_core.sharding`), reconnect backoff
(:mod:`quotes_core.backoff`), write-round pacing (:mod:`quotes_core.pacing`) and typed errors
(:mod:`quotes_core.errors`). Standard library and pydantic only: no network, no
event loop.
"""

from quotes_core._version import __version__
from quotes_core.actions import (
    MAX_PING_ID_BYTES,
    TICKERS_PER_TOKEN,
    Action,
    ActionKind,
    Reply,
    answer,
    apply_action,
    error_event,
    parse_action,
    pong_event,
    recovered_event,
    subscribed_event,
    with_position,
)
from quotes_core.backoff import Backoff, backoff
from quotes_core.bucket import TokenBucket
from quotes_core.engine import CHUNK_BYTES, Stream, Subscriber
from quotes_core.errors import (
    ActionError,
    ActionErrorCode,
    ClientError,
    InvalidQuote,
    InvalidQuoteReason,
    InvalidTickers,
    QuotesError,
    UpstreamError,
)
from quotes_core.history import (
    DEFAULT_HISTORY_AGE,
    DEFAULT_HISTORY_SIZE,
    History,
    HistoryBackend,
    StreamItem,
)
from quotes_core.hub import DEFAULT_BOUND, Hub, Mode, Subscription
from quotes_core.opening import DEFAULT_QUEUE_BYTES, DEFAULT_REPLAY_LIMIT, Opening, opening
from quotes_core.pacing import DEFAULT_FLUSH_BUDGET, DEFAULT_FLUSH_WINDOW, FlushPacer
from quotes_core.query import (
    Position,
    StreamOptions,
    parse_mode_param,
    parse_stream_options,
    parse_tickers_param,
)
from quotes_core.rendering import TEXT_CODEC, Codec, Control, Element, render
from quotes_core.schema import (
    MAX_QUOTE_BYTES,
    ParsedQuote,
    Quote,
    encode_quote,
    format_timestamp,
    parse_quote,
    validate_quote,
    wire_json_schema,
)
from quotes_core.sharding import (
    CLUSTER_SLOTS,
    DEFAULT_SHARDS,
    MAX_SHARDS,
    ShardMap,
    key_slot,
    shard_channel,
    shard_of,
)
from quotes_core.snapshot import Snapshot
from quotes_core.throttle import MAX_HZ_RANGE, Throttle
from quotes_core.tickers import (
    MAX_FILTER_TICKERS,
    MAX_TICKER_LENGTH,
    TickerFilter,
    is_valid_ticker,
    normalize_ticker,
)
from quotes_core.wire import (
    DEFAULT_MAX_CLIENT_FRAME,
    DEFAULT_MAX_URL_LENGTH,
    INBOUND_RATE_REASON,
    INTERNAL_ERROR_REASON,
    QUEUE_FULL_REASON,
    SHUTDOWN_REASON,
    SLOW_CONSUMER_REASON,
    TOKEN_EXPIRED_REASON,
    WS_PATHS,
    CloseCode,
    checked_epoch,
    new_epoch,
    origin_allowed,
)

__all__ = [
    "CHUNK_BYTES",
    "CLUSTER_SLOTS",
    "DEFAULT_BOUND",
    "DEFAULT_FLUSH_BUDGET",
    "DEFAULT_FLUSH_WINDOW",
    "DEFAULT_HISTORY_AGE",
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_MAX_CLIENT_FRAME",
    "DEFAULT_MAX_URL_LENGTH",
    "DEFAULT_QUEUE_BYTES",
    "DEFAULT_REPLAY_LIMIT",
    "DEFAULT_SHARDS",
    "INBOUND_RATE_REASON",
    "INTERNAL_ERROR_REASON",
    "MAX_FILTER_TICKERS",
    "MAX_HZ_RANGE",
    "MAX_PING_ID_BYTES",
    "MAX_QUOTE_BYTES",
    "MAX_SHARDS",
    "MAX_TICKER_LENGTH",
    "QUEUE_FULL_REASON",
    "SHUTDOWN_REASON",
    "SLOW_CONSUMER_REASON",
    "TEXT_CODEC",
    "TICKERS_PER_TOKEN",
    "TOKEN_EXPIRED_REASON",
    "WS_PATHS",
    "Action",
    "ActionError",
    "ActionErrorCode",
    "ActionKind",
    "Backoff",
    "ClientError",
    "CloseCode",
    "Codec",
    "Control",
    "Element",
    "FlushPacer",
    "History",
    "HistoryBackend",
    "Hub",
    "InvalidQuote",
    "InvalidQuoteReason",
    "InvalidTickers",
    "Mode",
    "Opening",
    "ParsedQuote",
    "Position",
    "Quote",
    "QuotesError",
    "Reply",
    "ShardMap",
    "Snapshot",
    "Stream",
    "StreamItem",
    "StreamOptions",
    "Subscriber",
    "Subscription",
    "Throttle",
    "TickerFilter",
    "TokenBucket",
    "UpstreamError",
    "__version__",
    "answer",
    "apply_action",
    "backoff",
    "checked_epoch",
    "encode_quote",
    "error_event",
    "format_timestamp",
    "is_valid_ticker",
    "key_slot",
    "new_epoch",
    "normalize_ticker",
    "opening",
    "origin_allowed",
    "parse_action",
    "parse_mode_param",
    "parse_quote",
    "parse_stream_options",
    "parse_tickers_param",
    "pong_event",
    "recovered_event",
    "render",
    "shard_channel",
    "shard_of",
    "subscribed_event",
    "validate_quote",
    "wire_json_schema",
    "with_position",
]
