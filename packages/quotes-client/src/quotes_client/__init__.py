"""
quotes-client: a reconnecting Python client for the quote stream.

```python
async with QuotesClient("ws://127.0.0.1:8000/v1/ws/quotes", tickers=["AAPL"]) as client:
    async for quote in client:
        print(quote.ticker, quote.close)
```

The client (:mod:`quotes_client.client`) reconnects with backoff on retryable
failures and raises typed errors (:mod:`quotes_client.errors`) on fatal ones,
following the table in :mod:`quotes_client.policy`. A bounded buffer
(:mod:`quotes_client.buffer`) sits between the socket and the consumer;
:mod:`quotes_client.events` and :mod:`quotes_client.stats` say what happens;
:mod:`quotes_client.sync` wraps it all for programs without an event loop.
The opt-in stream protocol (snapshot, ``max_hz``, batches, live filter changes,
resume) is decoded in :mod:`quotes_client.protocol`, tracked in
:mod:`quotes_client.resume` and :mod:`quotes_client.filters`.
"""

import logging

from quotes_client._version import __version__
from quotes_client.buffer import DEFAULT_BUFFER_SIZE, BoundedBuffer, Overflow
from quotes_client.client import (
    DEFAULT_ACTION_TIMEOUT,
    DEFAULT_HEALTHY_AFTER,
    DEFAULT_OPEN_TIMEOUT,
    RETRY_AFTER_CAP,
    QuotesClient,
)
from quotes_client.errors import (
    ActionRejected,
    FatalClose,
    FatalError,
    HandshakeFailed,
    HandshakeRejected,
    RetriesExhausted,
    StreamError,
)
from quotes_client.events import (
    BackingOff,
    Closed,
    Connected,
    ConnectFailed,
    Connecting,
    ConnectionEvent,
    Disconnected,
    EventStream,
    Failed,
    FilterChanged,
    Gap,
    ProtocolEvent,
    Recovered,
    ServerError,
)
from quotes_client.loop import TokenProvider
from quotes_client.policy import FATAL_CLOSE_CODES, Outcome, classify_close, classify_connect_error
from quotes_client.protocol import MAX_HZ_RANGE
from quotes_client.stats import ClientState, ClientStats, Latency, LatencyStats
from quotes_client.sync import SyncQuotesClient
from quotes_client.urls import stream_url
from quotes_core import Backoff, Quote

# a library never configures logging; applications (and the CLI) do
logging.getLogger("quotes_client").addHandler(logging.NullHandler())

__all__ = [
    "DEFAULT_ACTION_TIMEOUT",
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_HEALTHY_AFTER",
    "DEFAULT_OPEN_TIMEOUT",
    "FATAL_CLOSE_CODES",
    "MAX_HZ_RANGE",
    "RETRY_AFTER_CAP",
    "ActionRejected",
    "BackingOff",
    "Backoff",
    "BoundedBuffer",
    "ClientState",
    "ClientStats",
    "Closed",
    "ConnectFailed",
    "Connected",
    "Connecting",
    "ConnectionEvent",
    "Disconnected",
    "EventStream",
    "Failed",
    "FatalClose",
    "FatalError",
    "FilterChanged",
    "Gap",
    "HandshakeFailed",
    "HandshakeRejected",
    "Latency",
    "LatencyStats",
    "Outcome",
    "Overflow",
    "ProtocolEvent",
    "Quote",
    "QuotesClient",
    "Recovered",
    "RetriesExhausted",
    "ServerError",
    "StreamError",
    "SyncQuotesClient",
    "TokenProvider",
    "__version__",
    "classify_close",
    "classify_connect_error",
    "stream_url",
]
