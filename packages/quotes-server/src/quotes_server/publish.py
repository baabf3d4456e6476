"""
``quotes-publish``: publish quotes into Redis, standing in for the upstream streamer.

Two modes:

- synthetic (default): the demo feed's random walk at ``--rate`` quotes/s over
  ``--tickers`` symbols, for ``--duration`` seconds or ``--count`` messages
  (forever when neither is given);
- ``--stdin``: every non-empty line of standard input is published verbatim (for
  replaying captured data, and for publishing deliberately malformed messages).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Sequence

from redis import Redis
from redis.exceptions import RedisError

from quotes_server.sources.demo import DemoFeed

__all__ = ["main", "publish_lines", "publish_synthetic"]


def publish_lines(client: Redis, channel: str, lines: Iterable[bytes]) -> int:
    """Publish each non-empty line verbatim (without its line ending); return the count."""
    count = 0
    for line in lines:
        data = line.rstrip(b"\r\n")
        if data.strip():
            client.publish(channel, data)
            count += 1
    return count


def publish_synthetic(
    client: Redis,
    channel: str,
    *,
    rate: float,
    tickers: int,
    duration: float | None,
    count: int | None,
    seed: int | None = None,
) -> int:
    """Publish the demo feed at ``rate`` per second, in pipelined batches; return the count."""
    feed = DemoFeed(tickers, seed)
    start = time.monotonic()
    sent = 0
    tick = max(0.005, min(0.1, 1.0 / rate))
    while True:
        elapsed = time.monotonic() - start
        if duration is not None and elapsed >= duration:
            break
        due = int(elapsed * rate) + 1
        if count is not None:
            due = min(due, count)
        if due > sent:
            pipe = client.pipeline(transaction=False)
            for _ in range(due - sent):
                pipe.publish(channel, feed.next_message())
            pipe.execute()
            sent = due
        if count is not None and sent >= count:
            break
        time.sleep(tick)
    return sent


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="quotes-publish",
        description="Publish synthetic quotes (or stdin lines) to a Redis Pub/Sub channel.",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--channel", default="quotes.realtime", help="Pub/Sub channel")
    parser.add_argument("--rate", type=float, default=200.0, help="quotes per second")
    parser.add_argument("--tickers", type=int, default=300, help="how many symbols")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--count", type=int, help="stop after this many quotes")
    parser.add_argument("--seed", type=int, help="seed of the random walk")
    parser.add_argument(
        "--stdin", action="store_true", help="publish each line of stdin verbatim instead"
    )
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.tickers < 1:
        parser.error("--rate must be positive and --tickers at least 1")
    client = Redis.from_url(args.redis_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        if args.stdin:
            n = publish_lines(client, args.channel, sys.stdin.buffer)
        else:
            n = publish_synthetic(
                client,
                args.channel,
                rate=args.rate,
                tickers=args.tickers,
                duration=args.duration,
                count=args.count,
                seed=args.seed,
            )
    except RedisError as exc:
        sys.exit(f"quotes-publish: Redis error: {exc}")
    except KeyboardInterrupt:
        return
    finally:
        client.close()
    print(f"quotes-publish: published {n} message(s) to {args.channel!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
