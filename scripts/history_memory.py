"""
Memory of the server's history window (the resume buffer), per 100,000 quotes.

Fills a :class:`quotes_core.History` exactly the way the server does (every demo
feed quote parsed and encoded by quotes-core, its pre-built frame and ticker kept in
a :class:`quotes_core.StreamItem`) and reports the traced allocation growth::

    uv run python scripts/history_memory.py --quotes 100000
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

from quotes_core import History, StreamItem, parse_quote
from quotes_server.frames import text_frame
from quotes_server.sources.demo import DemoFeed


def measure(quotes: int, tickers: int) -> int:
    """Bytes the window holds once it contains ``quotes`` quotes (traced allocations)."""
    feed = DemoFeed(tickers, seed=1)
    raw = [feed.next_message() for _ in range(quotes)]
    history: History[bytes] = History(size=quotes, max_age=1e9)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for seq, message in enumerate(raw, start=1):
        quote, payload = parse_quote(message)
        history.append(
            StreamItem(seq, "epoch", quote.ticker, text_frame(payload), time.monotonic())
        )
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(history) == quotes
    return after - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quotes", type=int, default=100_000, help="quotes in the window")
    parser.add_argument("--tickers", type=int, default=300, help="symbols of the demo feed")
    args = parser.parse_args()
    used = measure(args.quotes, args.tickers)
    per_100k = used * 100_000 / args.quotes
    print(
        f"history window: {used / 2**20:.1f} MiB for {args.quotes:,} quotes "
        f"({used / args.quotes:.0f} bytes per quote, {per_100k / 2**20:.1f} MiB per 100k)"
    )


if __name__ == "__main__":
    main()
