"""
Which shard channel carries a ticker, and which Redis Cluster slot holds that channel.

In the sharded upstream mode the feed publishes each quote with ``SPUBLISH`` on one
of ``N`` shard channels instead of the contract's single ``quotes.realtime``. The
mapping is a pure function every feed can implement in a few lines:

- **shard**: ``CRC-32(upper-case ticker, UTF-8) mod N``. CRC-32 is the IEEE 802.3
  checksum of zlib, PNG and gzip (Python ``zlib.crc32``, Go ``crc32.ChecksumIEEE``,
  Java ``java.util.zip.CRC32``, Node ``zlib.crc32``), taken as an unsigned 32-bit
  integer. ``crc32("AAPL") = 0xB665575C`` (3060095836), so with 16 shards ``AAPL`` is
  shard 12.
- **channel**: ``<prefix>.{<shard>}`` with the shard in decimal, e.g.
  ``quotes.realtime.{12}``. The braces are a Redis Cluster *hash tag*: the slot of
  a channel is ``CRC16(str(shard)) mod 16384`` whatever the prefix, so each shard has
  its own fixed slot (distinct for any ``N`` up to 2,500) and the channels of one
  deployment spread over the cluster's masters like any other keys. There is no
  hash tag shared by all channels, which would put every shard on one master.

:func:`key_slot` computes Redis Cluster's slot (CRC16-XMODEM of the key, or of its
hash tag) in pure Python, so the spread can be checked without a cluster.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

__all__ = [
    "CLUSTER_SLOTS",
    "DEFAULT_SHARDS",
    "MAX_SHARDS",
    "ShardMap",
    "crc16",
    "key_slot",
    "shard_channel",
    "shard_of",
]

CLUSTER_SLOTS = 16384
"""Hash slots of a Redis Cluster."""

DEFAULT_SHARDS = 16
"""Shard channels of the sharded upstream mode unless configured otherwise."""

MAX_SHARDS = 1024
"""Most shard channels (their slots stay distinct well past this)."""


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC16 = _crc16_table()


def crc16(data: bytes) -> int:
    """
    CRC16-XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster uses it.
    """
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[((crc >> 8) ^ byte) & 0xFF]
    return crc


def key_slot(key: str | bytes) -> int:
    """
    The Redis Cluster hash slot of a key or channel name.

    If the key contains ``{...}`` with at least one character between the first
    ``{`` and the next ``}``, only that hash tag is hashed (Redis's rule).
    """
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return crc16(data) % CLUSTER_SLOTS


def _check_shards(shards: int) -> None:
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"shards must be between 1 and {MAX_SHARDS}, not {shards}")


def shard_of(ticker: str, shards: int) -> int:
    """
    The shard (``0 .. shards-1``) of a ticker: CRC-32 of its upper-case UTF-8 bytes mod N.
    """
    _check_shards(shards)
    return zlib.crc32(ticker.upper().encode()) % shards


def shard_channel(prefix: str, shard: int) -> str:
    """
    The channel name of one shard: ``<prefix>.{<shard>}`` (``quotes.realtime.{12}``).
    """
    if shard < 0:
        raise ValueError(f"shard must be non-negative, not {shard}")
    return f"{prefix}.{{{shard}}}"


class ShardMap:
    """
    The shard layout of one deployment: ``shards`` channels named after ``prefix``.

    Args:
        prefix: the channel prefix (the contract's ``quotes.realtime`` by default).
        shards: how many shard channels.
    """

    __slots__ = ("channels", "prefix", "shards", "slots")

    def __init__(self, prefix: str = "quotes.realtime", shards: int = DEFAULT_SHARDS) -> None:
        _check_shards(shards)
        if not prefix:
            raise ValueError("the channel prefix must not be empty")
        self.prefix = prefix
        self.shards = shards
        self.channels: tuple[str, ...] = tuple(shard_channel(prefix, s) for s in range(shards))
        """Channel name of each shard, by shard number."""
        self.slots: tuple[int, ...] = tuple(key_slot(c) for c in self.channels)
        """Cluster hash slot of each shard's channel, by shard number."""

    def shard(self, ticker: str) -> int:
        """The shard of ``ticker``."""
        return zlib.crc32(ticker.upper().encode()) % self.shards

    def channel(self, ticker: str) -> str:
        """The channel ``ticker``'s quotes are published on."""
        return self.channels[self.shard(ticker)]

    def shards_of(self, tickers: Iterable[str] | None) -> frozenset[int]:
        """The shards holding ``tickers``; ``None`` (every ticker) means every shard."""
        if tickers is None:
            return frozenset(range(self.shards))
        return frozenset(self.shard(t) for t in tickers)

    def spread(self, ranges: Sequence[tuple[int, int]]) -> list[int]:
        """
        How many shard channels fall into each slot range (``(first, last)``, inclusive).

        With the ranges each master serves, this says how evenly the shards spread.
        """
        return [sum(1 for s in self.slots if first <= s <= last) for first, last in ranges]

    def __repr__(self) -> str:
        return f"ShardMap(prefix={self.prefix!r}, shards={self.shards})"
