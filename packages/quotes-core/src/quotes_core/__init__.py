"""
quotes-core: the pure heart of the quote stream.

Schema and canonical encoding (:mod:`quotes_core.schema`), ticker filters
(:mod:`quotes_core.tickers`), the sans-I/O fan-out hub (:mod:`quotes_core.hub`),
the handshake's query parameters (:mod:`quotes_core.query`), the sharded
upstream's ticker-to-channel mapping (:mod:`quotes_core.sharding`), reconnect
backoff (:mod:`quotes_core.backoff`) and typed errors
(:mod:`quotes_core.errors`). Standard library and pydantic only: no network, no
event loop.
"""

from quotes_core.backoff import Backoff, backoff
from quotes_core.bucket import TokenBucket
from quotes_core.errors import (
    ClientError,
    InvalidQuote,
    InvalidQuoteReason,
    InvalidTickers,
    QuotesError,
    UpstreamError,
)
from quotes_core.hub import DEFAULT_BOUND, Hub, Mode, Subscription
from quotes_core.query import parse_mode_param, parse_tickers_param
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
from quotes_core.tickers import (
    MAX_FILTER_TICKERS,
    MAX_TICKER_LENGTH,
    TickerFilter,
    is_valid_ticker,
    normalize_ticker,
)

__version__ = "0.1.0"

__all__ = [
    "CLUSTER_SLOTS",
    "DEFAULT_BOUND",
    "DEFAULT_SHARDS",
    "MAX_FILTER_TICKERS",
    "MAX_QUOTE_BYTES",
    "MAX_SHARDS",
    "MAX_TICKER_LENGTH",
    "Backoff",
    "ClientError",
    "Hub",
    "InvalidQuote",
    "InvalidQuoteReason",
    "InvalidTickers",
    "Mode",
    "ParsedQuote",
    "Quote",
    "QuotesError",
    "ShardMap",
    "Subscription",
    "TickerFilter",
    "TokenBucket",
    "UpstreamError",
    "__version__",
    "backoff",
    "encode_quote",
    "format_timestamp",
    "is_valid_ticker",
    "key_slot",
    "normalize_ticker",
    "parse_mode_param",
    "parse_quote",
    "parse_tickers_param",
    "shard_channel",
    "shard_of",
    "validate_quote",
    "wire_json_schema",
]
