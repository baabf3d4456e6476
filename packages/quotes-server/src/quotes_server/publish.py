"""
``quotes-publish``: publish quotes into Redis, standing in for the upstream streamer.

Two modes:

- synthetic (default): the demo feed's random walk at ``--rate`` quotes/s over
  ``--tickers`` symbols, for ``--duration`` seconds or ``--count`` messages
  (forever when neither is given);
- ``--stdin``: every non-empty line of standard input is published verbatim (for
  replaying captured data, and for publishing deliberately malformed messages).

``--upstream sharded`` publishes each quote with ``SPUBLISH`` on its ticker's shard
channel ``<channel>.{n}`` (:class:`quotes_core.ShardMap`, ``--shards`` of them), on a
single Redis 7 or, cluster-aware, on a Redis Cluster; a ``--stdin`` line without a
readable ``ticker`` goes to shard 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence

from redis import Redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisError

from quotes_core import DEFAULT_SHARDS, MAX_SHARDS, ShardMap
from quotes_server.sources.demo import DemoFeed
from quotes_server.sources.redis_url import RedisUrlError, parse_redis_url

__all__ = [
    "build_parser",
    "connect",
    "main",
    "publish_lines",
    "publish_synthetic",
    "ticker_of",
]

Client = Redis | RedisCluster
"""A plain Redis client, or a cluster-aware one (sharded mode on a cluster)."""


def connect(url: str, *, sharded: bool = False, timeout: float = 5.0) -> Client:
    """
    A client for ``url``: plain, unless ``sharded`` and the server is a cluster node.

    The URL is checked as the server checks it (a ``rediss://`` URL's TLS options
    honoured, anything else refused by name), then handed to redis-py, which applies
    the same options.

    Raises:
        RedisUrlError: the URL asks for something the server would refuse too.
    """
    parse_redis_url(url).ssl_context()
    plain = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    if not sharded:
        return plain
    try:
        cluster = bool(plain.info("cluster").get("cluster_enabled"))
    finally:
        plain.close()
    if not cluster:
        return Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    return RedisCluster.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)


def ticker_of(message: bytes) -> str:
    """The ``ticker`` of a raw quote message, or ``""`` when it has none readable."""
    try:
        ticker = json.loads(message).get("ticker")
    except (ValueError, AttributeError):
        return ""
    return ticker if isinstance(ticker, str) else ""


def publish_lines(
    client: Client, channel: str, lines: Iterable[bytes], shards: ShardMap | None = None
) -> int:
    """
    Publish each non-empty line verbatim (without its line ending); return the count.

    With ``shards``, each line is SPUBLISHed on its ticker's shard channel instead.
    """
    count = 0
    for line in lines:
        data = line.rstrip(b"\r\n")
        if data.strip():
            if shards is None:
                client.publish(channel, data)
            else:
                client.spublish(shards.channel(ticker_of(data)), data)
            count += 1
    return count


def publish_synthetic(
    client: Client,
    channel: str,
    *,
    rate: float,
    tickers: int,
    duration: float | None,
    count: int | None,
    seed: int | None = None,
    shards: ShardMap | None = None,
) -> int:
    """
    Publish the demo feed at ``rate`` per second, in pipelined batches; return the count.

    With ``shards``, each quote is SPUBLISHed on its ticker's shard channel.
    """
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
                message = feed.next_message()
                if shards is None:
                    pipe.publish(channel, message)
                else:
                    pipe.spublish(shards.channel(ticker_of(message)), message)
            pipe.execute()
            sent = due
        if count is not None and sent >= count:
            break
        time.sleep(tick)
    return sent


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default, except where there is none (the help says why)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """``quotes-publish``'s command line."""
    parser = argparse.ArgumentParser(
        prog="quotes-publish",
        description="Publish synthetic quotes (or stdin lines) to a Redis Pub/Sub channel. "
        "--redis-url and --channel default to the server's QUOTES_REDIS_URL and "
        "QUOTES_CHANNEL when they are set.",
        formatter_class=_DefaultsShown,
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("QUOTES_REDIS_URL") or "redis://127.0.0.1:6379/0",
        help="Redis URL [QUOTES_REDIS_URL]",
    )
    parser.add_argument(
        "--channel",
        default=os.environ.get("QUOTES_CHANNEL") or "quotes.realtime",
        help="Pub/Sub channel (the shard channels' prefix with --upstream sharded) "
        "[QUOTES_CHANNEL]",
    )
    parser.add_argument(
        "--upstream",
        choices=["single", "sharded"],
        default="single",
        help="single: PUBLISH on the channel; sharded: SPUBLISH on <channel>.{n}, the shard "
        "of each ticker (cluster-aware on a Redis Cluster)",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=DEFAULT_SHARDS,
        help="shard channels with --upstream sharded",
    )
    parser.add_argument("--rate", type=float, default=200.0, help="quotes per second")
    parser.add_argument("--tickers", type=int, default=300, help="how many symbols")
    parser.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: never)"
    )
    parser.add_argument("--count", type=int, help="stop after this many quotes (default: never)")
    parser.add_argument("--seed", type=int, help="seed of the random walk (default: random)")
    parser.add_argument(
        "--stdin", action="store_true", help="publish each line of stdin verbatim instead"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.tickers < 1:
        parser.error("--rate must be positive and --tickers at least 1")
    if not 1 <= args.shards <= MAX_SHARDS:
        parser.error(f"--shards must be between 1 and {MAX_SHARDS}")
    sharded = args.upstream == "sharded"
    shards = ShardMap(args.channel, args.shards) if sharded else None
    try:
        client = connect(args.redis_url, sharded=sharded)
    except RedisUrlError as exc:
        sys.exit(f"quotes-publish: invalid --redis-url: {exc}")
    except RedisError as exc:
        sys.exit(f"quotes-publish: Redis error: {exc}")
    try:
        if args.stdin:
            n = publish_lines(client, args.channel, sys.stdin.buffer, shards)
        else:
            n = publish_synthetic(
                client,
                args.channel,
                rate=args.rate,
                tickers=args.tickers,
                duration=args.duration,
                count=args.count,
                seed=args.seed,
                shards=shards,
            )
    except RedisError as exc:
        sys.exit(f"quotes-publish: Redis error: {exc}")
    except KeyboardInterrupt:
        return
    finally:
        client.close()
    where = (
        f"{args.shards} shard channel(s) {args.channel}.{{n}}" if sharded else repr(args.channel)
    )
    print(f"quotes-publish: published {n} message(s) to {where}", file=sys.stderr)


if __name__ == "__main__":
    main()
